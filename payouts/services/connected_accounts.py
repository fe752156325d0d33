"""Users' Stripe Connect accounts: where the Stripe rail sends each winner's money.

Staff link them in the admin (or through ``connected_account_link``); Stripe's
``account.updated`` webhooks keep ``payouts_enabled`` current. A winner without an enabled
account is never sent to Stripe: their entry fails with ``stripe_account_not_connected`` and
their money stays in escrow until staff retry the job's failed entries.
"""

from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction

from core.errors import Conflict, InvalidInput, NotFound
from core.services import audit_record
from payouts.models import ConnectedAccount


def connected_account_link(
    *, user_id: int, stripe_account_id: str, payouts_enabled: bool, actor: Any
) -> ConnectedAccount:
    """Create or replace the user's connected account; recorded in the audit trail.

    Idempotent: linking the same account again only updates ``payouts_enabled``. An account id
    that belongs to another user is a 409 ``stripe_account_taken``.
    """
    if not stripe_account_id.startswith("acct_"):
        raise InvalidInput("Stripe account ids start with acct_.", code="invalid_stripe_account")
    with transaction.atomic(durable=True):
        if not get_user_model().objects.filter(pk=user_id).exists():
            raise NotFound("No such user.", code="user_not_found")
        owner = (
            ConnectedAccount.objects.filter(stripe_account_id=stripe_account_id)
            .values_list("user_id", flat=True)
            .first()
        )
        if owner is not None and owner != user_id:
            raise Conflict(
                "This Stripe account belongs to another user.", code="stripe_account_taken"
            )
        account, _ = ConnectedAccount.objects.select_for_update().update_or_create(
            user_id=user_id,
            defaults={"stripe_account_id": stripe_account_id, "payouts_enabled": payouts_enabled},
        )
        audit_record(
            actor=actor,
            action="connected_account.link",
            target_type="user",
            target_id=user_id,
            details={"stripe_account_id": stripe_account_id, "payouts_enabled": payouts_enabled},
        )
    return account


def connected_account_sync(*, stripe_account_id: str, payouts_enabled: bool) -> bool:
    """Apply Stripe's view of an account (``account.updated``); False if nobody uses it.

    Runs inside the webhook's transaction; a plain UPDATE, so replays and reordering converge
    on whatever Stripe said last.
    """
    updated = ConnectedAccount.objects.filter(stripe_account_id=stripe_account_id).update(
        payouts_enabled=payouts_enabled
    )
    return updated > 0


def payout_destinations(*, user_ids: Iterable[int]) -> dict[int, str]:
    """Map each given user with an enabled connected account to its ``acct_...`` id."""
    return dict(
        ConnectedAccount.objects.filter(
            user_id__in=list(user_ids), payouts_enabled=True
        ).values_list("user_id", "stripe_account_id")
    )


_SEED_SQL = """
INSERT INTO payouts_connectedaccount (user_id, stripe_account_id, payouts_enabled, updated_at)
SELECT s.user_id, 'acct_seed' || s.user_id, true, now()
FROM challenges_stake AS s
WHERE s.challenge_id = %s AND s.user_id <> ALL(%s::bigint[])
ON CONFLICT (user_id) DO NOTHING
RETURNING stripe_account_id
"""


def connected_accounts_seed(*, challenge_id: int, except_user_ids: Iterable[int] = ()) -> list[str]:
    """Link an enabled account ``acct_seed<user_id>`` for every staker of a challenge.

    For tests, benchmarks and chaos runs (one statement, any number of stakers); users who
    already have an account keep it. Returns the account ids it created, which the caller
    registers with its (fake) Stripe.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_SEED_SQL, [challenge_id, list(except_user_ids)])
        return [row[0] for row in cursor.fetchall()]
