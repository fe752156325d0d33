import pytest
from django.contrib.auth import get_user_model

from core.models import AuditEntry
from ledger.models import Deposit, Transfer
from ledger.selectors import wallet_get
from ledger.services import wallet_deposit
from tests.conftest import run_together

pytestmark = pytest.mark.django_db


def _deposit(client, user_id, amount, key="grant-1"):
    return client.post(
        f"/api/admin/wallets/{user_id}/deposit/",
        {"amount": amount, "idempotency_key": key},
        format="json",
    )


def test_staff_deposit_credits_the_wallet_once_per_key(client_for, staff, make_user):
    # Given a user with an empty wallet
    user = make_user("heidi")
    client = client_for(staff)
    # When staff deposit twice with the same idempotency key (a retry after a timeout)
    first = _deposit(client, user.pk, 2_500)
    second = _deposit(client, user.pk, 2_500)
    # Then the wallet was credited once, the retry returns the first deposit and says so
    assert first.status_code == second.status_code == 200
    body = second.json()
    assert body["deposit_id"] == first.json()["deposit_id"]
    assert (body["user_id"], body["amount"], body["balance"]) == (user.pk, 2_500, 2_500)
    assert (first.json()["posted"], body["posted"]) == (True, False)
    assert wallet_get(user_id=user.pk).balance == 2_500
    assert AuditEntry.objects.filter(action="wallet.deposit", actor=staff).count() == 1
    # And the user sees it in their wallet
    wallet = client_for(user).get("/api/wallet/").json()
    assert wallet["balance"] == 2_500
    assert [(t["kind"], t["amount"], t["direction"]) for t in wallet["transfers"]] == [
        ("deposit", 2_500, "in")
    ]


@pytest.mark.django_db(transaction=True)
def test_a_double_submitted_deposit_pays_once(make_user, staff):
    # Given a user, when the same deposit arrives four times at the same instant
    user = make_user("olga")
    results = run_together(
        *[
            lambda: (
                wallet_deposit(
                    user_id=user.pk, amount=700, actor=staff, idempotency_key="double-submit"
                ).replayed
            )
            for _ in range(4)
        ]
    )
    # Then one was paid and three answered with it
    assert sorted(results) == [False, True, True, True]
    assert wallet_get(user_id=user.pk).balance == 700
    assert Deposit.objects.count() == 1
    assert Transfer.objects.filter(kind="deposit").count() == 1


@pytest.mark.parametrize(("amount", "other_user"), [(2_501, False), (2_500, True)])
def test_a_key_reused_for_another_deposit_is_a_409(
    client_for, staff, make_user, amount, other_user
):
    user, other = make_user("paul"), make_user("quinn")
    client = client_for(staff)
    assert _deposit(client, user.pk, 2_500).status_code == 200
    response = _deposit(client, other.pk if other_user else user.pk, amount)
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_key_reused"
    assert wallet_get(user_id=user.pk).balance == 2_500
    assert wallet_get(user_id=other.pk).balance == 0


def test_the_idempotency_key_is_required(client_for, staff, make_user):
    user = make_user("rita")
    response = client_for(staff).post(
        f"/api/admin/wallets/{user.pk}/deposit/", {"amount": 5}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_input"
    assert "idempotency_key" in response.json()["errors"]
    assert not Deposit.objects.exists()


def test_staff_cannot_deposit_to_themselves(client_for, staff):
    response = _deposit(client_for(staff), staff.pk, 100)
    assert response.status_code == 403
    assert response.json()["code"] == "self_deposit"
    assert wallet_get(user_id=staff.pk).balance == 0


def test_deposits_are_capped_per_deposit_and_per_day(client_for, staff, make_user, settings):
    settings.DEPOSIT_MAX_AMOUNT = 1_000
    settings.DEPOSIT_DAILY_LIMIT = 2_500
    user = make_user("sam")
    client = client_for(staff)
    too_big = _deposit(client, user.pk, 1_001, key="a")
    assert (too_big.status_code, too_big.json()["code"]) == (400, "deposit_too_large")
    assert _deposit(client, user.pk, 1_000, key="b").status_code == 200
    assert _deposit(client, user.pk, 1_000, key="c").status_code == 200
    over = _deposit(client, user.pk, 600, key="d")
    assert (over.status_code, over.json()["code"]) == (409, "deposit_daily_limit")
    # A retry of a deposit already made is still answered: it moves nothing new.
    assert _deposit(client, user.pk, 1_000, key="c").json()["posted"] is False
    assert wallet_get(user_id=user.pk).balance == 2_000


def test_superusers_are_bound_by_the_caps_unless_they_are_unset(client_for, make_user, settings):
    settings.DEPOSIT_MAX_AMOUNT = 1_000
    root = get_user_model().objects.create_superuser("root", password="x")
    user = make_user("tess")
    refused = _deposit(client_for(root), user.pk, 5_000, key="big")
    assert (refused.status_code, refused.json()["code"]) == (400, "deposit_too_large")
    settings.DEPOSIT_MAX_AMOUNT = None
    settings.DEPOSIT_DAILY_LIMIT = None
    assert _deposit(client_for(root), user.pk, 5_000, key="big").status_code == 200
    assert wallet_get(user_id=user.pk).balance == 5_000


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
    response = _deposit(client_for(staff), user.pk, amount)
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
    response = _deposit(client_for(staff), 999999, 5)
    assert response.status_code == 404
    assert response.json()["code"] == "user_not_found"
    assert not Transfer.objects.exists()


def test_non_staff_cannot_deposit(client_for, make_user):
    user = make_user("mallory")
    response = _deposit(client_for(user), user.pk, 1_000)
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert wallet_get(user_id=user.pk).balance == 0
    anonymous = _deposit(client_for(), user.pk, 1_000)
    assert anonymous.status_code == 401
    assert not Transfer.objects.exists()
