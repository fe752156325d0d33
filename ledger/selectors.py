"""Reads of the ledger shared by the API, the admin and services, and the invariant check."""

from dataclasses import dataclass

from django.db import connection
from django.db.models import Q, QuerySet

from core.errors import NotFound
from ledger.models import Account, Transfer


def wallet_get(*, user_id: int) -> Account:
    wallet = Account.objects.filter(kind=Account.Kind.USER_WALLET, user_id=user_id).first()
    if wallet is None:
        raise NotFound("This user has no wallet.", code="wallet_not_found")
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
    transfers: int
    violations: list[str]

    @property
    def ok(self) -> bool:
        return not self.violations


# One statement, so every figure comes from the same snapshot even while money moves.
_CHECK_SQL = """
WITH flows AS (
    SELECT credit_account_id AS account_id, amount AS delta FROM payouts_transfer
    UNION ALL
    SELECT debit_account_id, -amount FROM payouts_transfer
), per_account AS (
    SELECT account_id, sum(delta) AS net FROM flows GROUP BY account_id
), checked AS (
    SELECT a.id, a.kind, a.balance, coalesce(p.net, 0) AS net
    FROM payouts_account AS a LEFT JOIN per_account AS p ON p.account_id = a.id
)
SELECT
    (SELECT coalesce(sum(balance), 0) FROM checked),
    (SELECT count(*) FROM checked),
    (SELECT count(*) FROM payouts_transfer),
    (SELECT coalesce(json_agg(json_build_array(id, kind, balance, net)), '[]')
     FROM (SELECT * FROM checked WHERE balance <> net OR (balance < 0 AND kind <> 'world')
           ORDER BY id LIMIT 100) AS bad)
"""


def ledger_check() -> LedgerReport:
    """Verify invariants 1 and 2 from the rows themselves (read-only, one consistent snapshot)."""
    with connection.cursor() as cursor:
        cursor.execute(_CHECK_SQL)
        total, accounts, transfers, bad = cursor.fetchone()
    violations = [] if total == 0 else [f"sum of all balances is {total}, expected 0"]
    for account_id, kind, balance, net in bad:
        violations.append(
            f"account {account_id} ({kind}) balance {balance} != credits - debits {net}"
            if balance != net
            else f"account {account_id} ({kind}) has negative balance {balance}"
        )
    return LedgerReport(int(total), accounts, transfers, violations)
