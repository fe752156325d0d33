"""Payouts in the Django admin: progress, entries by status, actions through the services."""

import pytest
from django.test import Client

from challenges.models import Challenge
from core.models import AuditEntry
from payouts.models import PayoutJob
from payouts.services.jobs import challenge_resolve
from proof.seeding import challenge_seed
from tests.payouts.helpers import run_job_inline
from users.services import user_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_user(db):
    return user_create(
        username="boss", password="pw-for-tests-1", is_superuser=True, validate=False
    )


@pytest.fixture
def browser(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def half_done_job(admin_user, settings):
    settings.PAYOUT_BATCH_SIZE = 2
    challenge = challenge_seed(stakers=8)
    job = challenge_resolve(challenge_id=challenge.pk, result="draw", actor=admin_user)
    run_job_inline(job.pk, max_batches=2)
    return job


def test_job_list_shows_progress_and_detail_has_a_live_progress_bar(browser, half_done_job):
    listing = browser.get("/admin/payouts/payoutjob/")
    assert listing.status_code == 200
    assert b'<progress max="100" value="50.0"></progress> 50.0%' in listing.content
    detail = browser.get(f"/admin/payouts/payoutjob/{half_done_job.pk}/change/")
    assert detail.status_code == 200
    page = detail.content.decode()
    assert 'id="payout-progress-bar" max="100" value="50.0"' in page
    assert f'data-url="/api/admin/payout-jobs/{half_done_job.pk}/"' in page
    assert "setInterval(refresh, 2000)" in page
    # The URL the page polls answers the admin's own session
    assert browser.get(f"/api/admin/payout-jobs/{half_done_job.pk}/").json()["completed"] == 4


def test_entries_filter_by_status(browser, half_done_job):
    pending = browser.get("/admin/payouts/payoutentry/", {"status__exact": "pending"})
    assert pending.status_code == 200
    assert pending.context["cl"].result_count == 4
    assert browser.get("/admin/payouts/account/").status_code == 200
    assert browser.get("/admin/payouts/transfer/").status_code == 200


def test_job_actions_call_the_services(browser, half_done_job, admin_user):
    def act(action):
        return browser.post(
            "/admin/payouts/payoutjob/",
            {"action": action, "_selected_action": [half_done_job.pk]},
            follow=True,
        )

    act("pause")
    half_done_job.refresh_from_db()
    assert half_done_job.status == "paused"
    refused = act("pause")
    assert b"cannot be paused" in refused.content
    act("cancel")
    half_done_job.refresh_from_db()
    assert (half_done_job.status, half_done_job.cancelled_count) == ("cancelled", 4)
    assert AuditEntry.objects.filter(actor=admin_user, action="payout_job.cancel").exists()


def test_challenge_admin_resolves_through_the_service(browser, admin_user):
    challenge = challenge_seed(stakers=4)
    response = browser.post(
        "/admin/challenges/challenge/",
        {"action": "resolve_challenged_won", "_selected_action": [challenge.pk]},
        follow=True,
    )
    assert response.status_code == 200
    challenge.refresh_from_db()
    assert (challenge.status, challenge.result) == (Challenge.Status.RESOLVING, "challenged_won")
    assert PayoutJob.objects.get(challenge=challenge).created_by == admin_user
    assert AuditEntry.objects.filter(actor=admin_user, action="challenge.resolve").exists()
