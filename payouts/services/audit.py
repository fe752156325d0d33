"""The payouts audit: does the money of every payout entry sit where its status says?

The ledger's own check (``ledger.selectors.ledger_check``) proves the books balance; it cannot
know what a payout entry is. This module holds what only payouts knows, so it lives here and
not in the ledger (the layers point down: payouts may read the ledger, not the reverse). One
checker serves the hourly platform check, the chaos run and the tests:

- ``payout_jobs_audit``, per entry: the ledger transfer ``payout:<entry_id>`` exists exactly
  when the entry is paid (``completed``, or ``reversed`` after it was paid), moves the entry's
  own amount, out of its challenge's escrow, into the entry user's wallet (ledger rail) or the
  Stripe clearing account (Stripe rail); per job: no other transfer takes money out of the
  escrow, the escrow holds the stakes less what paid entries and the fee took (plus what
  reversals brought back), once terminal exactly the unpaid entries' money, and the entries
  add up to the settlement (entries = ``total_entries``, amounts = ``total_amount``,
  ``total_amount + fee_amount`` = the stakes) and to the job's counters.
- ``stripe_transfers_audit``, per entry of a Stripe-rail job, against a list of Stripe
  transfers given as plain data (the fake's in tests and in the chaos run, Stripe's list API
  elsewhere): the transfers whose ``metadata.entry_id`` names it -- exactly one when it is paid,
  none otherwise, with the entry's amount, to the user's connected account, and the one the
  entry recorded; a transfer naming no entry of the audited jobs is reported too.
- ``platform_audit_run``: the periodic check (beat, hourly): ``ledger_check`` (incremental,
  or full) and the jobs audit of recent jobs; any violation is logged as an error (so Sentry
  sees it) and every active staff user gets a high-priority ``platform_alert`` notification.

All reads, no locks: run them against a live system. A job audited while its batches run may
show an entry paid a moment after its counters were read, so the in-flight checks compare
figures read in one statement (one snapshot).
"""

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

from ledger.models import Account
from ledger.selectors import LedgerReport, ledger_check
from ledger.services import system_account_id
from notifications.models import Notification
from notifications.services import staff_notify
from payouts.models import ConnectedAccount, PayoutEntry, PayoutJob

logger = logging.getLogger(__name__)

PAID = (PayoutEntry.Status.COMPLETED, PayoutEntry.Status.REVERSED)
# How many entry ids a violation names; the count says how many there are.
EXAMPLES = 5
# The hourly check audits jobs still running and those finished this recently: a finished
# job's entries never change again (a reversal excepted, which the ledger check covers).
AUDIT_WINDOW = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class AuditReport:
    jobs: int
    entries: int
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


