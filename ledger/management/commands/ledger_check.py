from django.core.management.base import BaseCommand

from ledger.selectors import ledger_check


class Command(BaseCommand):
    help = (
        "Verify the ledger invariants (balances sum to 0; balance = credits - debits; no "
        "negative account but world). Full by default (every transfer, names the accounts); "
        "--incremental reads only the transfers after the last checkpoint and advances it. "
        "Exit 1 on any violation."
    )

    def add_arguments(self, parser):
        parser.add_argument("--incremental", action="store_true")

    def handle(self, *args, **options):
        report = ledger_check(incremental=options["incremental"])
        for violation in report.violations:
            self.stderr.write(f"VIOLATION {violation}")
        checkpoint = f", checkpoint at transfer {report.watermark}" if report.watermark else ""
        self.stdout.write(
            f"ledger_check: {'ok' if report.ok else 'FAILED'} ({report.mode}): "
            f"{report.accounts} accounts, {report.transfers} transfers read, total balance "
            f"{report.total_balance}{checkpoint}"
        )
        if not report.ok:
            raise SystemExit(1)
