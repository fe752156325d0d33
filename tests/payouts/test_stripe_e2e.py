"""From "you won" to "the money is at your Stripe account", with nobody on staff involved:
real Celery workers, the app served over HTTP (Stripe's webhooks reach it there), and the fake
Stripe making accounts, onboarding them and sending ``account.updated``."""

from collections import Counter
from urllib.request import urlopen

import pytest

from core.models import AuditEntry
from ledger.models import Account, Transfer
from notifications.models import Notification
from payouts.models import PayoutEntry, PayoutJob
from payouts.services.jobs import challenge_resolve
from tests.conftest import wait_for
from tests.payouts.helpers import stripe_challenge_seed

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

OUTCOMES = {"payout_completed", "challenge_lost"}


def test_winners_without_an_account_onboard_and_are_paid_once_without_staff(
    workers, fake_stripe, live_server, settings, client_for
):
    # Given Stripe delivering its events to the app, and workers for payouts and notifications
    fake_stripe.configure(webhook_url=f"{live_server.url}/api/webhooks/stripe/")
    env = {**fake_stripe.env(), "STRIPE_RATE_LIMIT": "1000", "STRIPE_RATE_BURST": "50"}
    workers.start("payouts,payouts_stripe,notifications", name="all", **env)
    # And a Stripe-rail challenge of 10 winners, half of whom never connected an account
    challenge = stripe_challenge_seed(fake_stripe, stakers=20, seed=5, unconnected=5)
    settings.STRIPE_PARALLELISM = 2
    job = challenge_resolve(
        challenge_id=challenge.pk, result="challenger_won", actor=None, rail="stripe"
    )

    def finished():
        job.refresh_from_db()
        return job.status not in PayoutJob.ACTIVE_STATUSES

    # When the job runs: the connected half is paid, the other half waits for an account
    wait_for(finished, timeout=120, interval=0.5)
    assert (job.status, job.failed_count) == (PayoutJob.Status.COMPLETED_WITH_FAILURES, 5)
    waiting = list(job.entries.filter(status=PayoutEntry.Status.FAILED).select_related("user"))
    assert {e.failure_reason for e in waiting} == {"stripe_account_not_connected"}
    # And each of them is told what to do
    wait_for(
        lambda: Notification.objects.filter(kind="payout_account_needed").count() == 5,
        timeout=60,
    )
    # When they open an account through the API and finish Stripe's onboarding
    for entry in waiting:
        opened = client_for(entry.user).post("/api/payout-account/").json()
        with urlopen(opened["onboarding_url"], timeout=10) as page:  # noqa: S310 (the fake)
            assert page.status == 200
    # Then Stripe's account.updated reaches the app, their entries run again, and the job
    # completes: every winner paid, nobody on staff having done anything
    wait_for(lambda: len(fake_stripe.stats()["deliveries"]) == 5, timeout=60)
    assert {status for _, status in fake_stripe.stats()["deliveries"]} == {200}

    def paid():
        job.refresh_from_db()
        return job.status == PayoutJob.Status.COMPLETED

    wait_for(paid, timeout=120, interval=0.5)
    entries = list(job.entries.all())
    assert {e.status for e in entries} == {"completed"}
    # Exactly once each, at Stripe and in the ledger
    at_stripe = Counter(int(t["metadata"]["entry_id"]) for t in fake_stripe.transfers())
    assert at_stripe == Counter({e.pk: 1 for e in entries})
    for entry in entries:
        transfer = next(t for t in fake_stripe.transfers() if t["id"] == entry.stripe_transfer_id)
        assert transfer["amount"] == entry.amount
        ledger = Transfer.objects.filter(idempotency_key=f"payout:{entry.pk}")
        assert [t.amount for t in ledger] == [entry.amount]
    assert Account.objects.get(pk=job.challenge.escrow_id).balance == 0
    # And the only actions on record are the resolve and the automatic requeues
    actors = set(
        AuditEntry.objects.exclude(action="connected_account.open").values_list(
            "action", "actor_id"
        )
    )
    assert actors == {("challenge.resolve", None), ("payout_job.retry_failed", None)}
    # And every participant holds exactly one outcome notification; the winners who waited
    # also hold the one call to connect an account
    stakers = set(challenge.stakes.values_list("user_id", flat=True))

    def outcomes():
        return Counter(
            Notification.objects.filter(challenge=challenge, kind__in=OUTCOMES).values_list(
                "user_id", flat=True
            )
        )

    wait_for(lambda: set(outcomes()) == stakers, timeout=60)
    assert outcomes() == Counter(dict.fromkeys(stakers, 1))
    needed = Notification.objects.filter(challenge=challenge, kind="payout_account_needed")
    assert sorted(needed.values_list("user_id", flat=True)) == sorted(e.user_id for e in waiting)
