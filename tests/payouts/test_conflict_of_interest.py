"""Nobody decides a challenge they have a stake in: not its creator, not the user it
challenges, not anyone who staked on it; superusers included, in the API and the admin."""

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from challenges.models import Challenge
from challenges.services import challenges_sweep_deadlines, stake_place
from core.models import AuditEntry
from payouts.models import PayoutJob
from tests.challenges.helpers import active_challenge
from users.roles import STAFF_ROLES, staff_role_grant

pytestmark = pytest.mark.django_db

ROLES = ("creator", "challenged", "staker")
# action -> (API address, API body, the admin's confirmation page form)
ACTIONS = {
    "resolve": (
        "/api/admin/challenges/{}/resolve/",
        {"result": "draw"},
        {"result": "draw", "rail": "ledger", "note": "Looks even."},
    ),
    "cancel": ("/api/admin/challenges/{}/cancel/", {}, {"note": "Not fair."}),
}


@pytest.fixture
def conflicted(make_user):
    """Build a challenge and return (challenge, the user in ``role``), made staff with every
    role, and (for resolving) moved to pending_admin."""

    def build(role: str, action: str, *, superuser: bool = False):
        challenge, (challenger, challenged, staker) = active_challenge(make_user, stakers=1)
        user = {"creator": challenger, "challenged": challenged, "staker": staker}[role]
        for group in STAFF_ROLES:
            staff_role_grant(user=user, role=group)
        if superuser:
            user.is_superuser = True
            user.save(update_fields=["is_superuser"])
        if action == "resolve":
            with time_machine.travel(challenge.due_date):
                challenges_sweep_deadlines()
        challenge.refresh_from_db()
        return challenge, user

    return build


def _unchanged(challenge: Challenge) -> None:
    status = challenge.status
    challenge.refresh_from_db()
    assert challenge.status == status
    assert not PayoutJob.objects.filter(challenge=challenge).exists()
    assert not AuditEntry.objects.filter(
        target_type="challenge", target_id=str(challenge.pk)
    ).exists()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("superuser", [False, True])
def test_the_api_refuses_a_participant(client_for, conflicted, role, action, superuser):
    challenge, user = conflicted(role, action, superuser=superuser)
    url, body, _ = ACTIONS[action]
    response = client_for(user).post(url.format(challenge.pk), body, format="json")
    assert (response.status_code, response.json()["code"]) == (403, "conflict_of_interest")
    _unchanged(challenge)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", ACTIONS)
def test_the_admin_refuses_a_participant(conflicted, role, action):
    challenge, user = conflicted(role, action, superuser=True)
    browser = Client()
    browser.force_login(user)
    # The console's confirmation page posts to the same service, which refuses
    response = browser.post(
        f"/admin/challenges/challenge/{challenge.pk}/{action}/", ACTIONS[action][2]
    )
    assert response.status_code == 200
    assert "someone else must decide it" in response.content.decode()
    _unchanged(challenge)


def test_someone_without_a_stake_decides(client_for, make_user, staff):
    challenge, _ = active_challenge(make_user, stakers=1)
    with time_machine.travel(challenge.due_date):
        challenges_sweep_deadlines()
    response = client_for(staff).post(
        f"/api/admin/challenges/{challenge.pk}/resolve/", {"result": "draw"}, format="json"
    )
    assert response.status_code == 202


def test_a_resolver_who_stakes_later_is_refused_too(client_for, make_user, staff):
    # Staff are users too: a resolver who staked on an open challenge may not cancel it.
    challenge, _ = active_challenge(make_user)
    from ledger.services import wallet_deposit

    wallet_deposit(user_id=staff.pk, amount=50, actor=None, idempotency_key="staff-fund")
    assert timezone.now() < challenge.due_date
    stake_place(user=staff, challenge_id=challenge.pk, side="yes", amount=50)
    response = client_for(staff).post(f"/api/admin/challenges/{challenge.pk}/cancel/")
    assert (response.status_code, response.json()["code"]) == (403, "conflict_of_interest")
    _unchanged(challenge)
