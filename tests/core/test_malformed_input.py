"""Malformed input never reaches a 500: deep JSON, oversized bodies, overflowing totals; and an
unexpected failure is a JSON 500 naming its request id."""

import json

import pytest
from django.db import connection
from rest_framework.test import APIClient

from challenges.models import Challenge
from core.errors import AmountOutOfRange
from ledger.models import Account, Transfer
from ledger.selectors import wallet_get
from ledger.services import TransferSpec, system_account_id, transfers_post
from tests.challenges.helpers import open_challenge

pytestmark = pytest.mark.django_db


def _post_raw(client, url: str, body: str):
    return client.post(url, data=body, content_type="application/json")


@pytest.mark.parametrize("depth", [40, 5_000, 30_000])
@pytest.mark.parametrize("url", ["/api/auth/register/", "/api/auth/token/"])
def test_deeply_nested_json_is_a_400(client_for, url, depth):
    response = _post_raw(client_for(), url, "[" * depth + "]" * depth)
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_request"


def test_deeply_nested_json_inside_a_valid_object_is_a_400(client_for, make_user):
    user = make_user(balance=100)
    challenge = open_challenge(make_user())
    body = '{"side": "no", "amount": ' + "[" * 3_000 + "]" * 3_000 + "}"
    response = _post_raw(client_for(user), f"/api/challenges/{challenge.pk}/stakes/", body)
    assert (response.status_code, response.json()["code"]) == (400, "malformed_request")
    assert not challenge.stakes.exists()


def test_an_oversized_api_body_is_a_413(client_for, settings):
    body = json.dumps({"username": "big", "password": "x" * (settings.API_MAX_BODY_BYTES + 1)})
    response = _post_raw(client_for(), "/api/auth/register/", body)
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"


def test_the_webhook_takes_larger_bodies_up_to_its_own_limit(client_for, settings):
    settings.STRIPE_WEBHOOK_SECRET = "whsec_test"
    larger = json.dumps({"id": "evt_1", "pad": "x" * (settings.API_MAX_BODY_BYTES * 2)})
    response = _post_raw(client_for(), "/api/webhooks/stripe/", larger)
    # Past the size check: refused for its signature, as any unsigned body is.
    assert (response.status_code, response.json()["code"]) == (400, "invalid_signature")
    too_large = "x" * (settings.WEBHOOK_MAX_BODY_BYTES + 1)
    response = _post_raw(client_for(), "/api/webhooks/stripe/", too_large)
    assert (response.status_code, response.json()["code"]) == (413, "request_too_large")


def test_a_stake_that_would_overflow_the_challenge_total_is_a_409(client_for, make_user):
    # Given a challenge whose yes total is a hair below the database's bigint limit
    challenge = open_challenge(make_user())
    Challenge.objects.filter(pk=challenge.pk).update(yes_total=2**63 - 10)
    staker = make_user(balance=100)
    # When a stake would push it over
    response = client_for(staker).post(
        f"/api/challenges/{challenge.pk}/stakes/", {"side": "yes", "amount": 50}, format="json"
    )
    # Then it is refused and nothing of it is written
    assert (response.status_code, response.json()["code"]) == (409, "amount_out_of_range")
    assert not challenge.stakes.exists()
    assert wallet_get(user_id=staker.pk).balance == 100
    assert not Transfer.objects.filter(kind="stake").exists()


def test_a_deposit_that_would_overflow_a_balance_is_a_409(client_for, staff, make_user, settings):
    # Given a wallet funded to just below the bigint limit, with real transfers
    settings.DEPOSIT_MAX_AMOUNT = settings.DEPOSIT_DAILY_LIMIT = None
    user = make_user("rich")
    wallet = wallet_get(user_id=user.pk)
    world = system_account_id(Account.Kind.WORLD)
    transfers_post(
        transfers=[
            TransferSpec(world, wallet.pk, 10**15, "deposit", f"fill:{i}") for i in range(9_223)
        ]
    )
    # When one more large deposit arrives
    response = client_for(staff).post(
        f"/api/admin/wallets/{user.pk}/deposit/",
        {"amount": 10**15, "idempotency_key": "one-too-many"},
        format="json",
    )
    # Then it is a 409 and moved nothing
    assert (response.status_code, response.json()["code"]) == (409, "amount_out_of_range")
    assert wallet_get(user_id=user.pk).balance == 9_223 * 10**15
    with pytest.raises(AmountOutOfRange):
        transfers_post(transfers=[TransferSpec(world, wallet.pk, 10**15, "deposit", "again")])


def test_an_unexpected_error_is_a_json_500_with_the_request_id(settings):
    settings.ROOT_URLCONF = "tests.core.crash_urls"
    client = APIClient(raise_request_exception=False)
    response = client.get("/api/test-crash/", HTTP_X_REQUEST_ID="req-abc.123")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "code": "internal_error",
        "detail": response.json()["detail"],
        "request_id": "req-abc.123",
    }
    assert response["X-Request-ID"] == "req-abc.123"
    # A request id that could smuggle anything into logs is replaced by a fresh one.
    replaced = client.get("/api/test-crash/", HTTP_X_REQUEST_ID="bad id\r\nx")
    assert replaced.json()["request_id"] != "bad id\r\nx"
    assert replaced["X-Request-ID"] == replaced.json()["request_id"]


def test_database_and_redis_calls_have_timeouts(settings):
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == f"{int(settings.DATABASE_STATEMENT_TIMEOUT)}s"
    options = settings.CACHES["default"]["OPTIONS"]
    assert options["socket_timeout"] == settings.REDIS_SOCKET_TIMEOUT > 0
    transport = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    assert transport["socket_timeout"] == settings.REDIS_SOCKET_TIMEOUT
    assert settings.CELERY_REDIS_SOCKET_TIMEOUT == settings.REDIS_SOCKET_TIMEOUT
