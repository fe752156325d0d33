"""The bench's one picture: payouts/s and cost per payout against the number of winners.

Flat cost per payout is the claim it shows at a glance (the engine does the same work per
payout at 100,000 winners as at 3,000,000); the error bars are the range over repeated runs.
"""

from pathlib import Path
from typing import Any


def _count(n: int) -> str:
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size:
            return f"{n / size:g}{suffix}"
    return str(n)


def scale_plot(report: dict[str, Any], path: Path) -> Path:
    """Draw ``report``'s ledger runs by size into the PNG ``path`` and return it."""
    import matplotlib

    matplotlib.use("Agg")  # no screen: render straight to a file
    import matplotlib.pyplot as plt

    scale = report["summary"]["scale"]
    winners = sorted(int(size) for size in scale)

    def series(key: str, factor: float = 1.0) -> tuple[list[float], list[list[float]]]:
        medians, below, above = [], [], []
        for size in winners:
            leaf = scale[str(size)][key]
            medians.append(leaf["median"] * factor)
            below.append((leaf["median"] - leaf["min"]) * factor)
            above.append((leaf["max"] - leaf["median"]) * factor)
        return medians, [below, above]

    figure, (rate_axis, cost_axis) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    rate, rate_range = series("payouts_per_s")
    rate_axis.errorbar(winners, rate, yerr=rate_range, marker="o", capsize=4, color="#1f6feb")
    rate_axis.set_title("Ledger rail: payouts per second, end to end")
    cost, cost_range = series("us_per_payout")
    cost_axis.errorbar(winners, cost, yerr=cost_range, marker="o", capsize=4, color="#d1242f")
    wal, _ = series("wal_bytes_per_payout")
    cost_axis.set_title("Cost per payout")
    cost_axis.set_ylabel("microseconds of wall time")
    wal_axis = cost_axis.twinx()
    wal_axis.plot(winners, wal, marker="s", linestyle="--", color="#6e7781")
    wal_axis.set_ylabel("bytes of WAL (dashed)")
    # Headroom above the highest point: with the axis ending at it, the dashed line ran along
    # the frame and could not be told from it.
    wal_axis.set_ylim(0, max(wal) * 1.25)
    for axis in (rate_axis, cost_axis):
        axis.set_xscale("log")
        axis.set_xticks(winners, labels=[_count(n) for n in winners])
        axis.minorticks_off()
        axis.set_xlabel("winners in one job")
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
    machine = report["machine"]
    figure.suptitle(
        f"{machine['cpus']} CPUs ({machine['cpu']}), {report['repeat']} run(s): median, bars "
        "min to max",
        fontsize=9,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
