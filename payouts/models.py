from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now


class PayoutJob(models.Model):
    """Settling one challenge: paying its winners (``payout``) or refunding its stakers
    (``refund``: a draw, a cancellation, or a winning side nobody staked on).

    One job per challenge (a second resolve is a clean conflict). The fee rate is copied here
    when the job is created, so a later settings change never alters a settled job. Counters
    are bumped by the batches that do the work, in the same transaction, so progress is always
    exact.
    """

    class Kind(models.TextChoices):
        PAYOUT = "payout"
        REFUND = "refund"

    class Rail(models.TextChoices):
        LEDGER = "ledger"
        STRIPE = "stripe"

    class Status(models.TextChoices):
        QUEUED = "queued"
        EXPANDING = "expanding"
        RUNNING = "running"
        PAUSED = "paused"
        COMPLETED = "completed"
        COMPLETED_WITH_FAILURES = "completed_with_failures"
        CANCELLED = "cancelled"
        # Finalizing failed for good (the escrow does not hold what the counters say): staff
        # fix the cause and retry; the watchdog leaves it alone.
        FAILED = "failed"

    ACTIVE_STATUSES = (Status.QUEUED, Status.EXPANDING, Status.RUNNING, Status.PAUSED)

    challenge = models.OneToOneField(
        "challenges.Challenge", on_delete=models.PROTECT, related_name="payout_job"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    rail = models.CharField(max_length=16, choices=Rail.choices, default=Rail.LEDGER)
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.QUEUED)
    # The side that wins ("yes"/"no"); empty for refunds.
    winning_side = models.CharField(max_length=3, blank=True)
    fee_bps = models.IntegerField()
    batch_size = models.IntegerField()
    parallelism = models.IntegerField()
    total_entries = models.IntegerField(default=0)
    completed_count = models.IntegerField(default=0)
    failed_count = models.IntegerField(default=0)
    cancelled_count = models.IntegerField(default=0)
    total_amount = models.BigIntegerField(default=0)
    paid_amount = models.BigIntegerField(default=0)
    fee_amount = models.BigIntegerField(default=0)
    # Why the job is ``failed``; empty otherwise.
    error = models.TextField(blank=True, default="", db_default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(db_default=Now())
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-id"]
        # Staff roles (users/roles.py): one permission per control.
        permissions = [
            ("pause_payoutjob", "Can pause a payout job"),
            ("resume_payoutjob", "Can resume a payout job"),
            ("cancel_payoutjob", "Can cancel a payout job"),
            ("retry_payoutjob", "Can retry a payout job's failed entries"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(fee_bps__gte=0, fee_bps__lte=10_000), name="payoutjob_fee_bps_range"
            ),
            models.CheckConstraint(
                condition=Q(
                    completed_count__gte=0,
                    failed_count__gte=0,
                    cancelled_count__gte=0,
                    paid_amount__gte=0,
                    fee_amount__gte=0,
                ),
                name="payoutjob_counters_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(paid_amount__lte=F("total_amount")),
                name="payoutjob_paid_within_total",
            ),
        ]
        indexes = [
            models.Index(
                fields=["status"],
                condition=Q(status__in=["queued", "expanding", "running", "paused"]),
                name="payoutjob_active_idx",
            ),
            # The console's "last 24 hours" reads the jobs that finished lately, not all jobs.
            models.Index(
                fields=["finished_at"],
                condition=Q(finished_at__isnull=False),
                name="payoutjob_finished_idx",
            ),
            models.Index(fields=["id"], condition=Q(status="failed"), name="payoutjob_failed_idx"),
            # The watchdog's look, every minute, for cancellations left half done reads the
            # cancelled jobs only, not every job the platform ever ran.
            models.Index(
                fields=["id"], condition=Q(status="cancelled"), name="payoutjob_cancelled_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"job #{self.pk} {self.kind} challenge #{self.challenge_id} ({self.status})"


# For each status an index finds, the column that finds it (no index holds the status itself:
# see ``PayoutEntry.Meta.indexes``). The entry's checks, made from this table, keep that column
# set in that status, so adding the condition to a filter on the status changes no result,
# only the plan.
ENTRY_STATUS_COLUMNS: dict[str, Q] = {
    "processing": Q(lease_until__isnull=False),
    "retryable": Q(next_attempt_at__isnull=False),
    "failed": ~Q(failure_reason=""),
    "reversed": Q(reversed_amount__gt=0),
}


class PayoutEntry(models.Model):
    """What one user receives from one job: created with its exact amount when the job expands."""

    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSING = "processing"
        RETRYABLE = "retryable"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"
        REVERSED = "reversed"

    # No index of its own: the (job, user) and (job, id) indexes start with the job.
    # No foreign-key constraint in the database on the job or the user either: PostgreSQL
    # checks one with a query per inserted row (and locks the user's row, which dirties and
    # logs its page), more than half of what creating a million entries costs. What the
    # constraints guarded holds without them: entries are created by one statement
    # (``payout_entries_insert``) from the job's own stakes, whose constraint keeps each user,
    # and a job with entries cannot be deleted (``payouts_job_keeps_entries``, migration 0012).
    job = models.ForeignKey(
        PayoutJob,
        on_delete=models.PROTECT,
        related_name="entries",
        db_index=False,
        db_constraint=False,
    )
    # No index of its own either: entries are read by job; a user's failed entries have a
    # partial index below.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    stake_amount = models.BigIntegerField()
    amount = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempt_count = models.IntegerField(default=0)
    first_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    failure_reason = models.CharField(max_length=64, blank=True)
    last_error = models.TextField(blank=True)
    stripe_transfer_id = models.CharField(max_length=64, blank=True)
    # What Stripe reversals have taken back so far (each reversal is posted once, by its id).
    reversed_amount = models.BigIntegerField(default=0, db_default=0)
    created_at = models.DateTimeField(db_default=Now())
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["job", "user"], name="payoutentry_one_per_user"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="payoutentry_amount_positive"),
            models.CheckConstraint(
                condition=Q(amount__gte=F("stake_amount")), name="payoutentry_never_below_stake"
            ),
            models.CheckConstraint(
                condition=Q(reversed_amount__gte=0, reversed_amount__lte=F("amount")),
                name="payoutentry_reversed_within_amount",
            ),
            *(
                models.CheckConstraint(
                    condition=~Q(status=status) | column,
                    name=f"payoutentry_{status}_has_its_column",
                )
                for status, column in ENTRY_STATUS_COLUMNS.items()
            ),
        ]
        # No index holds the status, in its columns or its predicate: the ledger rail's one
        # change to an entry (pending -> completed, with completed_at) then touches no indexed
        # column, so PostgreSQL writes it as a heap-only update on the entry's own page (the
        # table's fillfactor of 50 leaves the room, payouts/0011) and adds no index entry.
        # Entries are found by what each state sets instead: a job's in id order (batches
        # claim by keyset), a retryable entry by its next_attempt_at, a processing one by its
        # lease, a failed or retryable one by its failure reason, a reversed one by what was
        # reversed (``ENTRY_STATUS_COLUMNS``); the checks above keep those columns set in
        # those states.
        indexes = [
            models.Index(fields=["job", "id"], name="payoutentry_job_id_idx"),
            models.Index(
                fields=["next_attempt_at"],
                condition=ENTRY_STATUS_COLUMNS["retryable"],
                name="payoutentry_next_attempt_idx",
            ),
            models.Index(
                fields=["lease_until"],
                condition=ENTRY_STATUS_COLUMNS["processing"],
                name="payoutentry_lease_until_idx",
            ),
            # A job's failed, retryable and reversed entries (the console's counts and failure
            # reasons), and a user's failed ones, found when their Stripe account gets
            # enabled: few rows, so these cost next to nothing on the hot path.
            models.Index(
                fields=["job", "id"],
                condition=ENTRY_STATUS_COLUMNS["failed"] | ENTRY_STATUS_COLUMNS["reversed"],
                name="payoutentry_job_exception_idx",
            ),
            models.Index(
                fields=["user"],
                condition=ENTRY_STATUS_COLUMNS["failed"],
                name="payoutentry_user_failure_idx",
            ),
        ]
        verbose_name_plural = "payout entries"

    def __str__(self) -> str:
        return f"entry #{self.pk} user {self.user_id} {self.amount} ({self.status})"


def entries_in(status: str) -> Q:
    """The filter for entries in ``status``, with the column that finds that status through an
    index when there is one."""
    return Q(status=status) & ENTRY_STATUS_COLUMNS.get(status, Q())


class ConnectedAccount(models.Model):
    """A user's Stripe Connect account, kept current by ``account.updated`` webhooks.

    The row is written before Stripe is asked to create the account (``stripe_account_id``
    still empty), so a user has one row whatever happens to that request, and a request that
    timed out is finished by the next one with the same idempotency key (or, after Stripe
    forgot that key, by looking the account up by its ``metadata.user_id``).
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="connected_account"
    )
    stripe_account_id = models.CharField(max_length=64, blank=True)
    payouts_enabled = models.BooleanField(default=False)
    # Stripe's ``requirements.currently_due``: what the user still has to fill in.
    requirements_due = models.JSONField(default=list, blank=True)
    # ``created`` (epoch seconds) of the last ``account.updated`` event applied: an older event
    # arriving late never undoes a newer one.
    last_event_created = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(stripe_account_id="") | Q(stripe_account_id__startswith="acct_"),
                name="connectedaccount_id_format",
            ),
            models.UniqueConstraint(
                fields=["stripe_account_id"],
                condition=~Q(stripe_account_id=""),
                name="connectedaccount_stripe_id_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.stripe_account_id or '(being created)'} (user {self.user_id})"


class StripeEvent(models.Model):
    """Each Stripe webhook event, stored once by id so a replayed event does nothing."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=128)
    payload = models.JSONField()
    received_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class PayoutAttempt(models.Model):
    """One call to Stripe about one entry, and what came of it: the entry's history.

    Written in the transaction that records the call's result on the entry, so the history
    and the entry never disagree. ``reconciled``: Stripe's own transfer list showed the
    transfer (a lost answer, a lookup before failing or cancelling).
    """

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded"
        TRANSIENT = "transient"
        PERMANENT = "permanent"
        RECONCILED = "reconciled"

    # Indexed by (entry, id) below: the history of one entry, in order.
    entry = models.ForeignKey(
        PayoutEntry, on_delete=models.PROTECT, related_name="attempts", db_index=False
    )
    attempt = models.IntegerField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    error_code = models.CharField(max_length=64, blank=True)
    http_status = models.IntegerField(null=True, blank=True)
    stripe_request_id = models.CharField(max_length=255, blank=True)
    transfer_id = models.CharField(max_length=64, blank=True)
    duration_ms = models.IntegerField()

    class Meta:
        ordering = ["entry", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(duration_ms__gte=0), name="payoutattempt_duration_non_negative"
            ),
        ]
        indexes = [models.Index(fields=["entry", "id"], name="payoutattempt_entry_idx")]

    def __str__(self) -> str:
        return f"entry #{self.entry_id} attempt {self.attempt}: {self.outcome}"
