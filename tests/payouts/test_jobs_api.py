"""Resolve, cancel, job controls and dead letters through the REST API."""

from functools import partial

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from challenges.models import Challenge
from core.models import AuditEntry, DeadLetter
from payouts.models import PayoutJob
from payouts.services.jobs import challenge_resolve
from proof.seeding import challenge_seed
from tests.conftest import run_together
from tests.payouts.helpers import run_job_inline
from users.services import token_create

pytestmark = pytest.mark.django_db


def test_resolve_answers_202_with_the_job_and_enqueues_expansion(
    staff, staff_client, django_capture_on_commit_callbacks
):
    challenge = challenge_seed(stakers=5)
    with django_capture_on_commit_callbacks() as sent:
        response = staff_client.post(
            f"/api/admin/challenges/{challenge.pk}/resolve/", {"result": "challenger_won"}
        )
    assert response.status_code == 202, response.json()
    body = response.json()
    job = PayoutJob.objects.get(pk=body["payout_job_id"])
    assert body["status_url"].endswith(f"/api/admin/payout-jobs/{job.pk}/")
    assert (job.status, job.kind, job.rail, job.fee_bps) == ("queued", "payout", "ledger", 500)
    assert len(sent) == 1
    challenge.refresh_from_db()
    assert (challenge.status, challenge.result, challenge.resolved_by) == (
        "resolving",
        "challenger_won",
        staff,
    )
    audit = AuditEntry.objects.get(action="challenge.resolve")
    assert (audit.actor, audit.target_id) == (staff, str(challenge.pk))
    assert audit.details["payout_job_id"] == job.pk
    # A second resolve is a clean conflict and creates nothing
    again = staff_client.post(f"/api/admin/challenges/{challenge.pk}/resolve/", {"result": "draw"})
    assert (again.status_code, again.json()["code"]) == (409, "already_resolved")
    assert PayoutJob.objects.count() == 1


def test_fee_rate_is_copied_onto_the_job(staff, settings):
    settings.PLATFORM_FEE_BPS = 250
    job = challenge_resolve(
        challenge_id=challenge_seed(stakers=4).pk, result="challenged_won", actor=staff
    )
    settings.PLATFORM_FEE_BPS = 900
    run_job_inline(job.pk)
    job.refresh_from_db()
    assert job.fee_bps == 250
    challenge = job.challenge
    assert job.fee_amount == challenge.yes_total * 250 // 10_000


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"result": "nobody_won"}, 400, "invalid_result"),
        ({}, 400, "invalid_input"),
        ({"result": "draw", "rail": "pigeon"}, 400, "invalid_rail"),
        ({"result": "draw", "rail": "stripe"}, 400, "stripe_not_configured"),
    ],
)
def test_resolve_bad_input(staff_client, settings, payload, status, code):
    settings.STRIPE_API_KEY = ""
    challenge = challenge_seed(stakers=2)
    response = staff_client.post(f"/api/admin/challenges/{challenge.pk}/resolve/", payload)
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert not PayoutJob.objects.exists()
    challenge.refresh_from_db()
    assert challenge.status == "pending_admin"


@pytest.mark.parametrize("status", ["pending", "active", "cancelled"])
def test_only_challenges_awaiting_resolution_can_be_resolved(staff_client, status):
    challenge = challenge_seed(stakers=2, status=status)
    response = staff_client.post(
        f"/api/admin/challenges/{challenge.pk}/resolve/", {"result": "draw"}
    )
    assert (response.status_code, response.json()["code"]) == (409, "challenge_not_resolvable")


def test_unknown_challenge_and_non_staff(json_client, make_user, staff_client):
    response = staff_client.post("/api/admin/challenges/999999/resolve/", {"result": "draw"})
    assert (response.status_code, response.json()["code"]) == (404, "challenge_not_found")
    challenge = challenge_seed(stakers=2)
    for client in (json_client(make_user("plain")), json_client()):
        for path in (
            f"/api/admin/challenges/{challenge.pk}/resolve/",
            f"/api/admin/challenges/{challenge.pk}/cancel/",
            "/api/admin/payout-jobs/",
            "/api/admin/dead-letters/",
        ):
            response = client.post(path, {"result": "draw"})
            assert response.status_code in (401, 403), path
            assert response.json()["code"] in ("not_authenticated", "permission_denied")
    assert not PayoutJob.objects.exists()


def test_cancel_through_the_api(staff_client):
    challenge = challenge_seed(stakers=3, status="active")
    response = staff_client.post(f"/api/admin/challenges/{challenge.pk}/cancel/")
    assert response.status_code == 202
    job = PayoutJob.objects.get(pk=response.json()["payout_job_id"])
    assert (job.kind, job.challenge.status) == ("refund", Challenge.Status.CANCELLED)
    again = staff_client.post(f"/api/admin/challenges/{challenge.pk}/cancel/")
    assert (again.status_code, again.json()["code"]) == (409, "challenge_not_cancellable")


