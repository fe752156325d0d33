import json

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from proof.chaos import ChaosConfig, ChaosRefused, ChaosRun
from proof.limits import proof_limits_lift


class Command(BaseCommand):
    help = (
        "Pay a ledger job and a Stripe job while a seeded schedule kills workers, kills and "
        "restarts Redis and PostgreSQL, kills beat mid-sweep, duplicates batch tasks and makes "
        "Stripe fail; then check that every fault hit a job still paying, that nobody was paid "
        "twice or wrongly (payouts audit, Stripe's transfers per entry) and that the ledger "
        "balances. Exit 1 on any violation; refuses to run off the embedded stack."
    )

    def add_arguments(self, parser):
        defaults = ChaosConfig()
        parser.add_argument("--winners", type=int, default=defaults.winners)
        parser.add_argument("--stripe-winners", type=int, default=defaults.stripe_winners)
        parser.add_argument("--seed", type=int, default=defaults.seed)
        parser.add_argument("--kills", type=int, default=defaults.kills)
        parser.add_argument("--no-restarts", action="store_true")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, **options):
        proof_limits_lift()
        config = ChaosConfig(
            winners=options["winners"],
            stripe_winners=options["stripe_winners"],
            seed=options["seed"],
            kills=options["kills"],
            restarts=not options["no_restarts"],
        )
        quiet = options["json"]
        try:
            run = ChaosRun(config, log=(lambda _: None) if quiet else self.stdout.write)
        except ChaosRefused as exc:
            raise CommandError(str(exc)) from exc
        call_command("migrate", "--noinput", verbosity=0)
        report = run.run()
        if quiet:
            self.stdout.write(json.dumps(report, default=str))
        else:
            self._print(report)
        if report["violations"]:
            raise SystemExit(1)

    def _print(self, report: dict) -> None:
        injected = report["injected"]
        self.stdout.write(
            f"\ninjected: {injected['kills']} worker SIGKILLs, Redis {injected['redis_kills']} "
            f"SIGKILL(s) + {injected['redis_restarts']} restart(s), PostgreSQL "
            f"{injected['postgres_kills']} SIGKILL(s) + {injected['postgres_restarts']} "
            f"restart(s), beat {injected['beat_kills']} SIGKILL(s) mid-sweep (then "
            f"{injected['sweeps_after_beat_kill']} sweeps), {injected['duplicate_publishes']} "
            f"duplicate batch and slice messages, Stripe faults {injected['stripe_faults']}"
        )
        for rail, job in report["jobs"].items():
            self.stdout.write(f"{rail} job: {job}  entries {report['entries'][rail]}")
        self.stdout.write(
            f"audited {report['audit']['entries']} entries, "
            f"{report['stripe_transfers']} Stripe transfers; ledger_check: "
            f"{report['ledger_check']}  ({report['seconds']} s)"
        )
        if report["violations"]:
            for violation in report["violations"]:
                self.stderr.write(f"VIOLATION {violation}")
        else:
            self.stdout.write("violations: none")
