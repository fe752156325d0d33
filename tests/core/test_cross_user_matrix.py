"""Every endpoint that takes an object id, called by a user who does not own the object and
by staff without the permission it needs: refused, and nothing changed.

Two endpoints with ids are open to every signed-in user by design and so are not here:
reading a challenge (``GET /api/challenges/{id}/``) and staking on one
(``POST /api/challenges/{id}/stakes/``); whose money moves there is the caller's own.
"""

import pytest
import time_machine

from challenges.models import Challenge
from challenges.services import challenges_sweep_deadlines
from core.models import AuditEntry, DeadLetter
from ledger.models import Account, Deposit, Transfer
from notifications.models import Notification
from payouts.models import PayoutJob
from payouts.services.jobs import challenge_resolve
from tests.challenges.helpers import active_challenge, open_challenge
from users.roles import STAFF_ROLES, staff_role_grant

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_user, staff):
    """One object of every kind an endpoint takes by id, each owned by ``owner``."""
    owner = make_user("owner", balance=1_000)
    challenged = open_challenge(make_user(balance=100), challenged=owner)
    due, _ = active_challenge(make_user, stakers=1)
    with time_machine.travel(due.due_date):
        challenges_sweep_deadlines()
    resolved, _ = active_challenge(make_user, stakers=1)
    with time_machine.travel(resolved.due_date):
        challenges_sweep_deadlines()
    job = challenge_resolve(challenge_id=resolved.pk, result="draw", actor=staff)
    notification = Notification.objects.create(
        user=owner, kind="test", title="yours", body="", dedup_key="matrix:1"
    )
    letter = DeadLetter.objects.create(
        task_id="matrix-1",
        task_name="payouts.tasks.payout_batch_ledger_task",
        error="x",
        attempts=6,
    )
    return {
        "owner": owner,
        "challenged": challenged,
        "due": due,
        "job": job,
        "notification": notification,
        "letter": letter,
    }


# (method, url naming the object, the permission staff need, or None: the owner only). The
# evidence of a challenge is its parties' (``owner`` is the challenged user) or deciding staff's.
ENDPOINTS = [
    ("post", "/api/challenges/{challenged}/decline/", None),
    ("post", "/api/challenges/{challenged}/evidence/", "challenges.resolve_challenge"),
    ("post", "/api/notifications/{notification}/read/", None),
    ("post", "/api/admin/wallets/{owner}/deposit/", "ledger.add_deposit"),
    ("post", "/api/admin/challenges/{due}/resolve/", "challenges.resolve_challenge"),
    ("post", "/api/admin/challenges/{challenged}/cancel/", "challenges.cancel_challenge"),
    ("get", "/api/admin/payout-jobs/{job}/", "payouts.view_payoutjob"),
    ("get", "/api/admin/payout-jobs/{job}/entries/", "payouts.view_payoutjob"),
    ("post", "/api/admin/payout-jobs/{job}/pause/", "payouts.pause_payoutjob"),
    ("post", "/api/admin/payout-jobs/{job}/resume/", "payouts.resume_payoutjob"),
    ("post", "/api/admin/payout-jobs/{job}/cancel/", "payouts.cancel_payoutjob"),
    ("post", "/api/admin/payout-jobs/{job}/retry-failed/", "payouts.retry_payoutjob"),
    ("post", "/api/admin/dead-letters/{letter}/replay/", "core.replay_deadletter"),
]
BODIES = {
    "deposit": {"amount": 10, "idempotency_key": "matrix"},
    "resolve": {"result": "draw"},
    "evidence": {"evidence": "I was there."},
}


def _snapshot() -> tuple:
    return (
        list(
            Challenge.objects.order_by("id").values_list(
                "id", "status", "result", "evidence", "admin_notes"
            )
        ),
        list(PayoutJob.objects.order_by("id").values_list("id", "status")),
        list(Notification.objects.order_by("id").values_list("id", "read_at")),
        list(DeadLetter.objects.order_by("id").values_list("id", "status")),
        list(Account.objects.order_by("id").values_list("id", "balance")),
        Transfer.objects.count(),
        Deposit.objects.count(),
        AuditEntry.objects.count(),
    )


def _staff_without(make_user, perm: str | None):
    """A staff member in every role that does not grant ``perm`` (none at all for owner-only
    endpoints)."""
    user = make_user(staff=True)
    for role, perms in STAFF_ROLES.items():
        if perm is not None and perm not in perms:
            staff_role_grant(user=user, role=role)
    return user


@pytest.mark.parametrize(("method", "url", "perm"), ENDPOINTS, ids=[e[1] for e in ENDPOINTS])
@pytest.mark.parametrize("caller", ["another_user", "staff_without_permission"])
def test_refused_and_nothing_changed(client_for, make_user, world, method, url, perm, caller):
    ids = {name: obj.pk for name, obj in world.items()}
    user = make_user() if caller == "another_user" else _staff_without(make_user, perm)
    if perm is not None:
        assert not user.has_perm(perm)
    body = next((b for word, b in BODIES.items() if f"/{word}/" in url), None)
    before = _snapshot()
    response = getattr(client_for(user), method)(url.format(**ids), body, format="json")
    # Owner-only objects answer as if they did not exist (a 404 reveals nothing) or 403.
    expected = {403, 404} if perm is None else {403}
    assert response.status_code in expected, response.content
    assert response.json()["code"] in {
        "permission_denied",
        "not_found",
        "notification_not_found",
        "not_challenged_user",
        "not_a_party",
    }
    assert _snapshot() == before
