import contextlib
import json
import sys

from django.core.management import call_command
from django.core.management.base import BaseCommand

from proof.bench import bench_run
from proof.limits import proof_limits_lift


class Command(BaseCommand):
    help = (
        "Measure resolve latency, the ledger rail end to end through real workers, two "
        "baselines, the Stripe rail under its rate limit, and the deadline sweep and warnings."
    )

    def add_arguments(self, parser):
        parser.add_argument("--winners", type=int, default=1_000_000)
        parser.add_argument("--workers", type=int, default=2, help="worker processes")
        parser.add_argument("--baseline-sample", type=int, default=20_000)
        # Smaller sizes for a quick run on a shared machine; the defaults are the proof's.
        parser.add_argument(
            "--resolve-sizes", default="10,10000,1000000", help="stakers, comma-separated"
        )
        parser.add_argument("--stripe-winners", type=int, default=2_000)
        parser.add_argument("--sweep-challenges", type=int, default=1_000_000)
        parser.add_argument("--warning-participants", type=int, default=100_000)
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, winners: int, workers: int, baseline_sample: int, **options):
        proof_limits_lift()
        call_command("migrate", "--noinput", verbosity=0)
        quiet = options["json"]
        # With --json, standard output carries the JSON object alone; progress goes to stderr.
        with contextlib.redirect_stdout(sys.stderr if quiet else sys.stdout):
            report = bench_run(
                winners=winners,
                workers=workers,
                baseline_sample=baseline_sample,
                resolve_sizes=tuple(int(n) for n in options["resolve_sizes"].split(",")),
                stripe_winners=options["stripe_winners"],
                sweep_challenges=options["sweep_challenges"],
                sweep_due=min(10_000, options["sweep_challenges"]),
                warning_participants=options["warning_participants"],
                log=print if quiet else self.stdout.write,
            )
        if quiet:
            self.stdout.write(json.dumps(report, default=str))
            return
        self._table(report)

    def _table(self, report: dict) -> None:
        ledger, base, stripe = report["ledger"], report["baselines"], report["stripe"]
        rows = [
            *(
                (f"resolve, {int(size):,} stakers", f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
                for size, r in report["resolve"].items()
            ),
            (
                f"ledger rail, {ledger['winners']:,} winners",
                f"{ledger['seconds']} s end to end, {ledger['payouts_per_s']:,} payouts/s",
            ),
            ("worker peak RSS", f"{ledger['worker_peak_rss_mb']} MB"),
            (
                "database writes",
                f"{ledger['rows_written']:,} rows, "
                f"{ledger['wal_bytes_written'] / 2**20:,.0f} MB of WAL (resolve to completed)",
            ),
            (
                "baseline (a) transaction/payout",
                f"{base['per_transaction']['payouts_per_s']:,}/s "
                f"(engine {base['per_transaction']['ratio']}x)",
            ),
            (
                "baseline (b) task/payout",
                f"{base['task_per_payout']['payouts_per_s']:,}/s "
                f"(engine {base['task_per_payout']['ratio']}x)",
            ),
            (
                f"stripe rail, limit {stripe['limit']:g}/s",
                f"{stripe['achieved_per_s']}/s ({stripe['share_of_limit']:.0%} of the limit), "
                f"busiest second {stripe['busiest_window']} (bound {stripe['window_bound']:g})",
            ),
        ]
        for name, figures in report["lifecycle"].items():
            rows.append((f"lifecycle {name}", json.dumps(figures, default=str)))
        width = max(len(name) for name, _ in rows)
        self.stdout.write("")
        for name, value in rows:
            self.stdout.write(f"{name:<{width}}  {value}")
