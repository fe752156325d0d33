"""A ``failed`` job state with its ``error``, and indexes of finished and failed jobs for the
console. The new column has a database default: the refund jobs are inserted by raw SQL."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("payouts", "0005_ledger_moved_out"),
    ]

    operations = [
        migrations.AddField(
            model_name="payoutjob",
            name="error",
            field=models.TextField(blank=True, default="", db_default=""),
        ),
        migrations.AlterField(
            model_name="payoutjob",
            name="status",
            field=models.CharField(
                choices=[
                    ("queued", "Queued"),
                    ("expanding", "Expanding"),
                    ("running", "Running"),
                    ("paused", "Paused"),
                    ("completed", "Completed"),
                    ("completed_with_failures", "Completed With Failures"),
                    ("cancelled", "Cancelled"),
                    ("failed", "Failed"),
                ],
                default="queued",
                max_length=32,
            ),
        ),
        migrations.AddIndex(
            model_name="payoutjob",
            index=models.Index(
                condition=models.Q(("finished_at__isnull", False)),
                fields=["finished_at"],
                name="payoutjob_finished_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="payoutjob",
            index=models.Index(
                condition=models.Q(("status", "failed")), fields=["id"], name="payoutjob_failed_idx"
            ),
        ),
    ]
