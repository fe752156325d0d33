# The challenged user's and the resolver's indexes hold only rows where they are set (see
# ``Challenge.Meta.indexes``): a challenge moved by the sweep without either no longer writes
# an entry into them.
#
# Not atomic, so that both sides go CONCURRENTLY and challenges keep being written while a big
# table is indexed. The partial indexes are built before the full ones are dropped, so a user's
# deletion always has an index to look up. The old names are the ones Django gave the foreign
# keys' indexes in 0001; IF EXISTS makes a repeat harmless.

from django.conf import settings
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

TABLE = "challenges_challenge"
OLD_INDEXES = {
    "challenged": "challenges_challenge_challenged_id_e703367b",
    "resolved_by": "challenges_challenge_resolved_by_id_1f801e3e",
}


def _drop_full_index(field: str, on_delete) -> migrations.SeparateDatabaseAndState:
    name = OLD_INDEXES[field]
    related_name = "challenges_received" if field == "challenged" else "+"
    return migrations.SeparateDatabaseAndState(
        state_operations=[
            migrations.AlterField(
                model_name="challenge",
                name=field,
                field=models.ForeignKey(
                    blank=True,
                    db_index=False,
                    null=True,
                    on_delete=on_delete,
                    related_name=related_name,
                    to=settings.AUTH_USER_MODEL,
                ),
            ),
        ],
        database_operations=[
            migrations.RunSQL(
                sql=f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"',
                reverse_sql=(
                    f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{name}" ON "{TABLE}" ("{field}_id")'
                ),
            ),
        ],
    )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("challenges", "0005_staff_permissions"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="challenge",
            index=models.Index(
                condition=models.Q(("challenged__isnull", False)),
                fields=["challenged"],
                name="challenge_challenged_idx",
            ),
        ),
        AddIndexConcurrently(
            model_name="challenge",
            index=models.Index(
                condition=models.Q(("resolved_by__isnull", False)),
                fields=["resolved_by"],
                name="challenge_resolved_by_idx",
            ),
        ),
        _drop_full_index("challenged", models.deletion.PROTECT),
        _drop_full_index("resolved_by", models.deletion.SET_NULL),
    ]
