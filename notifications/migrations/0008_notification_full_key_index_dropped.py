# The old unique constraint on every row's key: with 0007's index keeping the keyed rows unique,
# it only cost each keyless row an entry. Processes of a release before 0007 name it in their
# ``ON CONFLICT`` and fail their notification inserts once it is gone: on a rolling upgrade,
# ``migrate notifications 0007`` first, replace the processes, then ``migrate``.
#
# Going back builds it again CONCURRENTLY and attaches it, as 0006 did.

from django.db import migrations

TABLE = "notifications_notification"
CONSTRAINT = "notification_dedup_key_unique"


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("notifications", "0007_notification_keyless_rows"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(model_name="notification", name=CONSTRAINT),
            ],
            database_operations=[
                migrations.RunSQL(
                    sql=f'ALTER TABLE "{TABLE}" DROP CONSTRAINT IF EXISTS "{CONSTRAINT}"',
                    reverse_sql=[
                        f'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "{CONSTRAINT}" '
                        f'ON "{TABLE}" ("dedup_key")',
                        f'ALTER TABLE "{TABLE}" ADD CONSTRAINT "{CONSTRAINT}" '
                        f'UNIQUE USING INDEX "{CONSTRAINT}"',
                    ],
                ),
            ],
        ),
    ]
