"""Tokens: hashed at rest, expiring, revocable; a password change revokes them all."""

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone
from knox.models import AuthToken

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests-1"  # make_user's


def _token(client, username, password=PASSWORD) -> str:
    response = client.post(
        "/api/auth/token/", {"username": username, "password": password}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()["token"]


def _wallet_status(client_for, token: str) -> int:
    client = client_for()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.get("/api/wallet/").status_code


def test_tokens_are_stored_hashed_and_expire_after_the_ttl(client_for, make_user):
    make_user("uma")
    body = (
        client_for()
        .post("/api/auth/token/", {"username": "uma", "password": PASSWORD}, format="json")
        .json()
    )
    token = body["token"]
    # Only a digest is stored: the token itself appears in no column.
    stored = AuthToken.objects.get()
    assert token not in (stored.digest, stored.token_key)
    assert stored.token_key == token[: len(stored.token_key)]
    assert len(token) > 30
    # The answer says when it stops working: TOKEN_TTL from now.
    ttl = timedelta(seconds=settings.TOKEN_TTL)
    assert abs(stored.expiry - (timezone.now() + ttl)) < timedelta(minutes=1)
    assert body["expiry"]
    assert _wallet_status(client_for, token) == 200


def test_an_expired_token_is_refused(client_for, make_user):
    make_user("vera")
    token = _token(client_for(), "vera")
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.TOKEN_TTL + 60)):
        assert _wallet_status(client_for, token) == 401
    # And it is gone: an expired token is deleted when it is next presented.
    assert not AuthToken.objects.exists()


def test_logout_revokes_this_token_only(client_for, make_user):
    make_user("wade")
    first, second = _token(client_for(), "wade"), _token(client_for(), "wade")
    client = client_for()
    client.credentials(HTTP_AUTHORIZATION=f"Token {first}")
    assert client.post("/api/auth/logout/").status_code == 204
    assert _wallet_status(client_for, first) == 401
    assert _wallet_status(client_for, second) == 200


def test_logout_all_revokes_every_token(client_for, make_user):
    make_user("xena")
    tokens = [_token(client_for(), "xena") for _ in range(3)]
    client = client_for()
    client.credentials(HTTP_AUTHORIZATION=f"Token {tokens[0]}")
    assert client.post("/api/auth/logout-all/").status_code == 204
    assert [_wallet_status(client_for, token) for token in tokens] == [401, 401, 401]


def test_a_password_change_revokes_every_token(client_for, make_user):
    make_user("yuri")
    tokens = [_token(client_for(), "yuri") for _ in range(2)]
    client = client_for()
    client.credentials(HTTP_AUTHORIZATION=f"Token {tokens[0]}")
    response = client.post(
        "/api/auth/password/",
        {"old_password": PASSWORD, "new_password": "a-new-long-pass-phrase"},
        format="json",
    )
    assert response.status_code == 204
    assert [_wallet_status(client_for, token) for token in tokens] == [401, 401]
    # The old password no longer works, the new one does.
    refused = client_for().post(
        "/api/auth/token/", {"username": "yuri", "password": PASSWORD}, format="json"
    )
    assert refused.json()["code"] == "invalid_credentials"
    assert _token(client_for(), "yuri", "a-new-long-pass-phrase")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            {"old_password": "wrong", "new_password": "a-new-long-pass-phrase"},
            "invalid_credentials",
        ),
        ({"old_password": PASSWORD, "new_password": "123"}, "weak_password"),
        ({"old_password": PASSWORD}, "invalid_input"),
    ],
)
def test_a_refused_password_change_changes_nothing(client_for, make_user, body, code):
    make_user("zack")
    token = _token(client_for(), "zack")
    client = client_for()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = client.post("/api/auth/password/", body, format="json")
    assert (response.status_code, response.json()["code"]) == (400, code)
    assert _wallet_status(client_for, token) == 200
    assert _token(client_for(), "zack")


@pytest.mark.parametrize(
    "header", ["Token", "Token a b", "Token " + "x" * 80, "Token \u00ff\u00fe", "Bearer nothing"]
)
def test_bad_token_headers_are_a_401_never_a_500(client_for, header):
    client = client_for()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/wallet/")
    assert response.status_code == 401
    assert response.json()["code"] in {"authentication_failed", "not_authenticated"}
