"""The lifecycle bench at tiny sizes: it reports its figures and leaves no row behind."""

import pytest

from challenges.models import Challenge, DeadlineWarning
from ledger.models import Account
from notifications.models import Notification
from proof.lifecycle_bench import bench_sweep, bench_warnings

# The bench commits its data (it times whole beat ticks, commit included), so these tests
# need real transactions.
pytestmark = pytest.mark.django_db(transaction=True)


def _rows() -> tuple[int, int, int, int]:
    return (
        Challenge.objects.count(),
        Account.objects.count(),
        Notification.objects.count(),
        DeadlineWarning.objects.count(),
    )


def test_the_sweep_bench_times_a_tick_and_cleans_up():
    before = _rows()

    figures = bench_sweep(challenges=200, due=50)

    assert (figures["moved_to_pending_admin"], figures["cancelled"]) == (45, 5)
    # Two staff users told once about the 45, the lone challenger about each of the 5
    assert figures["notifications_created"] == 2 + 5
    assert figures["wal_bytes_per_due_challenge"] > 0
    assert figures["baseline_per_row_challenges_per_s"] > 0
    # primary key, dedup key, (user, id), undelivered
    assert figures["notification_index_entries"] == 4
    assert _rows() == before


def test_the_warnings_bench_times_a_tick_and_cleans_up():
    before = _rows()

    figures = bench_warnings(participants=300)

    assert figures["notifications_created"] == 300
    assert figures["delivery_tasks"] == 1
    assert figures["wal_bytes_per_row"] > 0
    # keyless: no entry in the dedup key's index
    assert figures["notification_index_entries"] == 3
    assert _rows() == before
