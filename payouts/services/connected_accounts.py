"""Users' Stripe Connect accounts: where the Stripe rail sends each winner's money.

Users open an Express account themselves (``payout_account_open``, ``POST
/api/payout-account/``) and finish Stripe's hosted onboarding; staff can also link one in the
admin (``connected_account_link``). Stripe's ``account.updated`` webhooks keep
``payouts_enabled`` current, in Stripe's order. A winner without an enabled account is never
sent to Stripe: their entry fails with ``stripe_account_not_connected``, their money stays in
escrow, and the webhook that enables their account queues the entry again.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from core.errors import Conflict, InvalidInput, NotFound
from core.services import audit_record
from payouts.models import ConnectedAccount
from payouts.services.stripe_client import (
    AccountState,
    StripeNotConfigured,
    account_create,
    account_find,
    account_onboarding_link,
    account_state_parse,
    stripe_configured,
)

# Stripe keeps idempotency keys for 24 hours; an hour of margin. A creation first requested
# longer ago than this is looked up by metadata before it is asked for again.
ACCOUNT_KEY_MEMORY = timedelta(hours=23)


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


def connected_account_sync(*, account: Mapping[str, Any], created: int) -> ConnectedAccount | None:
    """Apply Stripe's view of an account (an ``account.updated`` event created at ``created``,
    epoch seconds); the updated row, or None when nothing was applied.

    Call it inside the webhook's transaction. Locks the account row: an event older than the
    last one applied (``last_event_created``) changes nothing, so a late delivery never
    undoes a newer state (events of the same second apply in arrival order). An account the
    app is still creating (its row has no id yet: the event beat Account.create's answer) is
    matched by ``metadata.user_id``. An account nobody here uses is ignored.
    """
    state = account_state_parse(account)
    owner = str((account.get("metadata") or {}).get("user_id", ""))
    match = Q(stripe_account_id=state.id)
    if owner.isdigit():
        match |= Q(stripe_account_id="", user_id=int(owner))
    row = ConnectedAccount.objects.select_for_update().filter(match).first()
    if row is None or (row.last_event_created or 0) > created:
        return None
    row.stripe_account_id = state.id
    row.payouts_enabled = state.payouts_enabled
    row.requirements_due = state.requirements_due
    row.last_event_created = created
    row.save(
        update_fields=[
            "stripe_account_id",
            "payouts_enabled",
            "requirements_due",
            "last_event_created",
            "updated_at",
        ]
    )
    return row


@dataclass(frozen=True, slots=True)
class PayoutAccountLink:
    account_id: str
    payouts_enabled: bool
    onboarding_url: str


def payout_account_get(*, user_id: int) -> ConnectedAccount:
    """The user's connected account; ``no_payout_account`` (404) while there is none, and
    ``stripe_not_configured`` (503) on a server without Stripe."""
    if not stripe_configured():
        raise StripeNotConfigured()
    account = ConnectedAccount.objects.filter(user_id=user_id).exclude(stripe_account_id="").first()
    if account is None:
        raise NotFound("You have no payout account yet.", code="no_payout_account")
    return account


def payout_account_open(*, user: Any) -> PayoutAccountLink:
    """Give the user their Stripe Express account (created once) and a fresh onboarding link.

    Exactly one account per user, whatever fails: the user's row is written before Stripe is
    asked (so every later call knows a creation was requested), the creation always carries
    the key ``account:<user_id>`` (a retry after a timeout or a lost answer gets the same
    account), and a creation first requested longer ago than Stripe remembers keys is looked
    up by ``metadata.user_id`` before it is asked again. A second call reuses the account and
    only makes a new link. No transaction is open during a Stripe call. Raises
    ``stripe_not_configured`` (503) without Stripe, ``stripe_unavailable`` (503) when Stripe
    cannot be reached (calling again is safe). The first call is audited.
    """
    if not stripe_configured():
        raise StripeNotConfigured()
    with transaction.atomic(durable=True):
        row, created = ConnectedAccount.objects.get_or_create(user_id=user.pk)
        if created:
            audit_record(
                actor=user,
                action="connected_account.open",
                target_type="user",
                target_id=user.pk,
                details={},
            )
    if not row.stripe_account_id:
        forgotten = row.created_at < timezone.now() - ACCOUNT_KEY_MEMORY
        state = (account_find(user_id=user.pk) if forgotten else None) or account_create(
            user_id=user.pk
        )
        row = _account_created(row_id=row.pk, state=state)
    url = account_onboarding_link(account_id=row.stripe_account_id)
    return PayoutAccountLink(row.stripe_account_id, row.payouts_enabled, url)


def _account_created(*, row_id: int, state: AccountState) -> ConnectedAccount:
    """Record the account Stripe made; a webhook that got here first keeps its (newer) view."""
    with transaction.atomic(durable=True):
        ConnectedAccount.objects.filter(pk=row_id, stripe_account_id="").update(
            stripe_account_id=state.id, updated_at=timezone.now()
        )
        ConnectedAccount.objects.filter(pk=row_id, last_event_created__isnull=True).update(
            payouts_enabled=state.payouts_enabled, requirements_due=state.requirements_due
        )
        return ConnectedAccount.objects.get(pk=row_id)


def payout_destinations(*, user_ids: Iterable[int]) -> dict[int, str]:
    """Map each given user with an enabled connected account to its ``acct_...`` id."""
    return dict(
        ConnectedAccount.objects.filter(
            user_id__in=list(user_ids), payouts_enabled=True
        ).values_list("user_id", "stripe_account_id")
    )


_SEED_SQL = """
INSERT INTO payouts_connectedaccount
    (user_id, stripe_account_id, payouts_enabled, requirements_due, updated_at)
SELECT s.user_id, 'acct_seed' || s.user_id, true, '[]'::jsonb, now()
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
