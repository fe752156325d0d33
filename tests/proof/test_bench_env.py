from proof.bench_env import _url_with_database
from proof.figures import summarize


def test_summarize_gives_median_and_range_of_every_figure_and_keeps_the_rest():
    runs = [
        {"ledger": {"payouts_per_s": 30_000, "status": "completed", "ok": True}, "n": 1.5},
        {"ledger": {"payouts_per_s": 20_000, "status": "completed", "ok": True}, "n": 2.5},
        {"ledger": {"payouts_per_s": 35_000, "status": "completed", "ok": False}, "n": 0.5},
    ]

    summary = summarize(runs)

    assert summary["ledger"]["payouts_per_s"] == {"median": 30_000, "min": 20_000, "max": 35_000}
    assert summary["n"] == {"median": 1.5, "min": 0.5, "max": 2.5}
    assert summary["ledger"]["status"] == "completed"
    assert summary["ledger"]["ok"] is True  # a flag is not a figure


def test_a_bench_database_keeps_the_server_and_its_options():
    url = "postgresql://postgres:@/stakehold?host=/tmp/pg"

    assert _url_with_database(url, "bench_x") == "postgresql://postgres:@/bench_x?host=/tmp/pg"