# One statement, so every figure comes from one snapshot even while batches pay: per entry of
# the audited jobs, the one ledger transfer its key names (the unique key allows no second one
# under it) against what it should be; per job, its row, its entries summed by status, the
# stakes and the escrow, the fee and reversal transfers, and any escrow debit no entry explains.
_AUDIT_SQL = """
WITH e AS (
    SELECT e.id, e.job_id, e.amount, e.status IN ('completed', 'reversed') AS paid,
           c.escrow_id,
           CASE j.rail WHEN 'ledger' THEN w.id ELSE %(clearing)s END AS payee_id,
           t.id AS transfer_id, t.amount AS transfer_amount,
           t.debit_account_id, t.credit_account_id
    FROM payouts_payoutentry AS e
    JOIN payouts_payoutjob AS j ON j.id = e.job_id
    JOIN challenges_challenge AS c ON c.id = j.challenge_id
    LEFT JOIN payouts_account AS w
      ON w.user_id = e.user_id AND w.kind = 'user_wallet' AND w.currency = %(currency)s
    LEFT JOIN payouts_transfer AS t ON t.idempotency_key = 'payout:' || e.id
    WHERE e.job_id = ANY(%(jobs)s)
), problems AS (
    SELECT job_id, id, 'are paid but have no ledger transfer' AS problem
    FROM e WHERE paid AND transfer_id IS NULL
    UNION ALL
    SELECT job_id, id, 'are not paid but have a ledger transfer' FROM e
    WHERE NOT paid AND transfer_id IS NOT NULL
    UNION ALL
    SELECT job_id, id, 'have a ledger transfer of another amount than theirs' FROM e
    WHERE transfer_amount <> amount
    UNION ALL
    SELECT job_id, id, 'have a ledger transfer that does not come from the escrow' FROM e
    WHERE debit_account_id <> escrow_id
    UNION ALL
    SELECT job_id, id, 'have a ledger transfer that credits another account than the payee'
    FROM e WHERE transfer_id IS NOT NULL AND credit_account_id IS DISTINCT FROM payee_id
), jobs AS (
    SELECT j.id, j.status, j.total_entries, j.completed_count, j.failed_count,
           j.cancelled_count, j.total_amount, j.paid_amount, j.fee_amount,
           c.yes_total + c.no_total AS staked, a.balance AS escrow,
           s.entries, s.amount AS entries_amount, s.paid AS entries_paid,
           s.paid_amount AS entries_paid_amount, s.failed AS entries_failed,
           s.cancelled AS entries_cancelled, s.open AS entries_open,
           s.unpaid_amount AS entries_unpaid_amount, s.reversed_amount AS entries_reversed,
           coalesce(fee.amount, 0) AS fee_posted, rev.amount AS reversed_back,
           odd.count AS odd_debits, odd.amount AS odd_amount, odd.keys AS odd_keys
    FROM payouts_payoutjob AS j
    JOIN challenges_challenge AS c ON c.id = j.challenge_id
    JOIN payouts_account AS a ON a.id = c.escrow_id
    CROSS JOIN LATERAL (
        SELECT count(*) AS entries, coalesce(sum(amount), 0) AS amount,
               count(*) FILTER (WHERE status IN ('completed', 'reversed')) AS paid,
               coalesce(sum(amount) FILTER (WHERE status IN ('completed', 'reversed')), 0)
                   AS paid_amount,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
               count(*) FILTER (WHERE status IN ('pending', 'processing', 'retryable')) AS open,
               coalesce(sum(amount) FILTER (WHERE status NOT IN ('completed', 'reversed')), 0)
                   AS unpaid_amount,
               coalesce(sum(reversed_amount), 0) AS reversed_amount
        FROM payouts_payoutentry WHERE job_id = j.id
    ) AS s
    LEFT JOIN payouts_transfer AS fee ON fee.idempotency_key = 'fee:' || j.id
    CROSS JOIN LATERAL (
        -- Reversals come back stripe_clearing -> escrow, one transfer per Stripe reversal.
        SELECT coalesce(sum(t.amount), 0) AS amount
        FROM payouts_transfer AS t
        WHERE t.credit_account_id = c.escrow_id AND t.kind = 'reversal'
    ) AS rev
    CROSS JOIN LATERAL (
        -- Money out of the escrow under a key that is neither the fee nor an entry of this
        -- job: a second payment for an entry shows here, whatever key it was made under.
        SELECT count(*) AS count, coalesce(sum(t.amount), 0) AS amount,
               (array_agg(t.idempotency_key ORDER BY t.id))[1:%(examples)s] AS keys
        FROM payouts_transfer AS t
        WHERE t.debit_account_id = c.escrow_id
          AND t.idempotency_key <> 'fee:' || j.id
          AND NOT (t.idempotency_key ~ '^payout:[0-9]{1,18}$' AND EXISTS (
              SELECT 1 FROM payouts_payoutentry AS pe
              WHERE pe.id = substr(t.idempotency_key, 8)::bigint AND pe.job_id = j.id))
    ) AS odd
    WHERE j.id = ANY(%(jobs)s)
)
SELECT
    (SELECT coalesce(json_agg(p ORDER BY p.job_id, p.problem), '[]') FROM (
        SELECT job_id, problem, count(*) AS count,
               (array_agg(id ORDER BY id))[1:%(examples)s] AS examples
        FROM problems GROUP BY job_id, problem) AS p),
    (SELECT coalesce(json_agg(j ORDER BY j.id), '[]') FROM jobs AS j)
"""

_TERMINAL = {
    PayoutJob.Status.COMPLETED,
    PayoutJob.Status.COMPLETED_WITH_FAILURES,
    PayoutJob.Status.CANCELLED,
    PayoutJob.Status.FAILED,
}
# Finished without collecting the fee: cancelled, or failed to finalize (its escrow was wrong,
# which the escrow checks report).
_FEE_LEFT = (PayoutJob.Status.CANCELLED, PayoutJob.Status.FAILED)


