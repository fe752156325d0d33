from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class Notification(models.Model):
    """One message to one user, stored first and delivered (Pusher or log) afterwards.

    ``dedup_key`` is unique: a producer derives it from what the message is about (for example
    ``stake_refunded:<job>:<user>``), so producing the same message twice -- two beats, a
    retried task -- inserts it once. Deadline warnings have none: their fan-out records whom it
    told (``challenges.DeadlineWarning``). ``delivered_at`` is set only after the backend
    accepted it.
    """

    class Kind(models.TextChoices):
        DEADLINE_1H = "deadline_1h"
        DEADLINE_10M = "deadline_10m"
        NEEDS_RESOLUTION = "needs_resolution"
        CHALLENGE_CANCELLED = "challenge_cancelled"
        PAYOUT_COMPLETED = "payout_completed"
        STAKE_REFUNDED = "stake_refunded"
        CHALLENGE_LOST = "challenge_lost"
        PAYOUT_ACCOUNT_NEEDED = "payout_account_needed"
        PAYOUT_FAILED = "payout_failed"
        # To staff: a money check found a violation (payouts.services.audit), or an
        # operational alert (payouts.services.alerts).
        PLATFORM_ALERT = "platform_alert"

    class Priority(models.TextChoices):
        NORMAL = "normal"
        HIGH = "high"

    # No index of its own: ``notification_user_idx`` starts with the user and serves every
    # lookup by user (the API's list, the cascade of a user deletion). A second index would
    # only add an entry to every insert of a fan-out.
    #
    # No foreign-key constraint in the database either, here and on ``challenge``: each
    # inserted row would run one deferred check per key at commit (a lookup, plus a lock on the
    # user's row that writes WAL), about 8 of the 19 us of database CPU a fan-out row cost.
    # Every producer selects its user and challenge ids from those tables in the same
    # statement, neither table's rows are ever deleted by the application, and Django's
    # ``on_delete=CASCADE`` (which the ORM carries out, not the database) still removes a
    # deleted user's or challenge's notifications. No money depends on these rows.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="notifications",
        db_index=False,
        db_constraint=False,
    )
    kind = models.CharField(max_length=32, choices=Kind.choices)
    # No index: nothing reads notifications by challenge (the API and delivery go by user and
    # id), and each fan-out row would add an entry to it.
    challenge = models.ForeignKey(
        "challenges.Challenge",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notifications",
        db_index=False,
        db_constraint=False,
    )
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    data = models.JSONField(default=dict, blank=True)
    # Unique through the constraint below rather than ``unique=True``: that would also build a
    # ``varchar_pattern_ops`` index for LIKE lookups nobody makes, one more entry per insert.
    # Collation "C": the key is only ever compared for equality, which is byte equality in
    # every deterministic collation, and PostgreSQL compares "C" text with memcmp where any
    # other locale (even C.UTF-8) goes through strcoll. Each keyed row makes about 17 such
    # comparisons descending the unique index (a fifth of a 100,000-row warning's time, when
    # warnings had keys).
    # NULL for a deadline warning: a key per row of a 100,000-user fan-out was an index entry
    # and a speculative insertion each, about 40% of the row's cost, for what one mark per
    # challenge and warning records (``challenges.DeadlineWarning``). NULL rather than "": a
    # lookup ``dedup_key = <expression>`` implies IS NOT NULL, so the planner can use the
    # partial index for it; it could not prove ``<> ''``.
    dedup_key = models.CharField(  # noqa: DJ001
        max_length=128, db_collation="C", null=True, blank=True
    )
    created_at = models.DateTimeField(db_default=Now())
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # The arbiter of every keyed producer's ``ON CONFLICT (dedup_key) DO NOTHING``;
            # keyless rows take no entry in it.
            models.UniqueConstraint(
                fields=["dedup_key"],
                condition=Q(dedup_key__isnull=False),
                name="notification_dedup_key_set_unique",
            ),
        ]
        indexes = [
            models.Index(fields=["user", "-id"], name="notification_user_idx"),
            models.Index(
                fields=["id"],
                condition=Q(delivered_at__isnull=True),
                name="notification_undelivered_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} to {self.user_id}: {self.title}"