def test_job_list_detail_and_controls(staff, staff_client, settings):
    settings.PAYOUT_BATCH_SIZE = 2
    challenge = challenge_seed(stakers=6)
    job = challenge_resolve(challenge_id=challenge.pk, result="challenger_won", actor=staff)
    run_job_inline(job.pk, max_batches=1)
    # Detail shows the counters and progress
    body = staff_client.get(f"/api/admin/payout-jobs/{job.pk}/").json()
    assert {k: body[k] for k in ("id", "challenge", "kind", "rail", "status")} == {
        "id": job.pk,
        "challenge": challenge.pk,
        "kind": "payout",
        "rail": "ledger",
        "status": "running",
    }
    assert (body["total_entries"], body["completed"], body["failed"]) == (3, 2, 0)
    assert body["progress_percent"] == pytest.approx(66.7)
    assert body["rate"] > 0
    assert body["eta_seconds"] >= 0
    assert isinstance(body["total_amount"], int)
    listing = staff_client.get("/api/admin/payout-jobs/", {"status": "running"}).json()
    assert [j["id"] for j in listing["results"]] == [job.pk]
    paused = staff_client.get("/api/admin/payout-jobs/", {"status": "paused"}).json()
    assert (paused["results"], paused["next"]) == ([], None)
    # Controls in the right and the wrong state
    url = f"/api/admin/payout-jobs/{job.pk}"
    assert staff_client.post(f"{url}/pause/").json()["status"] == "paused"
    wrong = staff_client.post(f"{url}/pause/")
    assert (wrong.status_code, wrong.json()["code"]) == (409, "invalid_job_state")
    assert staff_client.post(f"{url}/resume/").json()["status"] == "running"
    no_failed = staff_client.post(f"{url}/retry-failed/")
    assert (no_failed.status_code, no_failed.json()["code"]) == (409, "no_failed_entries")
    cancelled = staff_client.post(f"{url}/cancel/").json()
    assert (cancelled["status"], cancelled["cancelled"]) == ("cancelled", 1)
    wrong = staff_client.post(f"{url}/resume/")
    assert (wrong.status_code, wrong.json()["code"]) == (409, "invalid_job_state")
    actions = AuditEntry.objects.filter(target_type="payout_job", actor=staff)
    assert set(actions.values_list("action", flat=True)) == {
        "payout_job.pause",
        "payout_job.resume",
        "payout_job.cancel",
    }


@pytest.mark.parametrize("control", ["pause", "resume", "cancel", "retry-failed"])
def test_unknown_job(staff_client, control):
    response = staff_client.post(f"/api/admin/payout-jobs/424242/{control}/")
    assert (response.status_code, response.json()["code"]) == (404, "job_not_found")
    response = staff_client.get("/api/admin/payout-jobs/424242/")
    assert (response.status_code, response.json()["code"]) == (404, "job_not_found")


def test_dead_letters_list_and_replay(staff, staff_client, django_capture_on_commit_callbacks):
    letter = DeadLetter.objects.create(
        task_id="t-1",
        task_name="payouts.tasks.payout_batch_ledger_task",
        args=[1],
        error="OperationalError: boom",
        attempts=6,
        subject="payout_job:1",
    )
    listing = staff_client.get("/api/admin/dead-letters/", {"status": "open"}).json()
    assert [(d["id"], d["subject"]) for d in listing["results"]] == [(letter.pk, "payout_job:1")]
    with django_capture_on_commit_callbacks() as sent:
        response = staff_client.post(f"/api/admin/dead-letters/{letter.pk}/replay/")
    assert response.status_code == 200
    assert response.json()["status"] == "replayed"
    assert len(sent) == 1
    again = staff_client.post(f"/api/admin/dead-letters/{letter.pk}/replay/")
    assert (again.status_code, again.json()["code"]) == (409, "already_replayed")
    assert AuditEntry.objects.filter(action="dead_letter.replay", actor=staff).exists()


def _resolve_queries(staff, stakers: int) -> list[str]:
    challenge = challenge_seed(stakers=stakers)
    with CaptureQueriesContext(connection) as queries:
        challenge_resolve(challenge_id=challenge.pk, result="challenger_won", actor=staff)
    return [q["sql"] for q in queries.captured_queries]