def _job_violations(row: Mapping[str, Any]) -> list[str]:
    job, found = f"job {row['id']} ({row['status']})", []
    expanded = row["status"] not in (PayoutJob.Status.QUEUED, PayoutJob.Status.EXPANDING)
    # The escrow at any moment: the stakes, less what paid entries and the fee took, plus what
    # reversals brought back.
    paid = row["entries_paid_amount"]
    expected = row["staked"] - paid - row["fee_posted"] + row["reversed_back"]
    if row["escrow"] != expected:
        found.append(
            f"{job}: escrow holds {row['escrow']}, but stakes {row['staked']} - paid entries "
            f"{paid} - fee {row['fee_posted']} + reversals {row['reversed_back']} = {expected}"
        )
    if row["entries_reversed"] != row["reversed_back"]:
        found.append(
            f"{job}: its entries record {row['entries_reversed']} reversed, the ledger brought "
            f"{row['reversed_back']} back"
        )
    if row["odd_debits"]:
        found.append(
            f"{job}: {row['odd_debits']} transfer(s) of {row['odd_amount']} left the escrow "
            f"under keys of no entry of this job, e.g. {row['odd_keys']}"
        )
    if row["status"] in _TERMINAL and row["entries"] != row["total_entries"]:
        found.append(f"{job}: {row['entries']} entries, the settlement made {row['total_entries']}")
    if expanded and row["entries"] == row["total_entries"]:
        if row["entries_amount"] != row["total_amount"]:
            found.append(
                f"{job}: entries add up to {row['entries_amount']}, the settlement to "
                f"{row['total_amount']}"
            )
        if row["total_amount"] + row["fee_amount"] != row["staked"]:
            found.append(
                f"{job}: total {row['total_amount']} + fee {row['fee_amount']} != stakes "
                f"{row['staked']}"
            )
    counters = {
        "completed_count": (row["completed_count"], row["entries_paid"]),
        "failed_count": (row["failed_count"], row["entries_failed"]),
        "cancelled_count": (row["cancelled_count"], row["entries_cancelled"]),
        "paid_amount": (row["paid_amount"], paid - row["reversed_back"]),
    }
    for name, (counted, actual) in counters.items():
        if counted != actual:
            found.append(f"{job}: {name} is {counted}, its entries say {actual}")
    if row["status"] in _TERMINAL:
        collected = row["status"] not in _FEE_LEFT
        if row["entries_open"]:
            found.append(f"{job}: {row['entries_open']} entries still open in a finished job")
        if collected and row["fee_posted"] != row["fee_amount"]:
            found.append(f"{job}: fee collected {row['fee_posted']}, settled {row['fee_amount']}")
        # Escrow against unpaid entries: what stays is exactly theirs (and the uncollected
        # fee of a cancelled job, and what reversals brought back).
        unpaid = (
            row["entries_unpaid_amount"]
            + row["reversed_back"]
            + (row["fee_amount"] - row["fee_posted"] if not collected else 0)
        )
        if row["escrow"] != unpaid:
            found.append(
                f"{job}: escrow holds {row['escrow']}, its unpaid entries (and uncollected fee "
                f"and reversals) {unpaid}"
            )
    return found


def payout_jobs_audit(*, job_ids: Sequence[int]) -> AuditReport:
    """Audit the ledger side of the given jobs (see the module docstring); read-only.

    One statement whatever the number of entries (an index lookup or two per entry).
    """
    job_ids = list(job_ids)
    violations: list[str] = []
    params = {
        "jobs": job_ids,
        "currency": settings.CURRENCY,
        "clearing": system_account_id(Account.Kind.STRIPE_CLEARING),
        "examples": EXAMPLES,
    }
    with connection.cursor() as cursor:
        cursor.execute(_AUDIT_SQL, params)
        problems, rows = cursor.fetchone()
    for problem in problems:
        violations.append(
            f"job {problem['job_id']}: {problem['count']} entries {problem['problem']}, "
            f"e.g. {problem['examples']}"
        )
    entries = 0
    for row in rows:
        entries += row["entries"]
        violations.extend(_job_violations(row))
    missing = set(job_ids) - {row["id"] for row in rows}
    if missing:
        violations.append(f"no such payout jobs: {sorted(missing)}")
    return AuditReport(jobs=len(rows), entries=entries, violations=violations)


