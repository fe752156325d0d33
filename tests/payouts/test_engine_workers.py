"""The engine in real Celery worker processes against real PostgreSQL and Redis."""

import pytest
from django.db.models import Max, Min

from deploy.workers import WorkerPool
from ledger.models import Transfer
from payouts.models import PayoutEntry, PayoutJob
from payouts.services.jobs import challenge_cancel, challenge_resolve
from proof.seeding import challenge_seed
from tests.conftest import wait_for
from tests.payouts.helpers import assert_settled, wallet_balances

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

# Small expansion slices, so that jobs are created and paid slice by slice, after a smaller
# start (first slice and first batch).
SLICE = "64"
START = "16"


@pytest.fixture(autouse=True)
def _engine_settings(settings):
    settings.PAYOUT_BATCH_SIZE = 17
    settings.PAYOUT_PARALLELISM = 3


def _finished(job_id: int, timeout: float = 90) -> PayoutJob:
    def done():
        job = PayoutJob.objects.get(pk=job_id)
        return job if job.status not in PayoutJob.ACTIVE_STATUSES else None

    return wait_for(done, timeout=timeout, interval=0.2)


@pytest.mark.parametrize(
    ("result", "winning_side"), [("challenger_won", "yes"), ("draw", None), ("cancel", None)]
)
def test_resolve_to_completed_with_real_workers(workers, staff, result, winning_side):
    # Given two payout workers and a challenge with 500 stakers
    workers.start(
        "payouts,notifications", name="a", PAYOUT_EXPAND_CHUNK=SLICE, PAYOUT_START_SIZE=START
    )
    workers.start("payouts", name="b", PAYOUT_EXPAND_CHUNK=SLICE, PAYOUT_START_SIZE=START)
    challenge = challenge_seed(stakers=500, yes_share=0.3, seed=5)
    before = wallet_balances(challenge)
    # When staff resolve (or cancel) it
    if result == "cancel":
        job = challenge_cancel(challenge_id=challenge.pk, actor=staff)
    else:
        job = challenge_resolve(challenge_id=challenge.pk, result=result, actor=staff)
    # Then the workers complete the job: every wallet exact, ledger clean, escrow 0
    _finished(job.pk)
    assert_settled(job, winning_side=winning_side, wallets_before=before)


@pytest.fixture
def duplicating_workers(workers, worker_env):
    """Workers whose every batch and slice message reaches the broker three times (same task id)."""
    pool = WorkerPool(worker_env, app="tests.payouts.duplicating_worker_app")
    yield pool
    pool.stop_all()


def test_every_batch_and_slice_published_three_times_pays_nobody_twice(
    duplicating_workers, staff, redis_client
):
    # Given two workers that publish every batch and slice message three times
    duplicating_workers.start(
        "payouts", name="d1", PAYOUT_EXPAND_CHUNK=SLICE, PAYOUT_START_SIZE=START
    )
    duplicating_workers.start(
        "payouts", name="d2", PAYOUT_EXPAND_CHUNK=SLICE, PAYOUT_START_SIZE=START
    )
    challenge = challenge_seed(stakers=400, seed=9)
    before = wallet_balances(challenge)
    # When the challenge is resolved
    job = challenge_resolve(challenge_id=challenge.pk, result="challenged_won", actor=staff)
    # Then the job completes with everyone paid exactly once
    _finished(job.pk)
    assert_settled(job, winning_side="no", wallets_before=before)
    assert Transfer.objects.filter(kind="payout").count() == job.total_entries
    assert int(redis_client.get("duplicated_messages")) >= 2 * (job.total_entries // 17)


def test_sigkill_mid_job_still_pays_everyone_once(workers, staff, settings):
    settings.PAYOUT_BATCH_SIZE = 200
    settings.PAYOUT_PARALLELISM = 1
    # Given one worker paying a 30,000-staker job
    first = workers.start(
        "payouts", name="first", PAYOUT_EXPAND_CHUNK="5000", PAYOUT_START_SIZE="300"
    )
    challenge = challenge_seed(stakers=30_000, yes_share=0.9, seed=1)
    before = wallet_balances(challenge)
    job = challenge_resolve(challenge_id=challenge.pk, result="challenger_won", actor=staff)
    wait_for(
        lambda: PayoutJob.objects.get(pk=job.pk).completed_count >= 2_000, timeout=60, interval=0.05
    )
    # When that worker is killed with SIGKILL in the middle, and another takes over
    workers.kill(first)
    job.refresh_from_db()
    assert job.status == PayoutJob.Status.RUNNING
    assert job.completed_count < job.total_entries
    workers.start("payouts", name="second", PAYOUT_EXPAND_CHUNK="5000", PAYOUT_START_SIZE="300")
    # Then the job still completes, with every winner paid exactly once
    _finished(job.pk, timeout=120)
    assert_settled(job, winning_side="yes", wallets_before=before)
    assert Transfer.objects.filter(kind="payout").count() == job.total_entries


def test_jobs_of_two_challenges_share_the_workers(workers, staff, settings):
    settings.PAYOUT_BATCH_SIZE = 10
    settings.PAYOUT_PARALLELISM = 1
    # Given one worker and two challenges resolved one after the other
    workers.start("payouts")
    first, second = (challenge_seed(stakers=400, seed=s) for s in (1, 2))
    jobs = [
        challenge_resolve(challenge_id=c.pk, result="draw", actor=staff) for c in (first, second)
    ]
    for job in jobs:
        _finished(job.pk)
    # Then their batches took turns: the second job was paid from before the first finished
    first_job_last = PayoutEntry.objects.filter(job=jobs[0]).aggregate(t=Max("completed_at"))["t"]
    second_job_first = PayoutEntry.objects.filter(job=jobs[1]).aggregate(t=Min("completed_at"))["t"]
    assert second_job_first < first_job_last
    paid_before = PayoutEntry.objects.filter(job=jobs[1], completed_at__lt=first_job_last)
    assert paid_before.count() >= 100


def test_jobs_resolved_together_all_start_before_any_finishes(workers, staff, settings):
    settings.PAYOUT_BATCH_SIZE = 50
    settings.PAYOUT_PARALLELISM = 2
    # Given one worker and six challenges of 100 stakers (a start batch, then two batches)
    challenges = [challenge_seed(stakers=100, seed=40 + n) for n in range(6)]
    workers.start("payouts", PAYOUT_START_SIZE="10")
    # When they are resolved together
    jobs = [challenge_resolve(challenge_id=c.pk, result="draw", actor=staff) for c in challenges]
    for job in jobs:
        _finished(job.pk)
    # Then no job waited for another to finish: every job paid its first winners before any
    # job paid its last (in FIFO order the first job would be done before the second started)
    windows = PayoutEntry.objects.filter(job__in=jobs).values("job_id")
    windows = windows.annotate(first=Min("completed_at"), last=Max("completed_at"))
    earliest_finish = min(w["last"] for w in windows)
    assert all(w["first"] < earliest_finish for w in windows)
