"""``GET, POST /api/payout-account/``: a user's Stripe Connect Express account, created once
whatever fails, and its onboarding, against the fake Stripe through the real library."""

from datetime import timedelta
from urllib.request import urlopen

import pytest
from django.utils import timezone

from core.models import AuditEntry
from payouts.models import ConnectedAccount
from tests.conftest import run_together
from tests.payouts.test_stripe_webhooks import post as webhook_post

pytestmark = pytest.mark.django_db

URL = "/api/payout-account/"


@pytest.fixture
def fake(fake_stripe, settings):
    settings.STRIPE_RATE_LIMIT = 1000.0
    settings.STRIPE_RATE_BURST = 100
    settings.STRIPE_CONNECT_RETURN_URL = "https://app.example/payout-account/done"
    settings.STRIPE_CONNECT_REFRESH_URL = "https://app.example/payout-account/refresh"
    return fake_stripe


@pytest.fixture
def winner(make_user):
    return make_user("winner")


def test_post_creates_one_express_account_with_a_link_and_a_second_call_reuses_it(
    fake, winner, client_for
):
    client = client_for(winner)
    # When the user asks for a payout account
    first = client.post(URL)
    # Then Stripe made one Express account for them, with their id in metadata
    assert first.status_code == 200
    body = first.json()
    (account,) = fake.accounts()
    assert body["account_id"] == account["id"]
    assert body["payouts_enabled"] is False
    assert account["type"] == "express"
    assert account["metadata"] == {"user_id": str(winner.pk)}
    assert body["onboarding_url"].endswith(f"/_fake/onboard/{account['id']}")
    # When they ask again (the link expired, say)
    second = client.post(URL)
    # Then the same account comes back with a fresh link, and Stripe made no second account
    assert second.status_code == 200
    assert second.json()["account_id"] == account["id"]
    assert len(fake.accounts()) == 1
    assert fake.stats()["created_per_key"] == {}  # transfers only: no transfer was made
    # And GET shows what Stripe still needs
    status = client.get(URL).json()
    assert status == {
        "account_id": account["id"],
        "payouts_enabled": False,
        "requirements_due": ["business_type", "external_account", "tos_acceptance.date"],
    }
    assert AuditEntry.objects.filter(action="connected_account.open").count() == 1


def test_get_without_an_account_is_a_404_no_payout_account(fake, winner, client_for):
    response = client_for(winner).get(URL)
    assert response.status_code == 404
    assert response.json()["code"] == "no_payout_account"


@pytest.mark.parametrize("method", ["get", "post"])
def test_without_stripe_configured_both_answer_503(settings, winner, client_for, method):
    settings.STRIPE_API_KEY = ""
    response = getattr(client_for(winner), method)(URL)
    assert response.status_code == 503
    assert response.json()["code"] == "stripe_not_configured"
    assert not ConnectedAccount.objects.exists()


def test_anonymous_callers_are_refused(fake, client_for):
    assert client_for().post(URL).status_code in (401, 403)


@pytest.mark.parametrize("fault", ["lost", "timeout"])
def test_a_timeout_or_lost_answer_on_account_create_still_leaves_exactly_one_account(
    fake, winner, client_for, fault
):
    # Given Stripe losing the answer after it made the account (lost), or never answering
    # (timeout, nothing made)
    fake.configure(faults={fault: 1.0}, timeout_seconds=3)
    client = client_for(winner)
    # When the user asks for an account
    failed = client.post(URL)
    # Then they are told to try again; nothing is linked yet
    assert failed.status_code == 503
    assert failed.json()["code"] == "stripe_unavailable"
    assert len(fake.accounts()) == (1 if fault == "lost" else 0)
    assert client.get(URL).status_code == 404
    # When Stripe is back and they try again
    fake.configure(faults={})
    retried = client.post(URL)
    # Then they have exactly one account: the one the lost answer was about, if any
    assert retried.status_code == 200
    (account,) = fake.accounts()
    assert retried.json()["account_id"] == account["id"]
    assert ConnectedAccount.objects.get(user=winner).stripe_account_id == account["id"]
    assert fake.stats()["replays"] == (1 if fault == "lost" else 0)


@pytest.mark.django_db(transaction=True)  # each request on its own connection
def test_two_requests_at_once_make_one_account(fake, winner, client_for):
    fake.configure(latency=0.3)  # both requests reach Stripe while the first one executes
    results = run_together(*[lambda: client_for(winner).post(URL) for _ in range(2)])
    # One may be told to retry (Stripe: same key still executing), never a second account
    assert {r.status_code for r in results} <= {200, 503}
    assert len(fake.accounts()) == 1
    account_id = fake.accounts()[0]["id"]
    assert [r.json()["account_id"] for r in results if r.status_code == 200] in (
        [account_id],
        [account_id, account_id],
    )
    assert client_for(winner).post(URL).json()["account_id"] == account_id


def test_a_creation_older_than_stripes_key_memory_is_looked_up_not_repeated(
    fake, winner, client_for
):
    # Given a creation whose answer was lost a day ago, and Stripe has forgotten the key since
    fake.configure(faults={"lost": 1.0})
    client = client_for(winner)
    assert client.post(URL).status_code == 503
    fake.configure(faults={})
    fake.state.keys.clear()
    ConnectedAccount.objects.filter(user=winner).update(
        created_at=timezone.now() - timedelta(hours=24)
    )
    # When the user asks again
    response = client.post(URL)
    # Then the account is found by its metadata, and no second one is made
    assert response.status_code == 200
    (account,) = fake.accounts()
    assert response.json()["account_id"] == account["id"]


def test_onboarding_enables_payouts_through_the_webhook(fake, winner, client, client_for):
    # Given a user who opened an account
    opened = client_for(winner).post(URL).json()
    # When they finish Stripe's onboarding (the fake's link stands for Stripe's pages) and
    # Stripe sends account.updated
    with urlopen(opened["onboarding_url"], timeout=5) as page:  # noqa: S310 (the fake's URL)
        assert page.status == 200
    (event,) = fake.events()
    assert event["type"] == "account.updated"
    assert webhook_post(client, event).status_code == 200
    # Then their account shows payouts enabled and nothing left to fill in
    status = client_for(winner).get(URL).json()
    assert status == {
        "account_id": opened["account_id"],
        "payouts_enabled": True,
        "requirements_due": [],
    }


def test_an_event_that_arrives_before_the_create_answer_is_matched_by_metadata(
    fake, winner, client, client_for
):
    # Given a creation whose answer was lost: the account exists at Stripe, not linked here
    fake.configure(faults={"lost": 1.0})
    assert client_for(winner).post(URL).status_code == 503
    fake.configure(faults={})
    (account,) = fake.accounts()
    # When the user finishes onboarding and Stripe's event arrives first
    event = fake.account_update(account["id"], payouts_enabled=True)
    assert webhook_post(client, event).status_code == 200
    # Then the account is linked by its metadata, enabled, and a later call reuses it
    row = ConnectedAccount.objects.get(user=winner)
    assert (row.stripe_account_id, row.payouts_enabled) == (account["id"], True)
    again = client_for(winner).post(URL).json()
    assert (again["account_id"], again["payouts_enabled"]) == (account["id"], True)
    assert len(fake.accounts()) == 1