def stripe_transfers_audit(
    *, transfers: Iterable[Mapping[str, Any]], job_ids: Sequence[int]
) -> AuditReport:
    """Audit Stripe's side of the given jobs' Stripe-rail entries against ``transfers`` (plain
    dicts shaped like Stripe's transfer objects: ``id``, ``amount``, ``destination``,
    ``metadata.entry_id``); read-only. Every transfer given must belong to an entry of these
    jobs, so pass the transfers of their transfer groups (``job-<id>``), or all of them.
    """
    entries = {
        row[0]: row
        for row in PayoutEntry.objects.filter(
            job_id__in=list(job_ids), job__rail=PayoutJob.Rail.STRIPE
        ).values_list("id", "job_id", "user_id", "amount", "status", "stripe_transfer_id")
    }
    destinations = dict(
        ConnectedAccount.objects.filter(
            user_id__in={row[2] for row in entries.values()}
        ).values_list("user_id", "stripe_account_id")
    )
    by_entry: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    problems: dict[str, list[str]] = defaultdict(list)
    for transfer in transfers:
        named = str((transfer.get("metadata") or {}).get("entry_id", ""))
        if named.isdigit() and int(named) in entries:
            by_entry[int(named)].append(transfer)
        else:
            problems["Stripe transfers name no entry of the audited jobs"].append(
                str(transfer.get("id"))
            )
    for entry_id, (_, _, user_id, amount, status, recorded) in entries.items():
        found = by_entry.get(entry_id, [])
        paid = status in PAID
        if paid and not found:
            problems["entries are paid but Stripe has no transfer for them"].append(str(entry_id))
        if not paid and found:
            problems[f"entries are {status} but Stripe has a transfer for them"].append(
                str(entry_id)
            )
        if len(found) > 1:
            problems["entries have several Stripe transfers"].append(
                f"{entry_id}: {[t.get('id') for t in found]}"
            )
        if any(t.get("amount") != amount for t in found):
            problems["entries have a Stripe transfer of another amount than theirs"].append(
                f"{entry_id}: {amount} vs {[t.get('amount') for t in found]}"
            )
        destination = destinations.get(user_id)
        if any(t.get("destination") != destination for t in found):
            problems["entries have a Stripe transfer to another account than their user's"].append(
                f"{entry_id}: {destination} vs {[t.get('destination') for t in found]}"
            )
        if paid and found and recorded not in {t.get("id") for t in found}:
            problems["entries record a transfer id Stripe does not have for them"].append(
                f"{entry_id}: {recorded!r}"
            )
    violations = [
        f"{len(examples)} {problem}, e.g. {examples[:EXAMPLES]}"
        for problem, examples in problems.items()
    ]
    return AuditReport(jobs=len(set(job_ids)), entries=len(entries), violations=violations)


@dataclass(frozen=True, slots=True)
class PlatformAudit:
    ledger: LedgerReport
    payouts: AuditReport

    @property
    def violations(self) -> list[str]:
        return [f"ledger: {v}" for v in self.ledger.violations] + [
            f"payouts: {v}" for v in self.payouts.violations
        ]

    @property
    def ok(self) -> bool:
        return not self.violations


def jobs_to_audit(*, full: bool = False) -> list[int]:
    """Every job (``full``), or those not finished and those finished within ``AUDIT_WINDOW``."""
    jobs = PayoutJob.objects.all()
    if not full:
        recent = timezone.now() - AUDIT_WINDOW
        jobs = jobs.filter(models.Q(finished_at__isnull=True) | models.Q(finished_at__gte=recent))
    return list(jobs.order_by("id").values_list("id", flat=True))


def platform_audit_run(*, full: bool = False) -> PlatformAudit:
    """The periodic money check (beat, hourly; or ``full`` for an audit): ``ledger_check``
    (incremental unless ``full``: see ``ledger.selectors``) and ``payout_jobs_audit`` of the
    jobs ``jobs_to_audit`` picks.

    On any violation: an error in the log (Sentry reports it) and a high-priority
    ``platform_alert`` notification to every active staff user, once per run (dedup key
    ``platform_alert:<run time>:<user>``). Safe to run twice at once: the ledger check's
    checkpoint is advanced by one run at a time, and everything else only reads.
    """
    ledger = ledger_check(incremental=not full)
    payouts = payout_jobs_audit(job_ids=jobs_to_audit(full=full))
    audit = PlatformAudit(ledger=ledger, payouts=payouts)
    if audit.ok:
        return audit
    logger.error("money check failed: %s", audit.violations)
    shown = audit.violations[:20]
    body = "\n".join(shown)[:1000]
    with transaction.atomic(durable=True):
        staff_notify(
            kind=Notification.Kind.PLATFORM_ALERT,
            title="Money check failed",
            body=body,
            data={"violations": shown},
            dedup_key=f"platform_alert:{timezone.now().isoformat()}",
        )
    return audit
