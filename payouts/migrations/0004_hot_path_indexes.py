"""Fewer writes per payout: a payout writes one transfer, one wallet and one entry, and every
index on them is written too."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("payouts", "0003_payout_jobs_and_stripe"),
    ]

    operations = [
        migrations.AlterField(
            model_name="payoutentry",
            name="job",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="entries",
                to="payouts.payoutjob",
            ),
        ),
        migrations.AlterField(
            model_name="transfer",
            name="idempotency_key",
            field=models.CharField(db_collation="C", max_length=128),
        ),
        migrations.AddConstraint(
            model_name="transfer",
            constraint=models.UniqueConstraint(
                fields=("idempotency_key",), name="transfer_idempotency_key"
            ),
        ),
        # Half of each account page left free: a balance change then fits on its own page and
        # is a heap-only update, which writes none of the account indexes. A batch credits
        # thousands of neighbouring wallets in one transaction, so the space must hold most of
        # a page's rows at once. Applies to pages written from now on.
        migrations.RunSQL(
            "ALTER TABLE payouts_account SET (fillfactor = 50)",
            "ALTER TABLE payouts_account RESET (fillfactor)",
        ),
    ]
