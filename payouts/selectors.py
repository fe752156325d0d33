"""Reads shared by the API, the admin and services."""

from django.db.models import Q, QuerySet

from core.errors import NotFound
from payouts.models import Account, Transfer


def wallet_get(*, user_id: int) -> Account:
    wallet = Account.objects.filter(kind=Account.Kind.USER_WALLET, user_id=user_id).first()
    if wallet is None:
        raise NotFound("This user has no wallet.", code="wallet_not_found")
    return wallet


def account_transfers(*, account_id: int, limit: int = 20) -> QuerySet[Transfer]:
    """The account's most recent transfers, either direction, newest first."""
    return Transfer.objects.filter(
        Q(debit_account_id=account_id) | Q(credit_account_id=account_id)
    ).order_by("-id")[:limit]