def test_resolve_issues_the_same_queries_for_10_and_100000_stakers(staff):
    small = _resolve_queries(staff, 10)
    large = _resolve_queries(staff, 100_000)
    # One statement (the lock, the decision, the job and its audit entry) in its transaction:
    # a round trip to the database is what waits for a core while a big job pays
    statements = [sql for sql in large if "SAVEPOINT" not in sql]
    assert len(small) == len(large)
    assert len(statements) == 1
    # And none of them scans the stakes: the one look at them is for the resolver's own stake
    # (the conflict-of-interest check), a lookup in the unique (challenge, user) index
    stake_reads = [sql for sql in large if "challenges_stake" in sql]
    assert len(stake_reads) == 1
    assert f"s.user_id = {staff.pk}" in stake_reads[0]


@pytest.mark.django_db(transaction=True)
def test_a_resolve_through_the_api_is_the_token_lookup_and_one_statement_that_commits(staff):
    challenge = challenge_seed(stakers=10)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_create(user=staff)[0]}")
    # When staff resolve through the API, outside any transaction (as a request runs)
    with CaptureQueriesContext(connection) as queries:
        response = client.post(
            f"/api/admin/challenges/{challenge.pk}/resolve/",
            {"result": "challenger_won"},
            format="json",
        )
    assert response.status_code == 202, response.json()
    # Then the database saw two statements: no BEGIN and COMMIT around the resolve, each a
    # round trip that waits for a core while a job pays
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) == 2, statements
    assert "token_key" in statements[0]
    assert "challenge.resolve" in statements[1]
    # And what it wrote is committed: the job, the challenge's result and the audit entry
    assert not connection.in_atomic_block
    assert PayoutJob.objects.filter(challenge=challenge, status="queued").exists()
    assert AuditEntry.objects.filter(action="challenge.resolve", actor=staff).exists()


def _redis_calls(redis_client) -> dict[str, int]:
    stats = redis_client.info("commandstats")
    return {name: stat["calls"] for name, stat in stats.items() if name != "cmdstat_info"}


@pytest.mark.django_db(transaction=True)
def test_a_resolve_through_the_api_sends_redis_the_throttle_and_the_expansion_only(
    staff, redis_client, throttle_rates
):
    throttle_rates(staff="600/min")  # as deployed
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_create(user=staff)[0]}")
    first, second = challenge_seed(stakers=10), challenge_seed(stakers=10)
    # Given a web process that has resolved once (its Redis connections are open)
    resolve = partial(client.post, data={"result": "challenger_won"}, format="json")
    resolve(f"/api/admin/challenges/{first.pk}/resolve/")
    before = _redis_calls(redis_client)
    # When staff resolve the next challenge
    response = resolve(f"/api/admin/challenges/{second.pk}/resolve/")
    assert response.status_code == 202, response.json()
    # Then Redis saw two commands: the staff throttle's script (Redis counts the SET and INCR
    # it runs apart) and the expansion's message; no subscription to the task's result, which
    # nothing reads
    after = _redis_calls(redis_client)
    sent = {name: calls - before.get(name, 0) for name, calls in after.items()}
    assert {name: n for name, n in sent.items() if n} == {
        "cmdstat_evalsha": 1,
        "cmdstat_set": 1,
        "cmdstat_incr": 1,
        "cmdstat_lpush": 1,
    }


def test_a_resolve_without_an_actor_decides_a_challenge_without_a_named_opponent():
    # Scripts and the benches resolve with no actor; nobody is challenged here either, and
    # neither missing id may read as a conflict of interest
    challenge = challenge_seed(stakers=20)
    assert challenge.challenged_id is None

    job = challenge_resolve(challenge_id=challenge.pk, result="challenger_won", actor=None)

    challenge.refresh_from_db()
    assert (job.kind, job.created_by_id, challenge.status) == ("payout", None, "resolving")
    assert challenge.resolved_by_id is None
    entry = AuditEntry.objects.get(action="challenge.resolve", target_id=str(challenge.pk))
    assert entry.actor_id is None
    assert entry.details["payout_job_id"] == job.pk


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_resolves_create_one_job(staff):
    challenge = challenge_seed(stakers=20)
    outcomes = run_together(
        *(
            partial(challenge_resolve, challenge_id=challenge.pk, result=result, actor=staff)
            for result in ("draw", "challenger_won")
        )
    )
    jobs = [o for o in outcomes if isinstance(o, PayoutJob)]
    assert len(jobs) == 1
    assert [o for o in outcomes if not isinstance(o, PayoutJob)] == ["already_resolved"]
    assert PayoutJob.objects.filter(challenge=challenge).count() == 1
    # The job that exists is the one whose result was recorded
    challenge.refresh_from_db()
    assert jobs[0].kind == ("refund" if challenge.result == "draw" else "payout")
