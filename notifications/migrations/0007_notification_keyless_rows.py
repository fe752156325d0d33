# Rows without a dedup key (the deadline warnings', see ``Notification.dedup_key``) and a unique
# index that holds only the keyed ones. This step only adds: the old constraint stays, so
# processes of the previous release, whose ``ON CONFLICT (dedup_key)`` names a constraint
# without predicate, keep working until 0008 drops it. The new index is built CONCURRENTLY
# beside it (not atomic, hence the migration), while inserts go on.
#
# Going back fills each keyless row with the key its producer used before (``<kind>:<challenge>:
# <user>``) so that the column can be NOT NULL again.

from django.db import migrations, models

TABLE = "notifications_notification"
INDEX = "notification_dedup_key_set_unique"

FILL_KEYS = (
    f'UPDATE "{TABLE}" SET "dedup_key" = "kind" || \':\' || "challenge_id" || \':\' || "user_id" '
    'WHERE "dedup_key" IS NULL'
)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("notifications", "0006_notification_dedup_key_bytewise"),
    ]

    operations = [
        migrations.AlterField(
            model_name="notification",
            name="dedup_key",
            field=models.CharField(blank=True, db_collation="C", max_length=128, null=True),
        ),
        # Backwards only, and before the column is made NOT NULL again.
        migrations.RunSQL(sql=migrations.RunSQL.noop, reverse_sql=FILL_KEYS),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddConstraint(
                    model_name="notification",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(("dedup_key__isnull", False)),
                        fields=("dedup_key",),
                        name=INDEX,
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    sql=f'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "{INDEX}" '
                    f'ON "{TABLE}" ("dedup_key") WHERE "dedup_key" IS NOT NULL',
                    reverse_sql=f'DROP INDEX CONCURRENTLY IF EXISTS "{INDEX}"',
                ),
            ],
        ),
    ]
