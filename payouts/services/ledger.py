"""The double-entry ledger: every money movement on the platform goes through ``transfers_post``.

Invariants (DESIGN.md section 3), true after every committed transaction:
1. the balances of all accounts sum to 0;
2. each account's balance equals its credits minus its debits.
``transfers_post`` keeps both by inserting the transfer rows and applying their balance deltas
in one SQL statement, and ``ledger_check`` verifies them from the rows.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from core.errors import InsufficientFunds, InvalidInput
from payouts.models import Account

# Largest amount one transfer may carry: far below bigint's limit, so that sums of many
# transfers on one account cannot overflow.
MAX_AMOUNT = 10**15


@dataclass(frozen=True, slots=True)
class TransferSpec:
    debit_account_id: int
    credit_account_id: int
    amount: int
    kind: str
    idempotency_key: str


# Lock every touched account in primary-key order first, so that concurrent postings over the
# same accounts queue up instead of deadlocking. NO KEY UPDATE is the lock an UPDATE of the
# balance takes anyway, and unlike FOR UPDATE it does not block foreign-key checks of
# concurrent transfer inserts.
_LOCK_SQL = """
SELECT id FROM payouts_account WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE
"""

# Insert the transfers, skip keys that were already posted, and apply the net balance change of
# the rows actually inserted -- all in one statement, so a duplicate moves no money.
_POST_SQL = """
WITH ins AS (
    INSERT INTO payouts_transfer
        (debit_account_id, credit_account_id, amount, kind, idempotency_key)
    SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::text[], %s::text[])
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING debit_account_id, credit_account_id, amount
), moves AS (
    SELECT debit_account_id AS account_id, -amount AS delta FROM ins
    UNION ALL
    SELECT credit_account_id, amount FROM ins
), upd AS (
    UPDATE payouts_account AS a SET balance = a.balance + d.delta
    FROM (SELECT account_id, sum(delta) AS delta FROM moves GROUP BY account_id) AS d
    WHERE a.id = d.account_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM upd)
"""


def transfers_post(*, transfers: Sequence[TransferSpec]) -> int:
    """Post transfers set-based (two statements whatever their number); return how many were new.

    Idempotent: a transfer whose ``idempotency_key`` exists already is skipped and moves no
    money. Atomic: either every new transfer and its balance changes commit, or none do; a
    balance that would go negative raises ``InsufficientFunds`` and posts nothing.
    """
    if not transfers:
        return 0
    for spec in transfers:
        if type(spec.amount) is not int or not 0 < spec.amount <= MAX_AMOUNT:
            raise InvalidInput(f"Invalid transfer amount {spec.amount!r}.", code="invalid_amount")
    account_ids = sorted(
        {t.debit_account_id for t in transfers} | {t.credit_account_id for t in transfers}
    )
    columns = (
        [t.debit_account_id for t in transfers],
        [t.credit_account_id for t in transfers],
        [t.amount for t in transfers],
        [t.kind for t in transfers],
        [t.idempotency_key for t in transfers],
    )
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_LOCK_SQL, [account_ids])
            cursor.execute(_POST_SQL, list(columns))
            inserted, _ = cursor.fetchone()
    except IntegrityError as exc:
        if "account_balance_non_negative" in str(exc):
            raise InsufficientFunds() from exc
        raise
    return int(inserted)


def transfer_post(
    *, debit_account_id: int, credit_account_id: int, amount: int, kind: str, idempotency_key: str
) -> bool:
    """Post one transfer; return False if its idempotency key was posted before."""
    spec = TransferSpec(debit_account_id, credit_account_id, amount, kind, idempotency_key)
    return transfers_post(transfers=[spec]) == 1


def system_account_id(kind: str, *, currency: str | None = None) -> int:
    """The id of the singleton ``world`` / ``platform_fees`` / ``stripe_clearing`` account."""
    if kind not in Account.SYSTEM_KINDS:
        raise ValueError(f"{kind} is not a system account kind")
    account, _ = Account.objects.get_or_create(
        kind=kind, currency=currency or settings.CURRENCY, user=None
    )
    return account.pk


def account_create(*, kind: str, user_id: int | None = None) -> Account:
    """Open an empty account (wallets through ``wallet_create``, one escrow per challenge)."""
    return Account.objects.create(kind=kind, user_id=user_id, currency=settings.CURRENCY)


@dataclass(frozen=True, slots=True)
class LedgerReport:
    total_balance: int
    accounts: int
    transfers: int
    violations: list[str]

    @property
    def ok(self) -> bool:
        return not self.violations


# One statement, so every figure comes from the same snapshot even while money moves.
_CHECK_SQL = """
WITH flows AS (
    SELECT credit_account_id AS account_id, amount AS delta FROM payouts_transfer
    UNION ALL
    SELECT debit_account_id, -amount FROM payouts_transfer
), per_account AS (
    SELECT account_id, sum(delta) AS net FROM flows GROUP BY account_id
), checked AS (
    SELECT a.id, a.kind, a.balance, coalesce(p.net, 0) AS net
    FROM payouts_account AS a LEFT JOIN per_account AS p ON p.account_id = a.id
)
SELECT
    (SELECT coalesce(sum(balance), 0) FROM checked),
    (SELECT count(*) FROM checked),
    (SELECT count(*) FROM payouts_transfer),
    (SELECT coalesce(json_agg(json_build_array(id, kind, balance, net)), '[]')
     FROM (SELECT * FROM checked WHERE balance <> net OR (balance < 0 AND kind <> 'world')
           ORDER BY id LIMIT 100) AS bad)
"""


def ledger_check() -> LedgerReport:
    """Verify invariants 1 and 2 from the rows themselves (read-only, one consistent snapshot)."""
    with connection.cursor() as cursor:
        cursor.execute(_CHECK_SQL)
        total, accounts, transfers, bad = cursor.fetchone()
    violations = [] if total == 0 else [f"sum of all balances is {total}, expected 0"]
    for account_id, kind, balance, net in bad:
        violations.append(
            f"account {account_id} ({kind}) balance {balance} != credits - debits {net}"
            if balance != net
            else f"account {account_id} ({kind}) has negative balance {balance}"
        )
    return LedgerReport(int(total), accounts, transfers, violations)
