from django.core.management.base import BaseCommand

from ledger.selectors import ledger_check


class Command(BaseCommand):
    help = (
        "Verify the ledger invariants (balances sum to 0; balance = credits - debits). "
        "Exit 1 on any violation."
    )

    def handle(self, *args, **options):
        report = ledger_check()
        for violation in report.violations:
            self.stderr.write(f"VIOLATION {violation}")
        self.stdout.write(
            f"ledger_check: {'ok' if report.ok else 'FAILED'}: {report.accounts} accounts, "
            f"{report.transfers} transfers, total balance {report.total_balance}"
        )
        if not report.ok:
            raise SystemExit(1)
