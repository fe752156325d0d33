"""Less work per payout on the ledger rail (issue 16): an entry's update stays on its page,
and the entries' user index that nobody reads is gone."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("payouts", "0010_job_control_permissions"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # Every entry is updated once (pending -> completed) soon after it is inserted, a whole
        # page of neighbours in one batch. With half of each page left free the new row
        # versions fit on their own page: PostgreSQL then logs only the bytes that changed and
        # no extra lock record for moving the row. Applies to pages written from now on.
        migrations.RunSQL(
            "ALTER TABLE payouts_payoutentry SET (fillfactor = 50)",
            "ALTER TABLE payouts_payoutentry RESET (fillfactor)",
        ),
        migrations.AlterField(
            model_name="payoutentry",
            name="user",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]
