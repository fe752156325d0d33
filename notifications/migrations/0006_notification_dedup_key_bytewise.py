# The dedup key's unique index compares bytes ("C" collation) instead of calling strcoll (see
# ``Notification.dedup_key``).
#
# A plain ALTER COLUMN ... COLLATE would rebuild that index under an exclusive lock, stopping
# every fan-out and the notifications API for as long as the build takes. Instead, and not
# atomic, so that the build can be CONCURRENTLY:
#   1. build the "C" unique index beside the old one, while inserts go on;
#   2. drop the old constraint (a brief lock; the new index already keeps the keys unique, and
#      ``ON CONFLICT (dedup_key)`` takes it as its arbiter);
#   3. change the column's collation: PostgreSQL keeps the new index, whose collation is
#      already "C", rather than rebuilding it;
#   4. make the index the constraint again, under its old name.
# Going back runs the same steps towards the database's default collation. IF [NOT] EXISTS
# makes a step repeated after an interruption harmless.

from django.db import migrations, models

TABLE = "notifications_notification"
CONSTRAINT = "notification_dedup_key_unique"
SWAP_INDEX = "notification_dedup_key_swap"


def _collation_swap(collation: str) -> list[str]:
    return [
        f'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "{SWAP_INDEX}" '
        f'ON "{TABLE}" ("dedup_key" COLLATE "{collation}")',
        f'ALTER TABLE "{TABLE}" DROP CONSTRAINT IF EXISTS "{CONSTRAINT}"',
        f'ALTER TABLE "{TABLE}" ALTER COLUMN "dedup_key" TYPE varchar(128) COLLATE "{collation}"',
        f'ALTER TABLE "{TABLE}" ADD CONSTRAINT "{CONSTRAINT}" UNIQUE USING INDEX "{SWAP_INDEX}"',
    ]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("notifications", "0005_notification_keys_unchecked"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="notification",
                    name="dedup_key",
                    field=models.CharField(db_collation="C", max_length=128),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    sql=_collation_swap("C"), reverse_sql=_collation_swap("default")
                ),
            ],
        ),
    ]
