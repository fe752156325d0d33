"""The double-entry ledger: money moves through ``transfers_post``, or through its posting
(``posting_ctes``) inside a caller's own statement (a stake); the payout engine's batch
statement posts the same way for a batch of winners. Wallets are opened and funded here.

Invariants (DESIGN.md section 3), true after every committed transaction:
1. the balances of all accounts sum to 0;
2. each account's balance equals its credits minus its debits.
The posting keeps both by inserting the transfer rows and applying their balance deltas in one
SQL statement, and ``ledger.selectors.ledger_check`` verifies them from the rows.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum
from django.utils import timezone

from core.db import advisory_xact_lock
from core.errors import Conflict, Forbidden, InsufficientFunds, InvalidInput, NotFound
from core.money import MAX_AMOUNT, amounts_in_range
from core.services import audit_record
from ledger.models import Account, Deposit, Transfer


@dataclass(frozen=True, slots=True)
class TransferSpec:
    debit_account_id: int
    credit_account_id: int
    amount: int
    kind: str
    idempotency_key: str


# Lock every touched account in primary-key order first, so that concurrent postings over the
# same accounts queue up instead of deadlocking. NO KEY UPDATE is the lock an UPDATE of the
# balance takes anyway, and unlike FOR UPDATE it does not block foreign-key checks of rows
# that reference the account (a new challenge's escrow). The ids it returns are also how a
# posting knows that every account it names exists (transfers carry no foreign-key
# constraint: ``ledger.models.Transfer``).
_LOCK_SQL = """
SELECT id FROM payouts_account WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE
"""


def posting_ctes(source: str) -> str:
    """The CTEs that post the transfers ``source`` selects, for a statement of the caller's own
    that must move money in the same round trip as its other writes (one stake is a single
    statement). ``transfers_post`` is made of them too: they are the ledger's one posting.

    ``source`` is a SELECT of (debit_account_id, credit_account_id, amount, kind,
    idempotency_key). The CTEs are ``posted``, the transfers inserted (a key posted before is
    skipped and moves no money), and ``moved``, one row per account whose balance changed by
    the net of them: both invariants hold whatever else the statement does. Run it under
    ``posting_errors``. Accounts are locked in the order the plan meets them; a caller posting
    over accounts that concurrent postings share in another order locks them first, in id
    order, as ``transfers_post`` does.
    """
    return f"""
posted AS (
    INSERT INTO payouts_transfer
        (debit_account_id, credit_account_id, amount, kind, idempotency_key)
    {source}
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING debit_account_id, credit_account_id, amount
), moved AS (
    UPDATE payouts_account AS a SET balance = a.balance + d.delta
    FROM (
        SELECT account_id, sum(delta) AS delta
        FROM (
            SELECT debit_account_id AS account_id, -amount AS delta FROM posted
            UNION ALL
            SELECT credit_account_id, amount FROM posted
        ) AS moves
        GROUP BY account_id
    ) AS d
    WHERE a.id = d.account_id
    RETURNING 1
)"""  # noqa: S608 - the caller's SQL, its values as parameters


_POST_SQL = f"""
WITH {
    posting_ctes(
        "SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::text[], %s::text[])"
    )
}
SELECT (SELECT count(*) FROM posted), (SELECT count(*) FROM moved)
"""  # noqa: S608 - no value in the text: they are parameters


@contextmanager
def posting_errors() -> Iterator[None]:
    """A posting refused by the database as the ledger's errors (409): a balance that would
    go negative is ``InsufficientFunds``, one that would overflow ``AmountOutOfRange``. The
    statement failed, so its transaction wrote nothing."""
    try:
        with amounts_in_range():
            yield
    except IntegrityError as exc:
        if "account_balance_non_negative" in str(exc):
            raise InsufficientFunds() from exc
        raise


def transfers_post(*, transfers: Sequence[TransferSpec]) -> int:
    """Post transfers set-based (two statements whatever their number); return how many were new.

    Idempotent: a transfer whose ``idempotency_key`` exists already is skipped and moves no
    money. Atomic: either every new transfer and its balance changes commit, or none do; a
    balance that would go negative raises ``InsufficientFunds`` and one that would overflow
    ``AmountOutOfRange`` (409), an account that does not exist ``NotFound``, and none of them
    posts anything.
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
    with posting_errors(), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_LOCK_SQL, [account_ids])
        if cursor.rowcount != len(account_ids):
            raise NotFound(
                "A transfer names an account that does not exist.", code="account_not_found"
            )
        cursor.execute(_POST_SQL, list(columns))
        inserted, _ = cursor.fetchone()
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


