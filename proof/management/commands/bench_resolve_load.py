import json

from django.core.management.base import BaseCommand

from proof.bench import BenchSizes, resolve_load_phase
from proof.bench_env import BenchDatabases, load_now
from proof.figures import summarize
from proof.limits import proof_limits_lift


class Command(BaseCommand):
    help = (
        "Run only the bench's phase of resolve latency idle and while a job pays (staff "
        "signed in by token, the bench's payout workers), --repeat times, each in a fresh "
        "database; print each figure's median, min and max as JSON."
    )

    def add_arguments(self, parser):
        sizes = BenchSizes()
        parser.add_argument("--stakers", type=int, default=sizes.load_stakers)
        parser.add_argument("--paying-winners", type=int, default=sizes.load_paying_winners)
        parser.add_argument("--samples", type=int, default=sizes.resolve_samples)
        parser.add_argument("--repeat", type=int, default=1)

    def handle(
        self, *args, stakers: int, paying_winners: int, samples: int, repeat: int, **options
    ):
        proof_limits_lift()
        sizes = BenchSizes(
            load_stakers=stakers, load_paying_winners=paying_winners, resolve_samples=samples
        )
        runs = []
        with BenchDatabases("bench_resolve_load") as databases:
            for n in range(max(1, repeat)):
                self.stderr.write(f"run {n + 1} of {repeat}")
                load = load_now()
                phase = resolve_load_phase(databases, sizes, self.stderr.write)
                runs.append({"load_at_start": load, **phase})
        self.stdout.write(json.dumps({"summary": summarize(runs), "runs": runs}, indent=1))
