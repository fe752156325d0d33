import json

from django.core.management.base import BaseCommand

from proof.bench import BenchSizes, stakes_phase
from proof.bench_env import BenchDatabases, load_now
from proof.figures import summarize
from proof.limits import proof_limits_lift


class Command(BaseCommand):
    help = (
        "Run only the bench's phase of stakes through the API (gunicorn as deployed, a hot "
        "challenge then a spread, the in-process floor), --repeat times, each in a fresh "
        "database; print each figure's median, min and max as JSON."
    )

    def add_arguments(self, parser):
        sizes = BenchSizes()
        parser.add_argument("--stakes", type=int, default=sizes.stakes, help="per phase")
        parser.add_argument("--clients", type=int, default=sizes.stake_clients)
        parser.add_argument("--repeat", type=int, default=1)

    def handle(self, *args, stakes: int, clients: int, repeat: int, **options):
        proof_limits_lift()
        sizes = BenchSizes(stakes=stakes, stake_clients=clients)
        runs = []
        with BenchDatabases("bench_stakes") as databases:
            for n in range(max(1, repeat)):
                self.stderr.write(f"run {n + 1} of {repeat}")
                load = load_now()
                with databases.fresh("stakes"):
                    runs.append({"load_at_start": load, **stakes_phase(sizes, self.stderr.write)})
        self.stdout.write(json.dumps({"summary": summarize(runs), "runs": runs}, indent=1))
