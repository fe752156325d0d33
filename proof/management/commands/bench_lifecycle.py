from django.core.management.base import BaseCommand

from proof.lifecycle_bench import bench_sweep, bench_warnings
from proof.limits import proof_limits_lift


class Command(BaseCommand):
    help = (
        "Time the deadline sweep and the deadline-warning fan-out on generated data "
        "(rolled back afterwards) and print the figures."
    )

    def add_arguments(self, parser):
        parser.add_argument("--challenges", type=int, default=1_000_000)
        parser.add_argument("--due", type=int, default=10_000)
        parser.add_argument("--participants", type=int, default=100_000)

    def handle(self, *args, challenges: int, due: int, participants: int, **options):
        proof_limits_lift()
        for name, figures in (
            ("sweep", bench_sweep(challenges=challenges, due=min(due, challenges))),
            ("warnings", bench_warnings(participants=max(participants, 1))),
        ):
            self.stdout.write(name)
            for key, value in figures.items():
                self.stdout.write(f"  {key:<40} {value}")
