"""The Stripe rail in real Celery worker processes against the fake Stripe server: faults of
every kind, a worker killed between Stripe's answer and the database, and the shared rate
limit. The workers run Celery's threads pool, as the Stripe worker does in production
(deploy/processes.py): several batches of one job at once in one process."""

import pytest
from django.db.models import Sum

from ledger.models import Account, Transfer
from ledger.selectors import ledger_check
from ledger.services import system_account_id
from payouts.models import PayoutEntry, PayoutJob
from payouts.services.jobs import challenge_resolve
from proof.stripe_bench import stripe_rate_benchmark
from tests.conftest import wait_for
from tests.payouts.helpers import stripe_challenge_seed

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

QUEUES = "payouts,payouts_stripe"
TERMINAL = (PayoutEntry.Status.COMPLETED, PayoutEntry.Status.FAILED)


def resolve_stripe_job(fake, settings, *, stakers, unconnected=0, parallelism=4) -> PayoutJob:
    challenge = stripe_challenge_seed(fake, stakers=stakers, seed=11, unconnected=unconnected)
    settings.STRIPE_PARALLELISM = parallelism
    return challenge_resolve(
        challenge_id=challenge.pk, result="challenger_won", actor=None, rail="stripe"
    )


def job_done(job: PayoutJob):
    def check():
        job.refresh_from_db()
        return job.status not in PayoutJob.ACTIVE_STATUSES

    return check


def test_2000_winners_with_30_percent_faults_are_each_paid_exactly_once(
    workers, fake_stripe, settings
):
    # Given Stripe failing 30% of requests, 5% each: 429, 500, 409 lock_timeout, connection
    # reset, timeout, and a response lost after the transfer was created
    fake_stripe.configure(
        seed=7,
        timeout_seconds=1.5,
        faults={
            "rate_limit": 0.05,
            "server_error": 0.05,
            "lock_timeout": 0.05,
            "reset": 0.05,
            "timeout": 0.05,
            "lost": 0.05,
        },
    )
    env = {
        **fake_stripe.env(),
        "STRIPE_TIMEOUT": "1",
        "STRIPE_RATE_LIMIT": "1000",
        "STRIPE_RATE_BURST": "50",
        "STRIPE_RETRY_BACKOFF_BASE": "0.2",
        "STRIPE_RETRY_BACKOFF_MAX": "2",
        "STRIPE_BATCH_SECONDS": "20",
        "CELERY_VISIBILITY_TIMEOUT": "300",
    }
    # One process of four threads: four batches of the job at once, in one process
    workers.start(QUEUES, name="stripe", pool="threads", concurrency=4, **env)
    # And a 2,000-winner job in which 20 winners never connected a Stripe account
    job = resolve_stripe_job(fake_stripe, settings, stakers=4000, unconnected=20)
    # When the workers run it
    wait_for(job_done(job), timeout=420, interval=1)
    # Then every entry is terminal
    entries = PayoutEntry.objects.filter(job=job)
    assert entries.count() == 2000
    assert not entries.exclude(status__in=TERMINAL).exists()
    failed = entries.filter(status=PayoutEntry.Status.FAILED)
    paid = entries.filter(status=PayoutEntry.Status.COMPLETED)
    reasons = set(failed.values_list("failure_reason", flat=True))
    assert failed.filter(failure_reason="stripe_account_not_connected").count() == 20
    assert reasons <= {"stripe_account_not_connected", "stripe_attempts_exhausted"}
    # And Stripe created exactly one transfer per paid entry, and none for the others
    stats = fake_stripe.stats()
    per_key = stats["created_per_key"]
    paid_ids = set(paid.values_list("id", flat=True))
    assert set(per_key.values()) == {1}
    assert set(per_key) == {f"payout:{i}" for i in paid_ids}
    transfer_of = {t["id"]: int(t["metadata"]["entry_id"]) for t in fake_stripe.transfers()}
    assert all(transfer_of[tid] == eid for eid, tid in paid.values_list("id", "stripe_transfer_id"))
    # And the faults really happened, each kind many times
    assert min(stats["faults"].values()) > 50, stats["faults"]
    # And the ledger balances, with escrow holding exactly the unpaid entries' amounts
    assert ledger_check().ok
    job.refresh_from_db()
    unpaid = failed.aggregate(total=Sum("amount"))["total"]
    assert Account.objects.get(pk=job.challenge.escrow_id).balance == unpaid
    assert job.status == PayoutJob.Status.COMPLETED_WITH_FAILURES
    assert (job.completed_count, job.failed_count) == (len(paid_ids), failed.count())
    cleared = Transfer.objects.filter(kind=Transfer.Kind.STRIPE_PAYOUT).aggregate(t=Sum("amount"))
    assert cleared["t"] == job.paid_amount
    assert Account.objects.get(pk=system_account_id("stripe_clearing")).balance == job.paid_amount
    print(
        f"\n2,000 winners, 30% faults: {stats['requests']} Stripe requests, "
        f"{len(paid_ids)} paid once each, {failed.count()} failed, faults {stats['faults']}, "
        f"{stats['replays']} idempotent replays, {stats['conflicts']} conflicts"
    )


