from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class Notification(models.Model):
    """One message to one user, stored first and delivered (Pusher or log) afterwards.

    ``dedup_key`` is unique: every producer derives it from what the message is about (for
    example ``deadline_1h:<challenge>:<user>``), so producing the same message twice -- two beats,
    a retried task -- inserts it once. ``delivered_at`` is set only after the backend accepted it.
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
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="notifications",
        db_index=False,
    )
    kind = models.CharField(max_length=32, choices=Kind.choices)
    challenge = models.ForeignKey(
        "challenges.Challenge",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notifications",
    )
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    data = models.JSONField(default=dict, blank=True)
    # Unique through the constraint below rather than ``unique=True``: that would also build a
    # ``varchar_pattern_ops`` index for LIKE lookups nobody makes, one more entry per insert.
    dedup_key = models.CharField(max_length=128)
    created_at = models.DateTimeField(db_default=Now())
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # The arbiter of every producer's ``ON CONFLICT (dedup_key) DO NOTHING``.
            models.UniqueConstraint(fields=["dedup_key"], name="notification_dedup_key_unique"),
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
