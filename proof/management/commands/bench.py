import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand

from deploy.workers import run_log_dir
from proof.bench import QUICK, BenchSizes, bench_repeat, sizes_from
from proof.bench_plot import scale_plot
from proof.limits import proof_limits_lift


def _sizes(text: str | None) -> tuple[int, ...] | None:
    return tuple(int(n) for n in text.split(",")) if text else None


def _number(value: float, fmt: str) -> str:
    if fmt == ",":  # whole numbers as such, the rest to two decimals
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
    return format(value, fmt)


def _figure(leaf: Any, fmt: str = ",") -> str:
    """A summed-up figure: its median, and its range when the runs disagreed."""
    if not isinstance(leaf, dict) or "median" not in leaf:
        return str(leaf)
    median, low, high = (_number(leaf[key], fmt) for key in ("median", "min", "max"))
    return median if low == high else f"{median} ({low}-{high})"


def _errors(by_kind: dict[str, Any]) -> str:
    return ", ".join(f"{kind} {_figure(count)}" for kind, count in by_kind.items()) or "none"


# What one payout of a slice costs the database, in the table (every figure is in the JSON).
WORK_FIGURES = (
    "rows_written",
    "index_entries",
    "wal_records",
    "wal_bytes_transaction",
    "wal_bytes_without_fpi",
    "backend_cpu_us",
)