def test_a_worker_killed_after_stripe_paid_but_before_saving_pays_nobody_twice(
    workers, fake_stripe, settings
):
    # Given Stripe holding its answer after it created the transfer
    fake_stripe.configure(hold_after_create=True)
    env = {
        **fake_stripe.env(),
        "STRIPE_TIMEOUT": "3",
        "STRIPE_LEASE_SECONDS": "4",
        "STRIPE_BATCH_SECONDS": "3",
    }
    first = workers.start(QUEUES, name="doomed", pool="threads", concurrency=2, **env)
    job = resolve_stripe_job(fake_stripe, settings, stakers=2, parallelism=1)
    # When the worker is killed with SIGKILL while the response is on its way
    wait_for(lambda: fake_stripe.stats()["held"] == 1, timeout=60)
    (entry,) = PayoutEntry.objects.filter(job=job)
    assert entry.status == PayoutEntry.Status.PROCESSING
    workers.kill(first)
    fake_stripe.configure(hold_after_create=False)
    # Then another worker picks the entry up once its lease expires (the message comes back
    # after the visibility timeout), and Stripe hands back the same transfer
    workers.start(QUEUES, name="heir", pool="threads", concurrency=2, **env)
    wait_for(job_done(job), timeout=90, interval=0.5)
    entry.refresh_from_db()
    assert entry.status == PayoutEntry.Status.COMPLETED
    assert entry.attempt_count == 2
    (transfer,) = fake_stripe.transfers()
    assert entry.stripe_transfer_id == transfer["id"]
    stats = fake_stripe.stats()
    assert stats["created_per_key"] == {f"payout:{entry.pk}": 1}
    assert stats["replays"] == 1
    assert Transfer.objects.filter(idempotency_key=f"payout:{entry.pk}").count() == 1
    job.refresh_from_db()
    assert job.status == PayoutJob.Status.COMPLETED


def test_two_threaded_workers_stay_within_the_shared_rate_limit_and_use_it(workers, worker_env):
    # Given 2 worker processes of 4 threads sharing a 20 requests/s limit with a burst of 5
    # When they pay 160 winners, 8 batches at once
    report = stripe_rate_benchmark(
        winners=160,
        workers=2,
        threads=4,
        rate=20,
        burst=5,
        worker_env=worker_env,
        app="tests.worker_app",
    )
    # Then no one-second window of the requests' arrivals at Stripe holds more than 25, with
    # no allowance for late arrivals (each request takes its token once its connection is
    # open; at 20/s the request to spare in a half-open second is 50 ms of scheduling), and
    # they reach at least 90% of the limit
    assert report.job_status == PayoutJob.Status.COMPLETED
    assert report.requests == 160
    assert report.busiest_window <= report.window_bound
    assert report.throughput >= 0.9 * report.rate
