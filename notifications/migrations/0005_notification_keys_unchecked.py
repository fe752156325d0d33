# A fan-out row no longer pays for two deferred foreign-key checks at commit and an index that
# nothing reads (see the comments on ``Notification.user`` and ``Notification.challenge``).
#
# Not atomic, so that the index goes with DROP INDEX CONCURRENTLY: inserts keep running while
# it is dropped, however big the table. Each DROP CONSTRAINT holds its brief lock alone, as it
# is only a catalogue change. The constraint and index names are the ones Django gave them
# in 0001; IF EXISTS makes a repeat harmless. Going back re-adds the constraints NOT VALID
# (no scan under lock) and validates them afterwards, which locks nobody out.

from django.conf import settings
from django.db import migrations, models

TABLE = "notifications_notification"
USER_FK = "notifications_notification_user_id_b5e8c0ff_fk_auth_user_id"
CHALLENGE_FK = "notifications_notifi_challenge_id_d707ba4d_fk_challenge"
CHALLENGE_INDEX = "notifications_notification_challenge_id_d707ba4d"


def _fk(name: str, column: str, target: str) -> list[str]:
    return [
        f'ALTER TABLE "{TABLE}" ADD CONSTRAINT "{name}" FOREIGN KEY ("{column}") '
        f'REFERENCES "{target}" ("id") DEFERRABLE INITIALLY DEFERRED NOT VALID',
        f'ALTER TABLE "{TABLE}" VALIDATE CONSTRAINT "{name}"',
    ]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("challenges", "0005_staff_permissions"),
        ("notifications", "0004_fewer_notification_indexes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="notification",
                    name="challenge",
                    field=models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        null=True,
                        on_delete=models.deletion.CASCADE,
                        related_name="notifications",
                        to="challenges.challenge",
                    ),
                ),
                migrations.AlterField(
                    model_name="notification",
                    name="user",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        related_name="notifications",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    sql=f'ALTER TABLE "{TABLE}" DROP CONSTRAINT IF EXISTS "{USER_FK}"',
                    reverse_sql=_fk(USER_FK, "user_id", "auth_user"),
                ),
                migrations.RunSQL(
                    sql=f'ALTER TABLE "{TABLE}" DROP CONSTRAINT IF EXISTS "{CHALLENGE_FK}"',
                    reverse_sql=_fk(CHALLENGE_FK, "challenge_id", "challenges_challenge"),
                ),
                migrations.RunSQL(
                    sql=f'DROP INDEX CONCURRENTLY IF EXISTS "{CHALLENGE_INDEX}"',
                    reverse_sql=(
                        f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{CHALLENGE_INDEX}" '
                        f'ON "{TABLE}" ("challenge_id")'
                    ),
                ),
            ],
        ),
    ]
