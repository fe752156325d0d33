# Two indexes that no query reads go (see the comment on ``Challenge.challenged``): every status
# change, the deadline sweep's first, wrote an entry into each. The foreign-key constraints
# stay as they are: only the state changes for them (Django would drop and re-add them, which
# re-checks every row under lock).
#
# Not atomic, so that each index goes with DROP INDEX CONCURRENTLY: stakes, the sweep and
# resolves keep writing while it is dropped. The names are the ones Django gave them in 0001.

from django.conf import settings
from django.db import migrations, models

TABLE = "challenges_challenge"


def _drop(index: str, column: str) -> migrations.RunSQL:
    return migrations.RunSQL(
        sql=f'DROP INDEX CONCURRENTLY IF EXISTS "{index}"',
        reverse_sql=f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{index}" ON "{TABLE}" ("{column}")',
    )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("challenges", "0005_staff_permissions"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="challenge",
                    name="challenged",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=models.deletion.PROTECT,
                        related_name="challenges_received",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="challenge",
                    name="resolved_by",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            database_operations=[
                _drop("challenges_challenge_challenged_id_e703367b", "challenged_id"),
                _drop("challenges_challenge_resolved_by_id_1f801e3e", "resolved_by_id"),
            ],
        ),
    ]
