import json

from django.core.management import call_command
from django.core.management.base import BaseCommand

from proof.chaos import ChaosConfig, ChaosRun


class Command(BaseCommand):
    help = (
        "Pay a ledger job and a Stripe job while a seeded schedule kills workers, restarts "
        "Redis and PostgreSQL, duplicates batch tasks and makes Stripe fail; then check that "
        "nobody was paid twice and the ledger balances. Exit 1 on any violation."
    )

    def add_arguments(self, parser):
        defaults = ChaosConfig()
        parser.add_argument("--winners", type=int, default=defaults.winners)
        parser.add_argument("--stripe-winners", type=int, default=defaults.stripe_winners)
        parser.add_argument("--seed", type=int, default=defaults.seed)
        parser.add_argument("--kills", type=int, default=defaults.kills)
        parser.add_argument("--kill-interval", type=float, default=defaults.kill_interval)
        parser.add_argument("--no-restarts", action="store_true")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, **options):
        call_command("migrate", "--noinput", verbosity=0)
        config = ChaosConfig(
            winners=options["winners"],
            stripe_winners=options["stripe_winners"],
            seed=options["seed"],
            kills=options["kills"],
            kill_interval=options["kill_interval"],
            restarts=not options["no_restarts"],
        )
        quiet = options["json"]
        report = ChaosRun(config, log=(lambda _: None) if quiet else self.stdout.write).run()
        if quiet:
            self.stdout.write(json.dumps(report, default=str))
        else:
            self._print(report)
        if report["violations"]:
            raise SystemExit(1)

    def _print(self, report: dict) -> None:
        injected = report["injected"]
        self.stdout.write(
            f"\ninjected: {injected['kills']} SIGKILLs, {injected['redis_restarts']} Redis "
            f"restart(s), {injected['postgres_restarts']} PostgreSQL restart(s), "
            f"{injected['duplicate_publishes']} duplicate batch messages, Stripe faults "
            f"{injected['stripe_faults']}"
        )
        for rail, job in report["jobs"].items():
            self.stdout.write(f"{rail} job: {job}  entries {report['entries'][rail]}")
        self.stdout.write(f"ledger_check: {report['ledger_check']}  ({report['seconds']} s)")
        if report["violations"]:
            for violation in report["violations"]:
                self.stderr.write(f"VIOLATION {violation}")
        else:
            self.stdout.write("violations: none")
