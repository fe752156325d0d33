"""The busy-evening and resolve-under-load benchmarks at a tiny size, with real workers: they
run, report every figure, and leave every job settled and the ledger clean."""

import pytest

from core.queues import queue_lists
from payouts.models import PayoutJob
from proof.evening_bench import evening_bench_seed, evening_benchmark
from proof.resolve_load import PARKED_QUEUE, resolve_load_seed, resolve_under_load

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def test_a_small_evening_reports_throughput_and_fairness(worker_env, redis_client):
    redis_client.flushdb()
    # Given five challenges of 400 winners and one of 2,000 (an expansion takes longer than a
    # resolve, so the resolves of the evening are all in before the worker runs out of starts)
    seeded = evening_bench_seed(challenges=5, winners=400)
    # When the benchmark pays the big one, then the five resolved together, on one worker
    report = evening_benchmark(
        seeded=seeded, worker_processes=1, batch_size=100, worker_env=worker_env, log=str
    )
    # Then every job completed and the figures are there
    assert report["evening"]["payouts"] == report["one_big_job"]["payouts"] == 2_000
    assert report["evening"]["all_completed"]
    assert report["one_big_job"]["all_completed"]
    assert report["throughput_ratio"] > 0
    fairness = report["fairness"]
    assert fairness["jobs"] == 5
    assert 0 <= fairness["first_payout_seconds_p50"] <= fairness["first_payout_seconds_max"]
    assert fairness["jobs_started_after_another_finished"] == 0
    redis_client.flushdb()


def test_resolve_latency_idle_and_under_load_leaves_the_resolved_challenge_untouched(
    worker_env, redis_client, staff
):
    redis_client.flushdb()
    seeded = resolve_load_seed(stakers=50, paying_winners=3_000)
    report = resolve_under_load(
        seeded=seeded, samples=5, staff=staff, worker_env=worker_env, log=str
    )
    assert report["stakers"] == 50
    for phase in ("idle", "loaded"):
        assert report[phase]["samples"] == 5
        # The token lookup, which brings the staff member's permissions, then the resolve's
        # one statement, which commits itself
        assert report[phase]["queries"] == 2
        assert 0 < report[phase]["p50_ms"] <= report[phase]["p99_ms"]
    # The samples' jobs were undone and their expansions parked, then purged: only the paid
    # challenge has a job, and no expansion of an undone job is left anywhere
    assert list(PayoutJob.objects.values_list("challenge_id", flat=True)) == [seeded["paying"]]
    assert sum(redis_client.llen(key) for key in queue_lists(PARKED_QUEUE)) == 0
    redis_client.flushdb()
