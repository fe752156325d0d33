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
# field: (its on_delete, its related_name, the full index Django gave it in 0001)
FIELDS = {
    "challenged": (
        models.deletion.PROTECT,
        "challenges_received",
        "challenges_challenge_challenged_id_e703367b",
    ),
    "resolved_by": (models.deletion.SET_NULL, "+", "challenges_challenge_resolved_by_id_1f801e3e"),
}


def _add_partial_index(field: str) -> AddIndexConcurrently:
    return AddIndexConcurrently(
        model_name="challenge",
        index=models.Index(
            condition=models.Q((f"{field}__isnull", False)),
            fields=[field],
            name=f"challenge_{field}_idx",
        ),
    )


def _drop_full_index(field: str) -> migrations.SeparateDatabaseAndState:
    on_delete, related_name, name = FIELDS[field]
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
        *(_add_partial_index(field) for field in FIELDS),
        *(_drop_full_index(field) for field in FIELDS),
    ]
