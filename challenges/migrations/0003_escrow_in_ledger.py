"""The escrow account's model moved to the ``ledger`` app (see ledger 0001): state only, the
foreign key in the database already points at the same table."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("challenges", "0002_beat_schedule"),
        ("ledger", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.AlterField(
                    model_name="challenge",
                    name="escrow",
                    field=models.OneToOneField(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="escrow_challenge",
                        to="ledger.account",
                    ),
                ),
            ],
        ),
    ]
