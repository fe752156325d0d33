"""The chaos run's choice of the next fault (``proof.chaos.fault_next``)."""

from proof.chaos import Event, fault_next


def _row(settled: int, total: int, status: str = "running") -> dict:
    return {"status": status, "completed_count": settled, "failed_count": 0, "total_entries": total}


def test_the_fault_of_the_job_nearest_its_end_fires_first():
    # Given a Stripe fault due since long ago and a ledger fault just due, the ledger job being
    # the nearer to its end (as when a Stripe kill waits seconds for a worker in mid-call)
    stripe_kill = Event("kill_worker", "stripe", 0.1)
    ledger_kill = Event("kill_postgres", "ledger", 0.41)
    events = [stripe_kill, ledger_kill]
    rows = {"ledger": _row(5_100, 10_000), "stripe": _row(35, 300)}
    # Then the ledger fault goes first, and the Stripe one at the next look
    assert fault_next(events, rows) is ledger_kill
    ledger_kill.done_at = 6.0
    assert fault_next(events, rows) is stripe_kill


def test_within_one_job_the_earliest_planned_fault_fires_first_and_none_before_its_share():
    early, late = Event("kill_worker", "ledger", 0.2), Event("kill_redis", "ledger", 0.3)
    assert fault_next([late, early], {"ledger": _row(3_500, 10_000)}) is early
    assert fault_next([late, early], {"ledger": _row(1_999, 10_000)}) is None
