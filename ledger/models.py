"""The double-entry ledger's tables: accounts with balances, and immutable transfers.

The tables keep the names they were created with when the ledger lived in ``payouts``
(``payouts_account``, ``payouts_transfer``): moving the models here changed Django's state
only (``ledger/migrations/0001_initial.py``), so no row moved and no table was locked. The
database rules that guard them are theirs too: the checks below, and the trigger that refuses
UPDATE and DELETE of a transfer (``payouts/migrations/0002_transfer_immutable.py``, which
created it before the move).
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now


class Account(models.Model):
    """One side of the double-entry ledger. ``balance`` = credits - debits over its transfers.

    Only the ``world`` account (money entering or leaving the platform) may go negative; the
    database refuses any other negative balance, whoever writes it.
    """

    class Kind(models.TextChoices):
        WORLD = "world"
        USER_WALLET = "user_wallet"
        CHALLENGE_ESCROW = "challenge_escrow"
        PLATFORM_FEES = "platform_fees"
        STRIPE_CLEARING = "stripe_clearing"

    SYSTEM_KINDS = (Kind.WORLD, Kind.PLATFORM_FEES, Kind.STRIPE_CLEARING)

    kind = models.CharField(max_length=32, choices=Kind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="accounts",
    )
    currency = models.CharField(max_length=16)
    balance = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "payouts_account"
        constraints = [
            models.CheckConstraint(
                condition=Q(balance__gte=0) | Q(kind="world"),
                name="account_balance_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(kind="user_wallet", user__isnull=False)
                | (~Q(kind="user_wallet") & Q(user__isnull=True)),
                name="account_user_only_on_wallets",
            ),
            models.UniqueConstraint(
                fields=["user", "currency"],
                condition=Q(kind="user_wallet"),
                name="account_one_wallet_per_user",
            ),
            models.UniqueConstraint(
                fields=["kind", "currency"],
                condition=Q(kind__in=["world", "platform_fees", "stripe_clearing"]),
                name="account_one_system_account_per_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind}#{self.pk} ({self.balance} {self.currency})"


class Transfer(models.Model):
    """One immutable money movement: ``amount`` leaves ``debit_account``, enters ``credit_account``.

    A database trigger refuses UPDATE and DELETE (corrections are new transfers), and the unique
    ``idempotency_key`` makes posting the same movement twice a no-op.
    """

    class Kind(models.TextChoices):
        DEPOSIT = "deposit"
        STAKE = "stake"
        PAYOUT = "payout"
        REFUND = "refund"
        FEE = "fee"
        STRIPE_PAYOUT = "stripe_payout"
        REVERSAL = "reversal"
        TRANSFER = "transfer"

    # No foreign-key constraint in the database: PostgreSQL checks one with a query per
    # inserted transfer that also locks the account's row (a WAL record and a dirtied page
    # per payout, a quarter to a third of a ledger payout's database CPU). Every transfer
    # still names real accounts: each posting updates the balances of the accounts it names
    # in the same statement (``posting_ctes``, the payout batch) after finding or locking
    # them, ``transfers_post`` refuses ids its lock did not find, a trigger refuses to delete
    # an account that transfers name (ledger/migrations/0004), and ``ledger_check`` lists
    # transfers naming no account.
    debit_account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="debits", db_constraint=False
    )
    credit_account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="credits", db_constraint=False
    )
    amount = models.BigIntegerField()
    kind = models.CharField(max_length=32, choices=Kind.choices)
    # Machine keys ("payout:<entry id>"), compared byte-wise: the "C" collation makes every
    # lookup in their unique index a memcmp instead of a locale comparison.
    idempotency_key = models.CharField(max_length=128, db_collation="C")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "payouts_transfer"
        constraints = [
            # A constraint rather than unique=True, which on PostgreSQL adds a second,
            # pattern-ops index nobody queries, written on every transfer.
            models.UniqueConstraint(fields=["idempotency_key"], name="transfer_idempotency_key"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="transfer_amount_positive"),
            models.CheckConstraint(
                condition=~Q(debit_account=F("credit_account")),
                name="transfer_distinct_accounts",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} #{self.debit_account_id}->#{self.credit_account_id}"


class Checkpoint(models.Model):
    """What the incremental ``ledger_check`` has verified so far: one row.

    Every transfer with an id up to ``watermark`` is final (committed or never will be) and
    folded into ``checksum``: the sum over accounts of (credits - debits) times a per-account
    weight, modulo a prime (``ledger.selectors``). The next run reads only the transfers after
    the watermark and compares the balances, in one pass over the accounts, with the checksum
    plus those transfers. Written only by ``ledger_check``; the weights' ``salt`` is drawn when
    the row is created.
    """

    watermark = models.BigIntegerField()
    checksum = models.BigIntegerField()
    salt = models.BigIntegerField()
    transfers = models.BigIntegerField()
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "ledger_checkpoint"

    def __str__(self) -> str:
        return f"ledger checked up to transfer {self.watermark}"


class Deposit(models.Model):
    """Money put into a user's wallet from the ``world`` account, named by the caller's
    idempotency key: the key is unique, so one key is one deposit, whoever retries it.

    Its ledger transfer carries the key ``wallet-deposit:<id>``. Creating one needs the
    ``ledger.add_deposit`` permission (the treasury group); the admin shows them read-only.
    """

    idempotency_key = models.CharField(max_length=100, db_collation="C")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    amount = models.BigIntegerField()
    # Who deposited: the daily cap is counted per actor. Null for deposits made by code
    # (seeding, fixtures), which no person asked for.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    transfer = models.OneToOneField(
        Transfer, null=True, on_delete=models.PROTECT, related_name="deposit"
    )
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["idempotency_key"], name="deposit_idempotency_key"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="deposit_amount_positive"),
        ]
        indexes = [models.Index(fields=["actor", "created_at"], name="deposit_actor_day_idx")]

    def __str__(self) -> str:
        return f"deposit {self.amount} to user {self.user_id} ({self.idempotency_key})"
