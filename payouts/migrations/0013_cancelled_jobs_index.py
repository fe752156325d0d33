# The watchdog looks every minute for cancelled jobs whose cancellation was interrupted; with
# no index for the status it scanned every job ever run (72 ms on both cores at a million).
# Not atomic, so the index is built CONCURRENTLY while jobs keep being written.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("payouts", "0012_entry_checks_by_construction")]

    operations = [
        AddIndexConcurrently(
            model_name="payoutjob",
            index=models.Index(
                condition=models.Q(status="cancelled"),
                fields=["id"],
                name="payoutjob_cancelled_idx",
            ),
        ),
    ]
