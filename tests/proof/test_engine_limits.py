"""The ledger rail's machine-independent figures: work per payout and the database's limits."""

import pytest

from ledger.models import Account, Transfer
from payouts.models import PayoutEntry, PayoutJob
from proof.engine_limits import engine_cost, engine_limits
from proof.payout_bench import PayoutBenchReport


@pytest.mark.django_db(transaction=True)
def test_engine_limits_measures_a_real_job_and_leaves_it_settled():
    # When the limits are measured on a small job
    figures = engine_limits(winners=4_000, batch_size=500, explain_batches=3)
    # Then each payout of a slice wrote its entry and its transfer, and its wallet's credit
    # (heap-only when its page had room), with one entry in each full index of the entry and
    # of the transfer
    work = figures["work_per_payout"]
    assert work["slices"] == 3
    assert work["payouts_per_slice"] == 500
    assert work["rows_written"]["median"] == 3
    rows = work["rows_by_table"]
    assert rows["payouts_payoutentry"]["inserted"]["median"] == 1
    assert rows["payouts_payoutentry"]["updated"]["median"] == 0
    assert rows["payouts_transfer"]["inserted"]["median"] == 1
    assert 0.8 <= work["heap_only_updates"]["median"] <= 1
    assert work["index_entries"]["median"] >= 3 + 4
    assert work["wal_bytes"]["median"] > 0
    assert work["wal_records"]["median"] >= work["rows_written"]["median"]
    # And its WAL is told by table and index (the server runs here, so pg_waldump reads it):
    # the entry with its three indexes, the transfer with its four, the wallet
    by_relation = work["wal_bytes_by_relation"]
    assert {"payouts_payoutentry", "payoutentry_one_per_user", "payoutentry_job_id_idx"} <= set(
        by_relation
    )
    assert {"payouts_transfer", "transfer_idempotency_key", "payouts_transfer_pkey"} <= set(
        by_relation
    )
    assert {"payouts_account", "Transaction"} <= set(by_relation)
    total = sum(size["median"] for size in by_relation.values())
    assert total == pytest.approx(work["wal_bytes_transaction"]["median"], rel=0.05)
    # And both limits paid the rest of the job between them, with a rate each
    limits = figures["limits"]
    assert limits["statement"]["payouts"] + limits["posting"]["payouts"] == 4_000 - 3 * 500
    assert limits["statement"]["payouts_per_s"] > 0
    assert limits["posting"]["payouts_per_s"] > 0
    # And the job is settled as the engine settles one: every entry paid once, escrow empty
    job = PayoutJob.objects.get()
    assert job.status == PayoutJob.Status.COMPLETED
    assert job.completed_count == job.total_entries == 4_000
    entries = PayoutEntry.objects.filter(job=job)
    assert not entries.exclude(status=PayoutEntry.Status.COMPLETED).exists()
    keys = set(Transfer.objects.filter(kind="payout").values_list("idempotency_key", flat=True))
    assert keys == {f"payout:{pk}" for pk in entries.values_list("pk", flat=True)}
    assert Account.objects.get(pk=job.challenge.escrow_id).balance == 0


def test_engine_cost_gives_per_payout_figures_and_shares_of_the_limits():
    report = PayoutBenchReport(
        **{
            **dict.fromkeys(PayoutBenchReport.__dataclass_fields__, 0),
            "winners": 100_000,
            "end_to_end_seconds": 4.0,
            "payouts_per_second": 25_000,
            "rows_written": 400_000,
            "wal_bytes_written": 200_000_000,
            "job_status": "completed",
            "ledger_ok": True,
        }
    )
    limits = {"limits": {"statement": {"payouts_per_s": 50_000}, "posting": {"payouts_per_s": 0}}}
    assert engine_cost(report, limits) == {
        "winners": 100_000,
        "payouts_per_s": 25_000,
        "us_per_payout": 40.0,
        "wal_bytes_per_payout": 2_000,
        "rows_per_payout": 4.0,
        "share_of_limit": {"statement": 0.5},
    }
