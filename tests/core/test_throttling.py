"""Throttles (counted in the shared Redis cache) and the admin login lockout (django-axes)."""

import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from challenges.models import Challenge
from tests.challenges.helpers import open_challenge

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests-1"  # make_user's


def _client(ip: str, user=None) -> APIClient:
    client = APIClient(REMOTE_ADDR=ip)
    if user is not None:
        client.force_authenticate(user)
    return client


def _guess(ip: str, username: str, password: str = "wrong-guess"):
    return _client(ip).post(
        "/api/auth/token/", {"username": username, "password": password}, format="json"
    )


def _assert_throttled(response) -> None:
    assert response.status_code == 429
    body = response.json()
    assert body["code"] == "throttled"
    assert 0 < body["retry_after"] <= 60
    assert int(response["Retry-After"]) == body["retry_after"]


def test_a_password_brute_force_is_throttled(make_user, throttle_rates):
    # Given a user and a limit of 5 tries a minute
    throttle_rates(auth="5/min")
    make_user("target")
    # When someone guesses from one address: five wrong answers, then the door shuts
    answers = [_guess("203.0.113.1", "target").status_code for _ in range(5)]
    assert answers == [400] * 5
    _assert_throttled(_guess("203.0.113.1", "target"))
    # Even the right password is not checked (not hashed) until the window passes
    _assert_throttled(_guess("203.0.113.1", "target", PASSWORD))


def test_guessing_one_account_from_many_addresses_is_throttled(make_user, throttle_rates):
    throttle_rates(auth="5/min")
    make_user("target")
    answers = [_guess(f"198.51.100.{i}", "target").status_code for i in range(5)]
    assert answers == [400] * 5
    _assert_throttled(_guess("198.51.100.99", "TARGET"))
    # Another account from a fresh address is not affected
    make_user("bystander")
    assert _guess("198.51.100.100", "bystander", PASSWORD).status_code == 200


def test_one_address_trying_many_accounts_is_throttled(throttle_rates):
    throttle_rates(auth="5/min")
    answers = [_guess("192.0.2.7", f"nobody{i}").status_code for i in range(5)]
    assert answers == [400] * 5
    _assert_throttled(_guess("192.0.2.7", "nobody-else"))


def test_registration_is_throttled_per_address(throttle_rates):
    throttle_rates(auth="3/min")
    client = _client("192.0.2.50")
    answers = [
        client.post(
            "/api/auth/register/",
            {"username": f"new{i}", "password": "a-long-pass-phrase"},
            format="json",
        ).status_code
        for i in range(3)
    ]
    assert answers == [201] * 3
    _assert_throttled(
        client.post(
            "/api/auth/register/",
            {"username": "new9", "password": "a-long-pass-phrase"},
            format="json",
        )
    )


def test_x_forwarded_for_cannot_pick_a_fresh_address(throttle_rates):
    # No proxy is trusted by default (TRUSTED_PROXY_COUNT=0): the header changes nothing.
    throttle_rates(auth="2/min")
    for i in range(2):
        _client("192.0.2.80").post(
            "/api/auth/token/",
            {"username": f"x{i}", "password": "p"},
            format="json",
            HTTP_X_FORWARDED_FOR=f"10.0.0.{i}",
        )
    response = _client("192.0.2.80").post(
        "/api/auth/token/",
        {"username": "x9", "password": "p"},
        format="json",
        HTTP_X_FORWARDED_FOR="10.0.0.99",
    )
    _assert_throttled(response)


def test_stakes_are_throttled_per_user(make_user, throttle_rates):
    throttle_rates(money="2/min")
    creator = make_user(balance=1_000)
    challenges = [open_challenge(creator) for _ in range(3)]
    staker, other = make_user(balance=1_000), make_user(balance=1_000)
    client = _client("192.0.2.90", staker)

    def stake(client, challenge):
        return client.post(
            f"/api/challenges/{challenge.pk}/stakes/", {"side": "no", "amount": 10}, format="json"
        )

    assert [stake(client, c).status_code for c in challenges[:2]] == [201, 201]
    _assert_throttled(stake(client, challenges[2]))
    assert stake(_client("192.0.2.90", other), challenges[2]).status_code == 201
    assert not challenges[2].stakes.filter(user=staker).exists()


def test_challenge_creation_is_throttled_per_user_and_listing_is_not(make_user, throttle_rates):
    throttle_rates(create="2/hour")
    user = make_user()
    client = _client("192.0.2.91", user)
    body = {"title": "Rain?", "due_date": (timezone.now() + timedelta(hours=1)).isoformat()}
    assert [client.post("/api/challenges/", body, format="json").status_code for _ in "ab"] == [
        201,
        201,
    ]
    response = client.post("/api/challenges/", body, format="json")
    assert response.status_code == 429
    assert int(response["Retry-After"]) <= 3600
    assert Challenge.objects.filter(challenger=user).count() == 2
    assert client.get("/api/challenges/").status_code == 200


def test_staff_endpoints_are_throttled_per_staff_user(staff, throttle_rates):
    throttle_rates(staff="3/min")
    client = _client("192.0.2.92", staff)
    assert [client.get("/api/admin/payout-jobs/").status_code for _ in range(3)] == [200] * 3
    _assert_throttled(client.get("/api/admin/payout-jobs/"))


def test_the_admin_login_locks_out_after_repeated_failures(make_user, settings):
    # Given a staff member and django-axes' limit of 5 failures
    settings.AXES_FAILURE_LIMIT = 5
    username = f"admin-{uuid.uuid4().hex[:8]}"
    make_user(username, staff=True)
    client = Client(REMOTE_ADDR=f"10.{uuid.uuid4().int % 250}.0.1")

    def login(password: str):
        return client.post(
            "/admin/login/?next=/admin/", {"username": username, "password": password}
        )

    # When wrong passwords are tried, the login page refuses four, and the fifth locks
    assert [login("wrong").status_code for _ in range(5)] == [200] * 4 + [429]
    # Then the account is locked: even the right password gets 429, and no session
    locked = login(PASSWORD)
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
