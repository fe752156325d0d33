import pytest

from core.models import AuditEntry
from ledger.models import Transfer
from ledger.selectors import wallet_get

pytestmark = pytest.mark.django_db


def test_staff_deposit_credits_the_wallet_once_per_key(client_for, staff, make_user):
    # Given a user with an empty wallet
    user = make_user("heidi")
    client = client_for(staff)
    # When staff deposit twice with the same idempotency key
    for _ in range(2):
        response = client.post(
            f"/api/admin/wallets/{user.pk}/deposit/",
            {"amount": 2_500, "idempotency_key": "grant-1"},
            format="json",
        )
        assert response.status_code == 200
    # Then the wallet was credited once, the second answer says so, and it was audited once
    assert response.json() == {"user_id": user.pk, "balance": 2_500, "posted": False}
    assert wallet_get(user_id=user.pk).balance == 2_500
    assert AuditEntry.objects.filter(action="wallet.deposit", actor=staff).count() == 1
    # And the user sees it in their wallet
    wallet = client_for(user).get("/api/wallet/").json()
    assert wallet["balance"] == 2_500
    assert [(t["kind"], t["amount"], t["direction"]) for t in wallet["transfers"]] == [
        ("deposit", 2_500, "in")
    ]


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        (0, "invalid_amount"),
        (-5, "invalid_amount"),
        (1.5, "invalid_amount"),
        (10.0, "invalid_amount"),
        ("100", "invalid_amount"),
        (True, "invalid_amount"),
        (None, "invalid_amount"),
        (10**16, "invalid_amount"),
    ],
)
def test_deposit_refuses_bad_amounts_and_changes_nothing(
    client_for, staff, make_user, amount, code
):
    user = make_user("ivan")
    response = client_for(staff).post(
        f"/api/admin/wallets/{user.pk}/deposit/", {"amount": amount}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert wallet_get(user_id=user.pk).balance == 0
    assert not Transfer.objects.exists()


def test_deposit_without_amount_is_invalid_input(client_for, staff, make_user):
    user = make_user("judy")
    response = client_for(staff).post(f"/api/admin/wallets/{user.pk}/deposit/", {}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_input"


def test_deposit_to_an_unknown_user_is_a_404(client_for, staff):
    response = client_for(staff).post(
        "/api/admin/wallets/999999/deposit/", {"amount": 5}, format="json"
    )
    assert response.status_code == 404
    assert response.json()["code"] == "user_not_found"
    assert not Transfer.objects.exists()


def test_non_staff_cannot_deposit(client_for, make_user):
    user = make_user("mallory")
    response = client_for(user).post(
        f"/api/admin/wallets/{user.pk}/deposit/", {"amount": 1_000}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert wallet_get(user_id=user.pk).balance == 0
    anonymous = client_for().post(
        f"/api/admin/wallets/{user.pk}/deposit/", {"amount": 1_000}, format="json"
    )
    assert anonymous.status_code in (401, 403)
    assert not Transfer.objects.exists()
