"""The staff console in the Django admin: challenge page, resolve and cancel confirmations
with their settlement preview, the job page and its controls, entries, connected accounts."""

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from challenges.models import Challenge
from core.models import AuditEntry, DeadLetter
from core.services import dead_letter_record
from payouts.models import ConnectedAccount, PayoutJob
from payouts.services.jobs import challenge_resolve
from payouts.services.stripe_rail import payout_batch_stripe
from proof.seeding import challenge_seed
from tests.payouts.helpers import expected_amounts, run_job_inline
from tests.payouts.test_stripe_rail import stripe_job
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


def test_job_list_shows_progress_and_detail_is_live(browser, half_done_job):
    listing = browser.get("/admin/payouts/payoutjob/")
    assert listing.status_code == 200
    assert b'<progress max="100" value="50.0"></progress> 50.0%' in listing.content
    detail = browser.get(f"/admin/payouts/payoutjob/{half_done_job.pk}/change/")
    assert detail.status_code == 200
    page = detail.content.decode()
    assert 'id="payout-progress-bar" max="100" value="50.0"' in page
    assert f'data-url="/api/admin/payout-jobs/{half_done_job.pk}/"' in page
    assert "/static/payouts/job_live.js" in page
    # Counts by status: completed from the counter, the rest counted (capped)
    assert 'class="count-completed">4<' in page
    assert 'class="count-pending">4<' in page
    # Controls for a running job: pause and cancel shown, resume hidden
    assert 'data-states="running" class="job-control"><a' in page
    assert 'data-states="paused" class="job-control" hidden>' in page
    # The URL the page polls answers the admin's own session
    assert browser.get(f"/api/admin/payout-jobs/{half_done_job.pk}/").json()["completed"] == 4


def test_job_page_script_is_a_static_file_that_polls_every_2_seconds():
    script = finders.find("payouts/job_live.js")
    assert script
    with open(script) as source:
        assert "setInterval(poll, 2000)" in source.read()


def test_entries_filter_by_job_status_and_failure_reason(browser, half_done_job):
    half_done_job.entries.filter(status="pending").update(
        status="failed", failure_reason="stripe_account_not_connected", last_error="no account"
    )
    base = "/admin/payouts/payoutentry/"
    by_job = browser.get(base, {"job": half_done_job.pk})
    failed = browser.get(base, {"job": half_done_job.pk, "status__exact": "failed"})
    reason = browser.get(
        base, {"job": half_done_job.pk, "failure_reason": "stripe_account_not_connected"}
    )
    assert by_job.context["cl"].result_count == 8
    assert failed.context["cl"].result_count == 4
    assert reason.context["cl"].result_count == 4
    assert "no account" in reason.content.decode()  # the last error is a column
    assert browser.get(base, {"job": 999}).context["cl"].result_count == 0
    assert browser.get("/admin/payouts/account/").status_code == 200
    assert browser.get("/admin/payouts/transfer/").status_code == 200


def test_job_controls_ask_first_then_call_the_services(browser, half_done_job, admin_user):
    pause = f"/admin/payouts/payoutjob/{half_done_job.pk}/control/pause/"
    asked = browser.get(pause)
    assert asked.status_code == 200
    assert "Pause payout job" in asked.content.decode()
    half_done_job.refresh_from_db()
    assert half_done_job.status == "running"  # asking changed nothing
    browser.post(pause, {"confirm": "yes"})
    half_done_job.refresh_from_db()
    assert half_done_job.status == "paused"
    refused = browser.post(pause, {"confirm": "yes"}, follow=True)
    assert "cannot be paused" in refused.content.decode()
    cancel = f"/admin/payouts/payoutjob/{half_done_job.pk}/control/cancel/"
    browser.post(cancel, {"confirm": "yes"})
    half_done_job.refresh_from_db()
    assert (half_done_job.status, half_done_job.cancelled_count) == ("cancelled", 4)
    assert AuditEntry.objects.filter(actor=admin_user, action="payout_job.cancel").exists()
    # No list action moves money: the job list has none
    listing = browser.get("/admin/payouts/payoutjob/")
    assert 'name="action"' not in listing.content.decode()


def test_dead_letter_replay_from_the_job_page(browser, half_done_job, admin_user):
    dead_letter_record(
        task_id="t-1",
        task_name="payouts.tasks.payout_job_notify_task",
        args=[half_done_job.pk],
        kwargs={},
        queue="notifications",
        error="OperationalError: gone",
        traceback="",
        attempts=5,
        subject=f"payout_job:{half_done_job.pk}",
    )
    letter = DeadLetter.objects.get(task_id="t-1")
    page = browser.get(f"/admin/payouts/payoutjob/{half_done_job.pk}/change/").content.decode()
    replay = f"/admin/payouts/payoutjob/{half_done_job.pk}/dead-letters/{letter.pk}/replay/"
    assert replay in page
    assert "payout_job_notify_task" in browser.get(replay).content.decode()
    browser.post(replay, {"confirm": "yes"})
    letter.refresh_from_db()
    assert letter.status == "replayed"
    assert AuditEntry.objects.filter(actor=admin_user, action="dead_letter.replay").exists()


