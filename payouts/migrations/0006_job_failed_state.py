"""A ``failed`` job state with its ``error``, and an index of finished jobs for the console."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("payouts", "0005_ledger_moved_out"),
    ]

    operations = [
        migrations.AddField(
            model_name="payoutjob",
            name="error",
            field=models.TextField(blank=True),
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
