import pytest
from django.contrib.auth import get_user_model

from ledger.models import Account

pytestmark = pytest.mark.django_db

User = get_user_model()


def test_register_creates_the_user_and_an_empty_wallet(client_for):
    response = client_for().post(
        "/api/auth/register/",
        {"username": "carol", "password": "a-long-pass-phrase"},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["username"] == "carol"
    wallet = Account.objects.get(kind="user_wallet", user_id=body["id"])
    assert wallet.balance == 0


def test_token_then_wallet(client_for):
    client = client_for()
    client.post(
        "/api/auth/register/", {"username": "dave", "password": "a-long-pass-phrase"}, format="json"
    )
    token = client.post(
        "/api/auth/token/", {"username": "dave", "password": "a-long-pass-phrase"}, format="json"
    ).json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    wallet = client.get("/api/wallet/").json()
    assert wallet == {"balance": 0, "currency": "coin", "transfers": []}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "invalid_input"),
        ({"username": "erin"}, "invalid_input"),
        ({"password": "a-long-pass-phrase"}, "invalid_input"),
        ({"username": 5, "password": "a-long-pass-phrase"}, "invalid_input"),
        ({"username": "bad name!", "password": "a-long-pass-phrase"}, "invalid_input"),
        ({"username": "erin", "password": "123"}, "weak_password"),
        ({"username": "erin", "password": ["a-long-pass-phrase"]}, "invalid_input"),
    ],
)
def test_register_refuses_bad_input_and_creates_nothing(client_for, body, code):
    response = client_for().post("/api/auth/register/", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert not User.objects.exists()
    assert not Account.objects.exists()


def test_register_refuses_a_taken_username(client_for, make_user):
    make_user("frank")
    response = client_for().post(
        "/api/auth/register/",
        {"username": "frank", "password": "a-long-pass-phrase"},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["code"] == "username_taken"
    assert User.objects.filter(username="frank").count() == 1


def test_malformed_json_is_a_400_not_a_500(client_for):
    response = client_for().post(
        "/api/auth/register/", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_request"


@pytest.mark.parametrize(
    "body",
    [
        {"username": "grace", "password": "wrong-password"},
        {"username": "nobody", "password": "pw-for-tests-1"},
    ],
)
def test_token_refuses_bad_credentials(client_for, make_user, body):
    make_user("grace")
    response = client_for().post("/api/auth/token/", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_credentials"


def test_wallet_needs_authentication(client_for):
    response = client_for().get("/api/wallet/")
    assert response.status_code in (401, 403)
    assert response.json()["code"] == "not_authenticated"