def test_resolve_page_previews_what_the_job_pays_and_needs_a_note(browser, admin_user):
    challenge = challenge_seed(stakers=9, yes_share=0.4, seed=3)
    page = browser.get(f"/admin/challenges/challenge/{challenge.pk}/resolve/")
    assert page.status_code == 200
    html = page.content.decode()
    expected, fee = expected_amounts(challenge, "no", 500)
    row = html.split('data-outcome="challenged_won"')[1].split("</tr>")[0]
    assert f'class="entries">{len(expected)}<' in row
    assert f'class="total">{sum(expected.values())}<' in row
    assert f'class="fee">{fee}<' in row
    assert f'class="smallest">{min(expected.values())}<' in row
    assert f'class="largest">{max(expected.values())}<' in row
    assert 'id="stripe-disabled"' in html  # no STRIPE_API_KEY in tests
    # Without a note nothing happens
    url = f"/admin/challenges/challenge/{challenge.pk}/resolve/"
    refused = browser.post(url, {"result": "challenged_won", "rail": "ledger", "note": ""})
    assert refused.status_code == 200
    challenge.refresh_from_db()
    assert challenge.status == Challenge.Status.PENDING_ADMIN
    # With one, it resolves through the service and lands on the job page
    done = browser.post(
        url, {"result": "challenged_won", "rail": "ledger", "note": "The video shows it."}
    )
    job = PayoutJob.objects.get(challenge=challenge)
    assert done.status_code == 302
    assert done["Location"] == f"/admin/payouts/payoutjob/{job.pk}/change/"
    challenge.refresh_from_db()
    assert (challenge.status, challenge.result) == ("resolving", "challenged_won")
    assert challenge.resolution_note == "The video shows it."
    audit = AuditEntry.objects.get(action="challenge.resolve", target_id=str(challenge.pk))
    assert (audit.actor, audit.details["note"]) == (admin_user, "The video shows it.")
    # The challenge page now shows the note, the job's progress row and the history
    shown = browser.get(f"/admin/challenges/challenge/{challenge.pk}/change/").content.decode()
    assert "The video shows it." in shown
    assert f"/admin/payouts/payoutjob/{job.pk}/change/" in shown
    assert "challenge.resolve" in shown
    assert "Resolve…" not in shown  # only a challenge awaiting resolution offers it


def test_cancel_page_previews_the_refund_and_needs_a_note(browser):
    challenge = challenge_seed(stakers=5, status="active")
    url = f"/admin/challenges/challenge/{challenge.pk}/cancel/"
    html = browser.get(url).content.decode()
    assert f'class="total">{challenge.yes_total + challenge.no_total}<' in html
    browser.post(url, {"note": ""})
    challenge.refresh_from_db()
    assert challenge.status == "active"
    browser.post(url, {"note": "Event called off."})
    challenge.refresh_from_db()
    assert (challenge.status, challenge.resolution_note) == ("cancelled", "Event called off.")


def test_challenge_list_has_no_money_actions(browser):
    challenge = challenge_seed(stakers=4)
    listing = browser.get("/admin/challenges/challenge/")
    assert 'name="action"' not in listing.content.decode()
    browser.post(
        "/admin/challenges/challenge/",
        {"action": "resolve_challenged_won", "_selected_action": [challenge.pk]},
    )
    challenge.refresh_from_db()
    assert challenge.status == Challenge.Status.PENDING_ADMIN


def test_challenge_page_pages_through_stakers_and_edits_notes(browser, admin_user, settings):
    challenge = challenge_seed(stakers=120)
    url = f"/admin/challenges/challenge/{challenge.pk}/change/"
    first = browser.get(url)
    stakers = first.context["stakers"]
    assert len(stakers["rows"]) == 50
    second = browser.get(url, {"stakes_after": stakers["next_after"]}).context["stakers"]
    assert second["rows"][0].pk > stakers["rows"][-1].pk
    assert "Resolve…" in first.content.decode()
    notes = f"/admin/challenges/challenge/{challenge.pk}/notes/"
    browser.post(notes, {"evidence": "https://example.org/result", "admin_notes": "call Bob"})
    challenge.refresh_from_db()
    assert (challenge.evidence, challenge.admin_notes) == ("https://example.org/result", "call Bob")
    assert AuditEntry.objects.filter(action="challenge.notes", actor=admin_user).exists()


def test_connected_accounts_admin_lists_searches_filters(browser, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    ConnectedAccount.objects.create(user=alice, stripe_account_id="acct_a", payouts_enabled=True)
    ConnectedAccount.objects.create(user=bob, stripe_account_id="acct_b", payouts_enabled=False)
    base = "/admin/payouts/connectedaccount/"
    assert browser.get(base).context["cl"].result_count == 2
    assert browser.get(base, {"q": "alice"}).context["cl"].result_count == 1
    assert browser.get(base, {"payouts_enabled__exact": "0"}).context["cl"].result_count == 1


def test_an_entry_page_shows_every_stripe_attempt_inline(browser, fake_stripe, settings):
    # Given a Stripe entry whose first call failed with a 500, and whose second paid it
    settings.STRIPE_RATE_LIMIT = 1000.0
    fake_stripe.configure(faults={"server_error": 1.0})
    job = stripe_job(fake_stripe, None, stakers=2)
    payout_batch_stripe(job_id=job.pk, budget=0.5)
    fake_stripe.configure(faults={})
    job.entries.update(next_attempt_at=None, status="pending")
    payout_batch_stripe(job_id=job.pk)
    entry = job.entries.get()
    assert entry.status == "completed"
    # When staff open the entry
    page = browser.get(f"/admin/payouts/payoutentry/{entry.pk}/change/")
    # Then both attempts are there, with what Stripe answered
    assert page.status_code == 200
    html = page.content.decode()
    assert "transient" in html
    assert "succeeded" in html
    assert "stripe_unavailable" in html
    assert entry.stripe_transfer_id in html
    # And the entries API gives the same history under the entry
    (row,) = browser.get(f"/api/admin/payout-jobs/{job.pk}/entries/").json()["results"]
    attempts = row["attempts"]
    assert [(a["attempt"], a["outcome"], a["http_status"]) for a in attempts] == [
        (1, "transient", 500),
        (2, "succeeded", 200),
    ]
    assert attempts[1]["transfer_id"] == entry.stripe_transfer_id
