# Every notification a fan-out inserts adds one entry to each index of the table. Two of them
# were never read: the user foreign key's own index (``notification_user_idx`` starts with the
# user) and the ``varchar_pattern_ops`` twin that ``unique=True`` builds for LIKE lookups on the
# dedup key. The dedup key stays unique: the new constraint is created before the old one is
# dropped, in one transaction.

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0003_outcome_kinds"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="notification",
            constraint=models.UniqueConstraint(
                fields=("dedup_key",), name="notification_dedup_key_unique"
            ),
        ),
        migrations.AlterField(
            model_name="notification",
            name="dedup_key",
            field=models.CharField(max_length=128),
        ),
        migrations.AlterField(
            model_name="notification",
            name="user",
            field=models.ForeignKey(
                db_index=False,
                on_delete=models.deletion.CASCADE,
                related_name="notifications",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]
