"""The stake load measurement at a tiny size: a real gunicorn, real clients, both phases."""

import pytest

from challenges.models import Stake
from proof.stake_load import stake_load


@pytest.mark.django_db(transaction=True)
def test_stake_load_reports_both_phases_next_to_the_floor():
    report = stake_load(clients=2, stakes=8, spread=2, floor_stakes=4, log=lambda line: None)

    for phase in ("hot", "spread"):
        figures = report[phase]
        assert figures["errors"] == {}
        assert figures["requests"] == 8
        assert figures["per_s"] > 0
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
        clients_p50 = figures["client_p50_ms"]
        assert 0 < clients_p50["fastest"] <= clients_p50["slowest"] <= figures["max_ms"]
        assert figures["per_stake"]["pg_transactions"] >= 1
        assert figures["share_of_floor"] > 0
    assert report["floor"]["stakes"] == 4
    assert 0 < report["queries_per_stake"]["service"] < report["queries_per_stake"]["request"]
    # every stake the clients sent landed: 2 phases of warm-up and measure, the floor's, and
    # the request-count ones
    warmup = 2 * 5
    assert Stake.objects.count() == 2 * (warmup + 8) + 5 + 3
