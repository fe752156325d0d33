"""The incremental ledger check's checkpoint (``ledger.models.Checkpoint``): a new, empty table."""

import django.db.models.functions.datetime
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="Checkpoint",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("watermark", models.BigIntegerField()),
                ("checksum", models.BigIntegerField()),
                ("salt", models.BigIntegerField()),
                ("transfers", models.BigIntegerField()),
                ("updated_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
            ],
            options={"db_table": "ledger_checkpoint"},
        ),
    ]
