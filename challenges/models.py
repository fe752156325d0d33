from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now


class Challenge(models.Model):
    """A question with a deadline that users stake coins on.

    The creator is the challenger (side ``yes``); the challenged side is ``no``. Per-side totals
    and counts are kept here as stakes arrive (in the staking transaction), so that resolving a
    challenge and showing it never scan its stakes. Stakes sit in the challenge's own escrow
    account until a payout job settles them.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        ACTIVE = "active"
        PENDING_ADMIN = "pending_admin"
        RESOLVING = "resolving"
        COMPLETED = "completed"
        CANCELLED = "cancelled"

    class Result(models.TextChoices):
        CHALLENGER_WON = "challenger_won"
        CHALLENGED_WON = "challenged_won"
        DRAW = "draw"

    OPEN_STATUSES = (Status.PENDING, Status.ACTIVE)

    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=64, blank=True)
    challenger = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="challenges_made"
    )
    # Indexed only where set (``challenge_challenged_idx`` below): the index serves the check a
    # user's deletion makes, and an open challenge with no named opponent has nothing to find.
    challenged = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="challenges_received",
        db_index=False,
    )
    escrow = models.OneToOneField(
        "ledger.Account", on_delete=models.PROTECT, related_name="escrow_challenge"
    )
    due_date = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    result = models.CharField(max_length=16, choices=Result.choices, blank=True)
    yes_total = models.BigIntegerField(default=0)
    no_total = models.BigIntegerField(default=0)
    yes_count = models.IntegerField(default=0)
    no_count = models.IntegerField(default=0)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    resolved_at = models.DateTimeField(null=True, blank=True)
    # Indexed only where set (``challenge_resolved_by_idx``), for the same reason.
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    completed_at = models.DateTimeField(null=True, blank=True)
    # What the parties (or staff) offer as proof of the outcome: text and/or links.
    evidence = models.TextField(blank=True, default="", db_default="")
    # Staff only: never in the public API.
    admin_notes = models.TextField(blank=True, default="", db_default="")
    # Why staff resolved or cancelled it as they did (required in the admin, audited).
    resolution_note = models.TextField(blank=True, default="", db_default="")

    class Meta:
        ordering = ["-id"]
        # Staff roles (users/roles.py): resolving and cancelling move escrowed money.
        permissions = [
            ("resolve_challenge", "Can resolve a challenge (start its payout)"),
            ("cancel_challenge", "Can cancel a challenge and refund its stakes"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(yes_total__gte=0, no_total__gte=0, yes_count__gte=0, no_count__gte=0),
                name="challenge_totals_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(result="") | Q(status__in=["resolving", "completed"]),
                name="challenge_result_only_when_resolved",
            ),
            models.CheckConstraint(
                condition=Q(challenged__isnull=True) | ~Q(challenged=F("challenger")),
                name="challenge_not_against_self",
            ),
        ]
        indexes = [
            # The deadline sweep and the warning scan read only open challenges by due date;
            # a partial index keeps them cheap however many closed challenges pile up.
            models.Index(
                fields=["due_date"],
                condition=Q(status__in=["pending", "active"]),
                name="challenge_open_due_idx",
            ),
            models.Index(fields=["status", "-id"], name="challenge_status_idx"),
            # The console's "awaiting resolution" figures (the oldest, a capped count) read
            # only these rows, however many challenges there are.
            models.Index(
                fields=["due_date"],
                condition=Q(status="pending_admin"),
                name="challenge_awaiting_idx",
            ),
            # Read by nothing but a user's deletion (PROTECT and SET_NULL look the user up
            # here). The status is indexed, so every move of a challenge (the sweep's, a
            # resolve's) writes a new row version into each index whose predicate it meets:
            # a row without a challenged user or a resolver skips these two.
            models.Index(
                fields=["challenged"],
                condition=Q(challenged__isnull=False),
                name="challenge_challenged_idx",
            ),
            models.Index(
                fields=["resolved_by"],
                condition=Q(resolved_by__isnull=False),
                name="challenge_resolved_by_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title} ({self.status})"


class Stake(models.Model):
    """One user's coins on one side of one challenge (one stake per user per challenge)."""

    class Side(models.TextChoices):
        YES = "yes"
        NO = "no"

    # No index of its own: the unique (challenge, user) and ``stake_side_idx`` both start with
    # the challenge and serve every lookup by it; a third would only cost each stake an entry.
    challenge = models.ForeignKey(
        Challenge, on_delete=models.PROTECT, related_name="stakes", db_index=False
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    side = models.CharField(max_length=3, choices=Side.choices)
    amount = models.BigIntegerField()
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["challenge", "user"], name="stake_one_per_user"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="stake_amount_positive"),
            models.CheckConstraint(condition=Q(side__in=["yes", "no"]), name="stake_side_valid"),
        ]
        indexes = [models.Index(fields=["challenge", "side", "id"], name="stake_side_idx")]

    def __str__(self) -> str:
        return f"{self.user_id} {self.side} {self.amount} on #{self.challenge_id}"


class DeadlineWarning(models.Model):
    """Whom one deadline warning of one challenge has reached: the record that makes each
    participant get it once (``challenges.services.challenges_send_deadline_warnings``).

    The first scan to find the challenge inside the warning's window tells the challenger, the
    challenged user and every staker, and sets ``last_stake_id`` to the highest stake it saw;
    later scans tell only the stakers after it (users who joined late) and move it on. A
    challenge's stakes take their ids while holding its row lock, which they keep until they
    commit, so once a stake is visible every stake of that challenge with a lower id has
    committed or failed: nobody below the mark is left out. Scans lock this row, so two at
    once tell nobody twice.
    """

    class Kind(models.TextChoices):
        DEADLINE_1H = "deadline_1h"
        DEADLINE_10M = "deadline_10m"

    # No index of its own: the unique (challenge, kind) starts with it.
    challenge = models.ForeignKey(
        Challenge, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # NULL until the first scan has told everyone; then the highest stake id told.
    last_stake_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["challenge", "kind"], name="deadline_warning_once"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of #{self.challenge_id} (through stake {self.last_stake_id})"
