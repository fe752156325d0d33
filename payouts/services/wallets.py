"""User wallets: opening them and funding them from the outside world."""

import uuid
from typing import Any

from django.db import transaction

from core.errors import NotFound
from core.services import audit_record
from payouts.models import Account, Transfer
from payouts.services.ledger import account_create, system_account_id, transfer_post


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
