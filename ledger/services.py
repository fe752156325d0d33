"""The double-entry ledger: every money movement on the platform goes through ``transfers_post``;
wallets are opened and funded here.

Invariants (DESIGN.md section 3), true after every committed transaction:
1. the balances of all accounts sum to 0;
2. each account's balance equals its credits minus its debits.
``transfers_post`` keeps both by inserting the transfer rows and applying their balance deltas
in one SQL statement, and ``ledger.selectors.ledger_check`` verifies them from the rows.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from core.errors import InsufficientFunds, InvalidInput, NotFound
from core.money import MAX_AMOUNT
from core.services import audit_record
from ledger.models import Account, Transfer


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


def wallet_create(*, user_id: int) -> Account:
    """Open the user's wallet (one per user and currency, enforced by a unique constraint)."""
    return account_create(kind=Account.Kind.USER_WALLET, user_id=user_id)


def wallet_deposit(
    *, user_id: int, amount: int, actor: Any, idempotency_key: str | None = None
) -> bool:
    """Credit ``amount`` to the user's wallet from the ``world`` account.

    Idempotent when the caller passes a key: the same key deposits once. Returns False when the
    key had been used already. Recorded in the audit trail.
    """
    wallet = Account.objects.filter(kind=Account.Kind.USER_WALLET, user_id=user_id).first()
    if wallet is None:
        raise NotFound("No such user.", code="user_not_found")
    key = f"deposit:{idempotency_key or uuid.uuid4().hex}"
    with transaction.atomic(durable=True):
        posted = transfer_post(
            debit_account_id=system_account_id(Account.Kind.WORLD),
            credit_account_id=wallet.pk,
            amount=amount,
            kind=Transfer.Kind.DEPOSIT,
            idempotency_key=key,
        )
        if posted:
            audit_record(
                actor=actor,
                action="wallet.deposit",
                target_type="user",
                target_id=user_id,
                details={"amount": amount, "idempotency_key": key},
            )
    return posted
