"""The product tour that ``make demo`` runs against a live server.

It seeds a challenge with many stakers, resolves it through the REST API as staff (the way
the admin does), draws the payout job's progress from the job API until it finishes, and then
verifies the money from the database: ledger invariants, escrow at zero, the fee collected.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

from django.core.management.base import BaseCommand, CommandError

from ledger.models import Account
from ledger.selectors import ledger_check
from payouts.models import PayoutJob
from proof.seeding import challenge_seed

BAR_WIDTH = 40
TERMINAL = {"completed", "completed_with_failures", "cancelled"}


def _request(method: str, url: str, *, token: str | None = None, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - our server
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise CommandError(f"{method} {url} -> {exc.code}: {exc.read().decode()}") from exc


def _bar(job: dict) -> str:
    percent = float(job["progress_percent"])
    filled = int(BAR_WIDTH * percent / 100)
    eta = job.get("eta_seconds")
    return (
        f"\r  [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percent:5.1f}%  "
        f"{job['completed']:>7}/{job['total_entries']} paid  "
        f"{job.get('rate') or 0:>8.0f}/s  eta {'-' if eta is None else f'{eta:.0f}s'}  "
        f"{job['status']:<24}"
    )


class Command(BaseCommand):
    help = "Seed a challenge, resolve it through the API, show live progress, verify the money."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument("--stakers", type=int, default=100_000)

    def handle(self, *args, base_url: str, stakers: int, **options):
        out = self.stdout
        out.write(f"1. Seeding a challenge with {stakers:,} stakers (set-based SQL)...")
        started = time.perf_counter()
        challenge = challenge_seed(stakers=stakers, seed=int(time.time()))
        out.write(
            f"   challenge #{challenge.pk}: {challenge.yes_count:,} on yes ({challenge.yes_total:,}"
            f" coins), {challenge.no_count:,} on no ({challenge.no_total:,} coins), "
            f"{time.perf_counter() - started:.1f}s"
        )

        token = _request(
            "POST",
            f"{base_url}/api/auth/token/",
            body={
                "username": os.environ["ADMIN_USERNAME"],
                "password": os.environ["ADMIN_PASSWORD"],
            },
        )["token"]
        # What staff look at before deciding; it also opens the web workers' database
        # connections, so the resolve below is timed as a warm server answers it.
        for _ in range(4):
            shown = _request("GET", f"{base_url}/api/challenges/{challenge.pk}/", token=token)
        out.write(f"   the API shows it {shown['status']}, awaiting a result")
        out.write("2. Resolving it through the API as staff: challenger_won...")
        started = time.perf_counter()
        answer = _request(
            "POST",
            f"{base_url}/api/admin/challenges/{challenge.pk}/resolve/",
            token=token,
            body={"result": "challenger_won"},
        )
        resolve_ms = (time.perf_counter() - started) * 1000
        out.write(f"   202 in {resolve_ms:.0f} ms: payout job #{answer['payout_job_id']}")

        out.write("3. Workers pay every winner in parallel batches:")
        status_url = f"{base_url}/api/admin/payout-jobs/{answer['payout_job_id']}/"
        while True:
            job = _request("GET", status_url, token=token)
            sys.stdout.write(_bar(job))
            sys.stdout.flush()
            if job["status"] in TERMINAL:
                break
            time.sleep(0.25)
        sys.stdout.write("\n")

        self._summary(answer["payout_job_id"], resolve_ms)

    def _summary(self, job_id: int, resolve_ms: float) -> None:
        job = PayoutJob.objects.select_related("challenge__escrow").get(pk=job_id)
        seconds = (job.finished_at - job.created_at).total_seconds()
        report = ledger_check()
        fees = Account.objects.get(kind=Account.Kind.PLATFORM_FEES)
        escrow = job.challenge.escrow.balance
        lines = [
            (
                "job",
                f"#{job.pk} {job.status}, {job.completed_count:,} paid, "
                f"{job.failed_count:,} failed",
            ),
            ("resolve latency", f"{resolve_ms:.0f} ms"),
            (
                "resolve -> done",
                f"{seconds:.2f} s ({job.completed_count / seconds:,.0f} payouts/s)",
            ),
            ("paid to winners", f"{job.paid_amount:,} coins"),
            (
                "fee collected",
                f"{job.fee_amount:,} coins (platform fees account: {fees.balance:,})",
            ),
            ("escrow left", f"{escrow:,} coins"),
            (
                "ledger_check",
                f"{'ok' if report.ok else 'FAILED'}: {report.accounts:,} accounts, "
                f"{report.transfers:,} transfers, sum of balances {report.total_balance}",
            ),
        ]
        self.stdout.write("\n4. Verification")
        for label, value in lines:
            self.stdout.write(f"   {label:<16} {value}")
        if not report.ok or escrow != 0 or job.status != PayoutJob.Status.COMPLETED:
            for violation in report.violations:
                self.stderr.write(f"   VIOLATION {violation}")
            raise CommandError("the demo payout did not verify")
