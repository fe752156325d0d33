"""Reads of the ledger shared by the API, the admin and services, and the invariant check
(whose incremental mode also advances its checkpoint)."""

import secrets
from dataclasses import dataclass

from django.db import OperationalError, connection, transaction
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Now

from core.errors import NotFound
from ledger.models import Account, Checkpoint, Transfer

# The id of the user's wallet (``%(user_id)s``), the row ``wallet_get`` reads: for a statement
# that needs the wallet to embed as a subquery instead of asking for it in a round trip first.
WALLET_ID_SQL = (
    "SELECT id FROM payouts_account WHERE kind = 'user_wallet' AND user_id = %(user_id)s "
    "ORDER BY id LIMIT 1"
)


def wallet_missing() -> NotFound:
    """The refusal for a user without a wallet, wherever the lookup was made."""
    return NotFound("This user has no wallet.", code="wallet_not_found")


def wallet_get(*, user_id: int) -> Account:
    wallet = Account.objects.filter(kind=Account.Kind.USER_WALLET, user_id=user_id).first()
    if wallet is None:
        raise wallet_missing()
    return wallet


def account_transfers(*, account_id: int, limit: int = 20) -> QuerySet[Transfer]:
    """The account's most recent transfers, either direction, newest first."""
    return Transfer.objects.filter(
        Q(debit_account_id=account_id) | Q(credit_account_id=account_id)
    ).order_by("-id")[:limit]


@dataclass(frozen=True, slots=True)
class LedgerReport:
    total_balance: int
    accounts: int
    # Transfers read: all of them (full), or those after the checkpoint (incremental).
    transfers: int
    violations: list[str]
    mode: str = "full"
    # Incremental: every transfer up to this id is folded into the checkpoint now.
    watermark: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations


# One statement, so every figure comes from the same snapshot even while money moves. The
# transfers are summed per account, then grouped with the accounts themselves: no join, so its
# cost is a pass, a hash or a sort whatever the planner believes of the tables. (A join of the
# accounts to their sums was quadratic when the statistics said the accounts were none --
# analyzed while the table held only rolled-back rows -- and they were tens of thousands: a
# nested loop over both.)
_CHECK_SQL = """
WITH flows AS (
    SELECT credit_account_id AS account_id, amount AS delta FROM payouts_transfer
    UNION ALL
    SELECT debit_account_id, -amount FROM payouts_transfer
), sides AS (
    SELECT id, kind, balance, 0 AS net, true AS present FROM payouts_account
    UNION ALL
    SELECT account_id, NULL, 0, sum(delta), false FROM flows GROUP BY account_id
), checked AS (
    SELECT id, max(kind) AS kind, sum(balance) AS balance, sum(net) AS net,
           bool_or(present) AS present
    FROM sides GROUP BY id
)
SELECT
    (SELECT coalesce(sum(balance), 0) FROM checked),
    (SELECT count(*) FILTER (WHERE present) FROM checked),
    (SELECT count(*) FROM payouts_transfer),
    (SELECT coalesce(json_agg(json_build_array(id, kind, balance, net)), '[]')
     FROM (SELECT * FROM checked
           WHERE present AND (balance <> net OR (balance < 0 AND kind <> 'world'))
           ORDER BY id LIMIT 100) AS bad),
    (SELECT coalesce(json_agg(id), '[]')
     FROM (SELECT id FROM checked WHERE NOT present ORDER BY id LIMIT 100) AS missing)
"""


def ledger_check(*, incremental: bool = False) -> LedgerReport:
    """Verify invariants 1 and 2 (balances sum to 0, each balance = credits - debits), that
    no account but ``world`` is negative and that every transfer names existing accounts, from
    the rows themselves.

    Full (the default, for audits and the tests): read-only, one consistent snapshot, every
    transfer ever made read -- minutes on a database of millions of accounts. Incremental
    (``incremental=True``, the hourly check): reads only the transfers after the checkpoint
    and one pass over the accounts, then advances the checkpoint; it proves the same
    invariants for every account at once but cannot name the account that breaks them (run
    the full check for that). The payouts' own invariants (escrow against unpaid entries, one
    transfer per entry) need to know what an entry is: ``payouts.services.audit``.
    """
    if incremental:
        return _incremental_check()
    with connection.cursor() as cursor:
        cursor.execute(_CHECK_SQL)
        total, accounts, transfers, bad, missing = cursor.fetchone()
    violations = _total_violations(total)
    violations.extend(
        f"transfers name account {account_id}, which does not exist" for account_id in missing
    )
    for account_id, kind, balance, net in bad:
        violations.append(
            f"account {account_id} ({kind}) balance {balance} != credits - debits {net}"
            if balance != net
            else f"account {account_id} ({kind}) has negative balance {balance}"
        )
    return LedgerReport(int(total), accounts, transfers, violations)


def _total_violations(total: int) -> list[str]:
    return [] if total == 0 else [f"sum of all balances is {total}, expected 0"]