class Command(BaseCommand):
    help = (
        "Measure resolve latency, the ledger rail end to end through real workers at several "
        "sizes, two baselines, the Stripe rail under its rate limit, and the deadline sweep and "
        "warnings; every phase in a fresh database, --repeat times."
    )

    def add_arguments(self, parser):
        parser.add_argument("--repeat", type=int, default=1, help="runs; figures get a range")
        parser.add_argument(
            "--quick", action="store_true", help="small sizes (about two minutes): trend figures"
        )
        parser.add_argument("--winners", type=int, help="winners of the headline ledger run")
        parser.add_argument("--scale", help="winners of each ledger run, comma-separated")
        parser.add_argument("--workers", type=int, help="payout worker processes")
        parser.add_argument("--baseline-sample", type=int)
        parser.add_argument("--resolve-sizes", help="stakers, comma-separated")
        parser.add_argument("--stripe-winners", type=int)
        parser.add_argument("--sweep-challenges", type=int)
        parser.add_argument("--warning-participants", type=int)
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument(
            "--plot", type=Path, help="where to draw payouts/s and cost per payout against size"
        )

    def handle(self, *args, **options):
        sizes = sizes_from(
            QUICK if options["quick"] else BenchSizes(),
            winners=options["winners"],
            scale=_sizes(options["scale"]),
            workers=options["workers"],
            baseline_sample=options["baseline_sample"],
            resolve_sizes=_sizes(options["resolve_sizes"]),
            stripe_winners=options["stripe_winners"],
            sweep_challenges=options["sweep_challenges"],
            warning_participants=options["warning_participants"],
        )
        sizes = sizes_from(sizes, sweep_due=min(sizes.sweep_due, sizes.sweep_challenges))
        proof_limits_lift()
        quiet = options["json"]
        # Every run leaves its figures and its picture beside its worker logs, rewritten
        # after each of the runs.
        record = run_log_dir("bench-logs") / "report.json"
        plot = options["plot"] or record.with_name("scale.png")

        def keep(report: dict) -> None:
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(report, indent=1, default=str))
            scale_plot(report, plot)

        # With --json, standard output carries the JSON object alone; progress goes to stderr.
        with contextlib.redirect_stdout(sys.stderr if quiet else sys.stdout):
            report = bench_repeat(
                sizes=sizes,
                repeat=max(1, options["repeat"]),
                log=print if quiet else self.stdout.write,
                keep=keep,
            )
        if quiet:
            self.stdout.write(json.dumps(report, default=str))
            return
        self._table(report)
        self.stdout.write(f"\nfigures: {record}\nplot: {plot}")

    def _table(self, report: dict) -> None:
        summary, machine = report["summary"], report["machine"]
        ledger, base, stripe = summary["ledger"], summary["baselines"], summary["stripe"]
        limits = summary["limits"]
        evening, loaded = summary["evening"], summary["resolve_under_load"]
        fair = evening["fairness"]
        work = limits["work_per_payout"]
        rows = [
            *(
                (
                    f"resolve, {int(size):,} stakers",
                    f"p50 {_figure(r['p50_ms'])} ms, p99 {_figure(r['p99_ms'])} ms, "
                    f"{_figure(r['queries'])} queries",
                )
                for size, r in summary["resolve"].items()
            ),
            *(
                (
                    f"ledger rail, {int(size):,} winners",
                    f"{_figure(r['payouts_per_s'])} payouts/s end to end, "
                    f"{_figure(r['us_per_payout'])} us, {_figure(r['rows_per_payout'])} rows, "
                    f"{_figure(r['wal_bytes_per_payout'])} B of WAL per payout",
                )
                for size, r in summary["scale"].items()
            ),
            ("worker peak RSS", f"{_figure(ledger['worker_peak_rss_mb'])} MB"),
            (
                "baseline (a) transaction/payout",
                f"{_figure(base['per_transaction_payouts_per_s'])}/s "
                f"(engine {_figure(base['per_transaction_ratio'])}x)",
            ),
            (
                "baseline (b) task/payout",
                f"{_figure(base['task_per_payout_payouts_per_s'])}/s "
                f"(engine {_figure(base['task_per_payout_ratio'])}x)",
            ),
            *(
                (
                    f"stripe rail, {name.replace('_', ' ')}",
                    f"{_figure(r['processes'])} processes x {_figure(r['threads'])} threads: "
                    f"{_figure(r['achieved_per_s'])}/s ({_figure(r['share_of_limit'], '.0%')} of "
                    f"{_figure(stripe['limit'])}/s), busiest second {_figure(r['busiest_window'])}"
                    f" (bound {_figure(r['window_bound'])}), worker CPU "
                    f"{_figure(r['worker_cpu_ms_per_request'])} ms/request",
                )
                for name, r in stripe.items()
                if isinstance(r, dict) and "processes" in r
            ),
            *(
                (
                    f"database limit: {name}",
                    f"{_figure(r['payouts_per_s'])} payouts/s on {limits['connections']['median']}"
                    f" connections, cores busy {_figure(r['cores_busy'])} (engine "
                    f"{_figure(ledger['share_of_limit'].get(name), '.0%')} of it)",
                )
                for name, r in limits["limits"].items()
            ),
            (
                f"busy evening, {_figure(evening['challenges'])} jobs of "
                f"{_figure(evening['winners_each'])}",
                f"{_figure(evening['evening']['payouts_per_s'])} payouts/s (one job of them all: "
                f"{_figure(evening['one_big_job']['payouts_per_s'])}/s, ratio "
                f"{_figure(evening['throughput_ratio'])}); first payout p50 "
                f"{_figure(fair['first_payout_seconds_p50'])} s, max "
                f"{_figure(fair['first_payout_seconds_max'])} s; jobs that waited for another "
                f"{_figure(fair['jobs_started_after_another_finished'])}",
            ),
            (
                f"resolve, {_figure(loaded['stakers'])} stakers, idle / while "
                f"{_figure(loaded['paying_winners'])} are paid",
                f"p50 {_figure(loaded['idle']['p50_ms'])} / "
                f"{_figure(loaded['loaded']['p50_ms'])} ms, p99 "
                f"{_figure(loaded['idle']['p99_ms'])} / {_figure(loaded['loaded']['p99_ms'])} ms",
            ),
            *(
                (
                    f"stakes through the API, {name}",
                    f"{_figure(summary['stakes'][name]['per_s'])}/s, p50 "
                    f"{_figure(summary['stakes'][name]['p50_ms'])} ms, p99 "
                    f"{_figure(summary['stakes'][name]['p99_ms'])} ms, errors "
                    f"{_errors(summary['stakes'][name]['errors'])} ("
                    f"{_figure(summary['stakes'][name]['share_of_floor'], '.0%')} of the "
                    f"in-process floor, {_figure(summary['stakes']['floor']['per_s'])}/s)",
                )
                for name in ("hot", "spread")
            ),
            (
                "work per payout (one slice)",
                ", ".join(
                    f"{name} {_figure(work[name]['median'])}"
                    for name in WORK_FIGURES
                    if isinstance(work.get(name), dict)
                ),
            ),
        ]
        for name, figures in summary["lifecycle"].items():
            rows.append(
                (f"lifecycle {name}", ", ".join(f"{k} {_figure(v)}" for k, v in figures.items()))
            )
        width = max(len(name) for name, _ in rows)
        self.stdout.write("")
        self.stdout.write(
            f"{machine['cpu']}, {machine['cpus']} CPUs, {machine['memory_gib']} GiB, PostgreSQL "
            f"{machine['postgresql'].get('server_version')}; {report['repeat']} run(s): median "
            "(min-max)"
        )
        for name, value in rows:
            self.stdout.write(f"{name:<{width}}  {value}")