def wallet_create(*, user_id: int) -> Account:
    """Open the user's wallet (one per user and currency, enforced by a unique constraint)."""
    return account_create(kind=Account.Kind.USER_WALLET, user_id=user_id)


@dataclass(frozen=True, slots=True)
class DepositResult:
    deposit: Deposit
    # True when the key had been used for this same deposit before: nothing moved this time.
    replayed: bool


def _deposit_replay(*, key: str, user_id: int, amount: int) -> DepositResult:
    first = Deposit.objects.get(idempotency_key=key)
    if first.user_id != user_id or first.amount != amount:
        raise Conflict(
            "This idempotency key was used for another deposit (another user or amount).",
            code="idempotency_key_reused",
        )
    return DepositResult(deposit=first, replayed=True)


def _deposit_caps_check(*, actor_id: int, amount: int) -> None:
    """Under the actor's advisory lock (call it in the deposit's transaction): the per-deposit
    and per-day caps, which bind every person, superusers included."""
    cap = settings.DEPOSIT_MAX_AMOUNT
    if cap is not None and amount > cap:
        raise InvalidInput(
            f"One deposit may be at most {cap} minor units.", code="deposit_too_large"
        )
    daily = settings.DEPOSIT_DAILY_LIMIT
    if daily is None:
        return
    advisory_xact_lock(namespace="deposit-daily-limit", key=actor_id)
    midnight = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    today = Deposit.objects.filter(actor_id=actor_id, created_at__gte=midnight).aggregate(
        total=Sum("amount")
    )["total"]
    if (today or 0) + amount > daily:
        raise Conflict(
            f"Deposits by one staff member are limited to {daily} minor units a day "
            f"({today or 0} so far today).",
            code="deposit_daily_limit",
        )


def wallet_deposit(*, user_id: int, amount: int, actor: Any, idempotency_key: str) -> DepositResult:
    """Credit ``amount`` to the user's wallet from the ``world`` account, exactly once per key.

    The key names one deposit to one user: the same key again with the same user and amount
    returns the first deposit (``replayed``) and moves nothing, whenever and however often it
    is retried, concurrently included (the unique key decides); with another user or amount it
    is ``409 idempotency_key_reused``. A person (``actor``) may not deposit into their own
    wallet (``403 self_deposit``) and is bound by ``DEPOSIT_MAX_AMOUNT`` (``400
    deposit_too_large``) and, per UTC day, ``DEPOSIT_DAILY_LIMIT`` (``409
    deposit_daily_limit``); concurrent deposits of one actor queue on an advisory lock so the
    daily cap holds. Recorded in the audit trail.
    """
    actor_id = getattr(actor, "pk", None)
    if actor_id is not None and actor_id == user_id:
        raise Forbidden("Staff may not deposit into their own wallet.", code="self_deposit")
    if not idempotency_key:
        raise InvalidInput("An idempotency_key is required.", code="idempotency_key_required")
    if Deposit.objects.filter(idempotency_key=idempotency_key).exists():
        return _deposit_replay(key=idempotency_key, user_id=user_id, amount=amount)
    wallet = Account.objects.filter(kind=Account.Kind.USER_WALLET, user_id=user_id).first()
    if wallet is None:
        raise NotFound("No such user.", code="user_not_found")
    with transaction.atomic(durable=True):
        if actor_id is not None:
            _deposit_caps_check(actor_id=actor_id, amount=amount)
        try:
            with transaction.atomic():
                deposit = Deposit.objects.create(
                    idempotency_key=idempotency_key, user_id=user_id, amount=amount, actor=actor
                )
        except IntegrityError:
            # A concurrent call with the same key committed first (the insert waited for it).
            return _deposit_replay(key=idempotency_key, user_id=user_id, amount=amount)
        key = f"wallet-deposit:{deposit.pk}"
        transfer_post(
            debit_account_id=system_account_id(Account.Kind.WORLD),
            credit_account_id=wallet.pk,
            amount=amount,
            kind=Transfer.Kind.DEPOSIT,
            idempotency_key=key,
        )
        deposit.transfer = Transfer.objects.get(idempotency_key=key)
        deposit.save(update_fields=["transfer"])
        audit_record(
            actor=actor,
            action="wallet.deposit",
            target_type="user",
            target_id=user_id,
            details={"amount": amount, "idempotency_key": idempotency_key, "deposit": deposit.pk},
        )
    return DepositResult(deposit=deposit, replayed=False)
