"""The console's services and REST views: the settlement preview against what jobs pay, the
``failed`` job state, the dashboard (bounded queries), entries and job filters, the
challenge's payout row, notes and evidence."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from challenges.models import Challenge
from core.models import AuditEntry
from ledger.models import Account, Transfer
from ledger.services import system_account_id, transfer_post
from payouts.dashboard import console_dashboard
from payouts.models import PayoutEntry, PayoutJob
from payouts.services.engine import payout_batch_ledger
from payouts.services.jobs import challenge_cancel, challenge_resolve, payout_job_retry_failed
from payouts.services.settlement import settlement_preview
from payouts.services.watchdog import payout_watchdog
from proof.seeding import challenge_seed
from tests.payouts.helpers import expand_inline, run_job_inline

pytestmark = pytest.mark.django_db

SIDES = {"challenger_won": "yes", "challenged_won": "no", "draw": None}


def _paid(job: PayoutJob) -> tuple[int, int, int, int | None, int | None]:
    amounts = list(PayoutEntry.objects.filter(job=job).values_list("amount", flat=True))
    return (
        len(amounts),
        sum(amounts),
        job.fee_amount,
        min(amounts, default=None),
        max(amounts, default=None),
    )


@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    stakers=st.integers(1, 60),
    yes_share=st.floats(0, 1),
    low=st.integers(1, 1_000),
    span=st.integers(0, 10**6),
    seed=st.integers(0, 10**6),
    result=st.sampled_from(sorted(SIDES)),
    fee_bps=st.integers(0, 10_000),
)
def test_preview_equals_what_the_job_pays_to_the_unit(
    staff, settings, stakers, yes_share, low, span, seed, result, fee_bps
):
    # Given a random challenge and fee rate
    settings.PLATFORM_FEE_BPS = fee_bps
    challenge = challenge_seed(
        stakers=stakers, yes_share=yes_share, min_amount=low, max_amount=low + span, seed=seed
    )
    # When staff preview an outcome, then resolve with it and the job pays
    preview = settlement_preview(
        challenge_id=challenge.pk, winning_side=SIDES[result], fee_bps=fee_bps
    )
    job = challenge_resolve(challenge_id=challenge.pk, result=result, actor=staff)
    run_job_inline(job.pk)
    job.refresh_from_db()
    # Then the preview said exactly what was paid: entries, total, fee, smallest, largest
    assert job.status == PayoutJob.Status.COMPLETED
    assert (
        preview.entries,
        preview.total_amount,
        preview.fee,
        preview.smallest,
        preview.largest,
    ) == (_paid(job))
    assert preview.refund == (job.kind == PayoutJob.Kind.REFUND)
    assert job.paid_amount == preview.total_amount


def _mismatched_job(staff) -> PayoutJob:
    """A job whose escrow holds 7 units more than its counters say (money put in by hand)."""
    challenge = challenge_seed(stakers=6, seed=2)
    job = challenge_resolve(challenge_id=challenge.pk, result="challenger_won", actor=staff)
    expand_inline(job.pk)
    transfer_post(
        debit_account_id=system_account_id(Account.Kind.WORLD),
        credit_account_id=challenge.escrow_id,
        amount=7,
        kind=Transfer.Kind.TRANSFER,
        idempotency_key=f"test:stray:{challenge.pk}",
    )
    return job


def _drain(job_id: int) -> None:
    after = 0
    while (outcome := payout_batch_ledger(job_id=job_id, after_id=after)).claimed:
        after = outcome.last_id


def test_finalize_that_cannot_succeed_fails_the_job_and_the_watchdog_leaves_it(staff, staff_client):
    # Given a job whose escrow does not hold what its counters say
    job = _mismatched_job(staff)
    # When its batches pay everyone and try to finalize
    _drain(job.pk)
    job.refresh_from_db()
    # Then the job is failed with the reason, nothing of the finalize committed
    assert job.status == PayoutJob.Status.FAILED
    assert "expected 0" in job.error
    assert job.finished_at is not None
    assert not Transfer.objects.filter(idempotency_key=f"fee:{job.pk}").exists()
    assert job.challenge.status == Challenge.Status.RESOLVING
    # and the API shows it; the watchdog does not restart it
    body = staff_client.get(f"/api/admin/payout-jobs/{job.pk}/").json()
    assert (body["status"], body["error"]) == ("failed", job.error)
    PayoutJob.objects.filter(pk=job.pk).update(updated_at="2000-01-01T00:00:00Z")
    assert job.pk not in payout_watchdog(stale_seconds=0).restarted
    # A retry before the cause is fixed fails again; after the fix the job completes
    payout_job_retry_failed(job_id=job.pk, actor=staff)
    _drain(job.pk)
    job.refresh_from_db()
    assert job.status == PayoutJob.Status.FAILED
    transfer_post(
        debit_account_id=job.challenge.escrow_id,
        credit_account_id=system_account_id(Account.Kind.WORLD),
        amount=7,
        kind=Transfer.Kind.TRANSFER,
        idempotency_key=f"test:stray-back:{job.challenge_id}",
    )
    response = staff_client.post(f"/api/admin/payout-jobs/{job.pk}/retry-failed/")
    assert (response.status_code, response.json()["status"], response.json()["error"]) == (
        200,
        "running",
        "",
    )
    _drain(job.pk)
    job.refresh_from_db()
    assert (job.status, job.error) == (PayoutJob.Status.COMPLETED, "")
    assert Account.objects.get(pk=job.challenge.escrow_id).balance == 0
    assert AuditEntry.objects.filter(action="payout_job.retry_failed").count() == 2


def test_resolve_and_cancel_notes_through_the_api(staff_client):
    resolved = challenge_seed(stakers=3)
    cancelled = challenge_seed(stakers=3, status="active")
    silent = challenge_seed(stakers=3)
    url = "/api/admin/challenges/{}/{}/"
    ok = staff_client.post(
        url.format(resolved.pk, "resolve"), {"result": "draw", "note": "  Both lied.  "}
    )
    staff_client.post(url.format(cancelled.pk, "cancel"), {"note": "Called off."})
    no_note = staff_client.post(url.format(silent.pk, "resolve"), {"result": "draw"})
    long = staff_client.post(
        url.format(challenge_seed(stakers=2).pk, "resolve"), {"result": "draw", "note": "x" * 5001}
    )
    wrong_type = staff_client.post(
        url.format(challenge_seed(stakers=2).pk, "resolve"), {"result": "draw", "note": 5}
    )
    assert ok.status_code == no_note.status_code == 202
    for challenge, note in ((resolved, "Both lied."), (cancelled, "Called off."), (silent, "")):
        challenge.refresh_from_db()
        assert challenge.resolution_note == note
    assert AuditEntry.objects.get(action="challenge.cancel").details["note"] == "Called off."
    assert (long.status_code, long.json()["code"]) == (400, "note_too_long")
    assert (wrong_type.status_code, wrong_type.json()["code"]) == (400, "invalid_input")


def test_job_list_by_challenge(staff, staff_client):
    first, second = challenge_seed(stakers=2), challenge_seed(stakers=2)
    jobs = [challenge_cancel(challenge_id=c.pk, actor=staff) for c in (first, second)]
    body = staff_client.get("/api/admin/payout-jobs/", {"challenge": second.pk}).json()
    assert [row["id"] for row in body["results"]] == [jobs[1].pk]
    none = staff_client.get("/api/admin/payout-jobs/", {"challenge": 10**9}).json()
    assert (none["results"], none["next"]) == ([], None)
    bad = staff_client.get("/api/admin/payout-jobs/", {"challenge": "x"})
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_input")


def test_entries_api_filters_and_cursor_pages(staff, staff_client, settings):
    settings.PAYOUT_BATCH_SIZE = 3
    challenge = challenge_seed(stakers=10)
    job = challenge_resolve(challenge_id=challenge.pk, result="draw", actor=staff)
    run_job_inline(job.pk, max_batches=2)
    pending = list(PayoutEntry.objects.filter(job=job, status="pending").order_by("id"))
    PayoutEntry.objects.filter(pk=pending[0].pk).update(
        status="failed", failure_reason="stripe_card_declined", last_error="declined"
    )
    url = f"/api/admin/payout-jobs/{job.pk}/entries/"
    seen, page = [], staff_client.get(url, {"page_size": 4}).json()
    while True:
        seen += [row["id"] for row in page["results"]]
        if not page["next"]:
            break
        page = staff_client.get(page["next"]).json()
    assert seen == sorted(PayoutEntry.objects.filter(job=job).values_list("id", flat=True))
    failed = staff_client.get(url, {"status": "failed"}).json()["results"]
    assert [(row["id"], row["last_error"]) for row in failed] == [(pending[0].pk, "declined")]
    by_reason = staff_client.get(url, {"failure_reason": "stripe_card_declined"}).json()
    assert len(by_reason["results"]) == 1
    assert len(staff_client.get(url, {"status": "completed"}).json()["results"]) == 6
    bad = staff_client.get(url, {"status": "nope"})
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_input")
    missing = staff_client.get("/api/admin/payout-jobs/999999/entries/")
    assert (missing.status_code, missing.json()["code"]) == (404, "job_not_found")


def test_challenge_detail_shows_its_payout_row(staff, json_client, make_user):
    user = make_user()
    challenge = challenge_seed(stakers=4)
    client = json_client(user)
    assert client.get(f"/api/challenges/{challenge.pk}/").json()["payout"] is None
    job = challenge_resolve(challenge_id=challenge.pk, result="draw", actor=staff)
    assert client.get(f"/api/challenges/{challenge.pk}/").json()["payout"] == {
        "status": "queued",
        "progress_percent": 0.0,
    }
    run_job_inline(job.pk)
    body = client.get(f"/api/challenges/{challenge.pk}/").json()
    assert body["payout"] == {"status": "completed", "progress_percent": 100.0}
    assert "admin_notes" not in body


def test_evidence_from_the_parties_and_staff_only(staff, json_client, make_user):
    challenge = challenge_seed(stakers=3)
    challenger = challenge.challenger
    stranger = make_user()
    url = f"/api/challenges/{challenge.pk}/evidence/"
    ok = json_client(challenger).post(url, {"evidence": "photo: https://example.org/p.jpg"})
    refused = json_client(stranger).post(url, {"evidence": "I saw it"})
    staff_ok = json_client(staff).post(url, {"evidence": "checked"})
    assert ok.status_code == 200
    assert ok.json()["evidence"] == "photo: https://example.org/p.jpg"
    assert (refused.status_code, refused.json()["code"]) == (403, "not_a_party")
    assert staff_ok.json()["evidence"] == "checked"


def _dashboard_queries(staff) -> int:
    with CaptureQueriesContext(connection) as queries:
        console_dashboard()
    return len(queries)


def test_dashboard_figures_and_a_constant_number_of_queries(staff, staff_client, settings):
    settings.PAYOUT_BATCH_SIZE = 5
    # Given a small platform
    challenge_seed(stakers=3, title="waiting one")
    done = challenge_seed(stakers=6)
    job = challenge_resolve(challenge_id=done.pk, result="draw", actor=staff)
    run_job_inline(job.pk)
    running = challenge_resolve(
        challenge_id=challenge_seed(stakers=12).pk, result="draw", actor=staff
    )
    run_job_inline(running.pk, max_batches=1)
    small = _dashboard_queries(staff)
    # When it grows (more challenges awaiting, more running jobs, more entries)
    for _ in range(4):
        challenge_seed(stakers=30)
        busy = challenge_resolve(
            challenge_id=challenge_seed(stakers=40).pk, result="draw", actor=staff
        )
        run_job_inline(busy.pk, max_batches=1)
    # Then the dashboard runs the same number of queries
    assert _dashboard_queries(staff) == small
    body = staff_client.get("/api/admin/dashboard/").json()
    assert body["awaiting"]["count"] == {"value": 5, "capped": False}
    assert body["awaiting"]["oldest"][0]["title"] == "waiting one"
    assert body["jobs"]["active_count"]["value"] == 5
    assert {row["id"] for row in body["jobs"]["running"]} >= {running.pk}
    assert body["last_24h"]["jobs_completed"] == 1
    assert body["last_24h"]["entries_paid"] == 6
    assert body["last_24h"]["success_rate"] == 100.0
    assert body["queues"][0]["name"] == "payouts"
    assert {task["task"] for task in body["periodic_tasks"]} >= {
        "payouts.tasks.payout_watchdog_task"
    }
    assert all(task["late"] for task in body["periodic_tasks"])  # beat never ran here


def test_dashboard_counts_stop_at_the_cap(staff, settings, monkeypatch):
    from payouts import dashboard

    monkeypatch.setattr(dashboard, "COUNT_CAP", 3)
    for _ in range(4):
        challenge_seed(stakers=1)
    assert str(console_dashboard()["awaiting"]["count"]) == "3+"


def test_admin_index_shows_the_dashboard(staff, client):
    challenge = challenge_seed(stakers=2, title="needs a decision")
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    page = client.get("/admin/").content.decode()
    assert 'id="console-dashboard"' in page
    assert f"/admin/challenges/challenge/{challenge.pk}/change/" in page
    assert "needs a decision" in page
    assert "/admin/challenges/challenge/?status__exact=pending_admin" in page


def test_staff_only(json_client, make_user):
    user = make_user()
    for url in ("/api/admin/dashboard/", "/api/admin/payout-jobs/1/entries/"):
        response = json_client(user).get(url)
        assert response.status_code == 403
