import time

from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection, transaction

from ledger.models import Account
from ledger.selectors import ledger_check
from ledger.services import system_account_id, transfer_post
from proof.seeding import challenge_seed

# Deposits world -> wallet, round robin over the seeded wallets, with amounts from a seeded
# random(): inserted set-based in slices, then every balance they touched updated once.
_DEPOSITS_SQL = """
INSERT INTO payouts_transfer (debit_account_id, credit_account_id, amount, kind, idempotency_key)
SELECT %(world)s, w.ids[1 + (g %% w.n)], 1 + (random() * 1000)::int, 'deposit',
       'bench-deposit:' || g
FROM generate_series(%(start)s, %(stop)s - 1) AS g,
     (SELECT array_agg(id ORDER BY id) AS ids, count(*) AS n
      FROM payouts_account WHERE kind = 'user_wallet') AS w
"""

_BALANCES_SQL = """
WITH moves AS (
    SELECT credit_account_id AS id, sum(amount) AS delta FROM payouts_transfer
    WHERE idempotency_key LIKE 'bench-deposit:%%' GROUP BY credit_account_id
    UNION ALL
    SELECT %(world)s, -sum(amount) FROM payouts_transfer
    WHERE idempotency_key LIKE 'bench-deposit:%%'
)
UPDATE payouts_account AS a SET balance = a.balance + m.delta
FROM (SELECT id, sum(delta) AS delta FROM moves GROUP BY id) AS m WHERE a.id = m.id
"""


class Command(BaseCommand):
    help = (
        "Build a ledger of --stakers wallets and about --transfers transfers (set-based SQL; "
        "use a devstack root of its own, it is not cleaned up), then time ledger_check: full, "
        "the first incremental run (which builds the checkpoint), and an incremental run "
        "after --new more transfers."
    )

    def add_arguments(self, parser):
        parser.add_argument("--stakers", type=int, default=1_000_000)
        parser.add_argument("--transfers", type=int, default=10_000_000)
        parser.add_argument("--new", type=int, default=1_000)
        parser.add_argument("--slice", type=int, default=1_000_000)

    def handle(self, *args, stakers: int, transfers: int, new: int, slice: int, **options):
        call_command("migrate", "--noinput", verbosity=0)
        started = time.perf_counter()
        if not Account.objects.filter(kind=Account.Kind.USER_WALLET).exists():
            challenge_seed(stakers=stakers, seed=1, title="ledger_check bench")
            world = system_account_id(Account.Kind.WORLD)
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM payouts_transfer")
                (existing,) = cursor.fetchone()
                # Foreign-key checks of ten million rows whose accounts were just read: off.
                cursor.execute("SET session_replication_role = replica")
                for start in range(0, max(transfers - existing, 0), slice):
                    with transaction.atomic():
                        cursor.execute(
                            _DEPOSITS_SQL,
                            {
                                "world": world,
                                "start": start,
                                "stop": min(start + slice, transfers - existing),
                            },
                        )
                    self.stdout.write(
                        f"  {existing + min(start + slice, transfers - existing):,} transfers"
                    )
                cursor.execute("SET session_replication_role = DEFAULT")
                with transaction.atomic():
                    cursor.execute(_BALANCES_SQL, {"world": world})
                cursor.execute("VACUUM ANALYZE")
            self.stdout.write(f"built in {time.perf_counter() - started:.0f} s")
        for label, run in (
            ("full", lambda: ledger_check()),
            (
                "incremental, first run (builds the checkpoint)",
                lambda: ledger_check(incremental=True),
            ),
            ("incremental, nothing new", lambda: ledger_check(incremental=True)),
        ):
            self._timed(label, run)
        wallets = list(
            Account.objects.filter(kind=Account.Kind.USER_WALLET).values_list("pk", flat=True)[:2]
        )
        stamp = time.time_ns()
        for n in range(new):
            transfer_post(
                debit_account_id=wallets[n % 2],
                credit_account_id=wallets[1 - n % 2],
                amount=1,
                kind="transfer",
                idempotency_key=f"bench-new:{stamp}:{n}",
            )
        self._timed(
            f"incremental, after {new:,} new transfers", lambda: ledger_check(incremental=True)
        )

    def _timed(self, label: str, run) -> None:
        started = time.perf_counter()
        report = run()
        seconds = time.perf_counter() - started
        self.stdout.write(
            f"{label}: {seconds:.2f} s, {report.accounts:,} accounts, {report.transfers:,} "
            f"transfers read, {'ok' if report.ok else report.violations}"
        )