# The incremental check compares, modulo a prime, the weighted sum of the balances with the
# weighted sum of each account's credits - debits: the checkpoint's sum plus the transfers
# after it. Each account's weight is a salted 31-bit hash of its id, so a wrong balance
# anywhere changes the sum, and several wrong balances cancel out only by a 1-in-2^31 chance
# (the plain sum, which must be 0, is checked as well). Every product stays below 2^62.
# mod(x, 2^31 - 1) normalised to 0..2^31 - 2, times a weight of 31 bits.
_INCREMENTAL_SQL = """
WITH accounts AS (
    SELECT coalesce(sum(balance), 0) AS total, count(*) AS accounts,
           count(*) FILTER (WHERE balance < 0 AND kind <> 'world') AS negative,
           mod(coalesce(sum(
               mod(mod(balance, 2147483647) + 2147483647, 2147483647)
               * mod(hashint8extended(id, %(salt)s) & 2147483647, 2147483647)
           ), 0), 2147483647) AS checksum
    FROM payouts_account
), flows AS (
    SELECT id, credit_account_id AS account_id, amount AS delta
    FROM payouts_transfer WHERE id > %(watermark)s
    UNION ALL
    SELECT id, debit_account_id, -amount FROM payouts_transfer WHERE id > %(watermark)s
), weighted AS (
    SELECT id,
           mod(mod(delta, 2147483647) + 2147483647, 2147483647)
           * mod(hashint8extended(account_id, %(salt)s) & 2147483647, 2147483647) AS w
    FROM flows
)
SELECT a.total, a.accounts, a.negative, a.checksum::bigint,
       s.transfers, s.folded,
       mod(%(checksum)s + s.all_new, 2147483647)::bigint,
       mod(%(checksum)s + s.up_to_barrier, 2147483647)::bigint
FROM accounts AS a CROSS JOIN (
    SELECT count(*) / 2 AS transfers, count(*) FILTER (WHERE id <= %(barrier)s) / 2 AS folded,
           coalesce(sum(w), 0) AS all_new,
           coalesce(sum(w) FILTER (WHERE id <= %(barrier)s), 0) AS up_to_barrier
    FROM weighted
) AS s
"""

# Waiting for every transaction that is inserting transfers to end (and holding new ones
# back meanwhile) is what makes "every id up to the barrier is final" true: a transfer whose
# transaction is still open may have a smaller id than one already committed.
_BARRIER_TIMEOUT = "1s"


def _barrier() -> int | None:
    """The highest transfer id below which nothing can still appear, or None if the
    transactions writing transfers did not all end within ``_BARRIER_TIMEOUT`` (the
    checkpoint then stays where it is this time)."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{_BARRIER_TIMEOUT}'")
            cursor.execute("LOCK TABLE payouts_transfer IN SHARE MODE")
            cursor.execute("SELECT coalesce(max(id), 0) FROM payouts_transfer")
            return int(cursor.fetchone()[0])
    except OperationalError:
        return None


def _incremental_check() -> LedgerReport:
    checkpoint = Checkpoint.objects.order_by("id").first()
    if checkpoint is None:
        checkpoint = Checkpoint(watermark=0, checksum=0, salt=secrets.randbits(62), transfers=0)
    barrier = _barrier()
    with connection.cursor() as cursor:
        cursor.execute(
            _INCREMENTAL_SQL,
            {
                "watermark": checkpoint.watermark,
                "checksum": checkpoint.checksum,
                "salt": checkpoint.salt,
                "barrier": checkpoint.watermark if barrier is None else barrier,
            },
        )
        row = cursor.fetchone()
    total, accounts, negative, checksum, transfers, folded, expected, advanced = row
    violations = _total_violations(total)
    if negative:
        violations.append(f"{negative} accounts other than world have a negative balance")
    if checksum != expected:
        violations.append(
            "some account's balance differs from its credits - debits (checksum over the "
            f"transfers up to the checkpoint at #{checkpoint.watermark} and the {transfers} "
            "after it); the full check (manage.py ledger_check) names the accounts"
        )
    if barrier is not None and barrier > checkpoint.watermark:
        # Advanced by one run at a time: a concurrent run that moved it first wins.
        if checkpoint.pk is None:
            checkpoint_row = Checkpoint(
                pk=1, watermark=barrier, checksum=advanced, salt=checkpoint.salt, transfers=folded
            )
            Checkpoint.objects.bulk_create([checkpoint_row], ignore_conflicts=True)
        else:
            Checkpoint.objects.filter(pk=checkpoint.pk, watermark=checkpoint.watermark).update(
                watermark=barrier,
                checksum=advanced,
                transfers=F("transfers") + folded,
                updated_at=Now(),
            )
    return LedgerReport(
        int(total),
        accounts,
        transfers,
        violations,
        mode="incremental",
        watermark=checkpoint.watermark if barrier is None else max(barrier, checkpoint.watermark),
    )
