# Less work per payout on the ledger rail (issue 16): no index holds an entry's status, so the
# batch's pending -> completed is a heap-only update and writes no index entry. On a ledger
# batch of 10,000 (proof.engine_limits' work per payout, 300,000 winners, two runs each): 7
# index entries and 1,341 bytes of WAL per payout before, 4.3 and 1,102 after, 0.9 of the
# entry updates heap-only (the rest find their page full).
#
# The indexes that replace them are keyed on what each state sets: a job's entries in id order
# (batches claim by keyset), the retry time of a retryable entry, the lease of a processing
# one, the failure reason of a failed or retryable one (by job, and by user), what was taken
# back from a reversed one. The checks keep those columns set in those states, so a query may
# find a state through its column (``payouts.models.entries_in``). Every
# statement of the previous release stays valid on this schema (only its Stripe claim gets
# slower, reading a job's entries in id order), so the release needs no upgrade order.
#
# Not atomic: the indexes are built and dropped CONCURRENTLY and the checks added NOT VALID
# then validated (which reads the table without blocking writes), while payouts go on.

from django.contrib.postgres.operations import (
    AddConstraintNotValid,
    AddIndexConcurrently,
    RemoveIndexConcurrently,
    ValidateConstraint,
)
from django.db import migrations, models
from django.db.models import Q

CHECKS = [
    models.CheckConstraint(
        condition=~Q(status="processing") | Q(lease_until__isnull=False),
        name="payoutentry_processing_has_its_column",
    ),
    models.CheckConstraint(
        condition=~Q(status="retryable") | Q(next_attempt_at__isnull=False),
        name="payoutentry_retryable_has_its_column",
    ),
    models.CheckConstraint(
        condition=~Q(status="failed") | ~Q(failure_reason=""),
        name="payoutentry_failed_has_its_column",
    ),
    models.CheckConstraint(
        condition=~Q(status="reversed") | Q(reversed_amount__gt=0),
        name="payoutentry_reversed_has_its_column",
    ),
]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("payouts", "0013_cancelled_jobs_index")]

    operations = [
        AddIndexConcurrently(
            model_name="payoutentry",
            index=models.Index(fields=["job", "id"], name="payoutentry_job_id_idx"),
        ),
        AddIndexConcurrently(
            model_name="payoutentry",
            index=models.Index(
                condition=Q(next_attempt_at__isnull=False),
                fields=["next_attempt_at"],
                name="payoutentry_next_attempt_idx",
            ),
        ),
        AddIndexConcurrently(
            model_name="payoutentry",
            index=models.Index(
                condition=Q(lease_until__isnull=False),
                fields=["lease_until"],
                name="payoutentry_lease_until_idx",
            ),
        ),
        AddIndexConcurrently(
            model_name="payoutentry",
            index=models.Index(
                condition=~Q(failure_reason="") | Q(reversed_amount__gt=0),
                fields=["job", "id"],
                name="payoutentry_job_exception_idx",
            ),
        ),
        AddIndexConcurrently(
            model_name="payoutentry",
            index=models.Index(
                condition=~Q(failure_reason=""),
                fields=["user"],
                name="payoutentry_user_failure_idx",
            ),
        ),
        *(AddConstraintNotValid(model_name="payoutentry", constraint=check) for check in CHECKS),
        *(ValidateConstraint(model_name="payoutentry", name=check.name) for check in CHECKS),
        RemoveIndexConcurrently(model_name="payoutentry", name="payoutentry_job_status_idx"),
        RemoveIndexConcurrently(model_name="payoutentry", name="payoutentry_retry_due_idx"),
        RemoveIndexConcurrently(model_name="payoutentry", name="payoutentry_lease_idx"),
        RemoveIndexConcurrently(model_name="payoutentry", name="payoutentry_user_failed_idx"),
    ]
