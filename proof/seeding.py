"""Seeding a challenge with many stakers, set-based, for tests, the demo, benchmarks and chaos.

Everything a real staker leaves behind is created -- user, wallet, deposit (world -> wallet),
stake, stake transfer (wallet -> escrow, key ``stake:<stake_id>``) and the per-side totals on the
challenge -- but by a handful of ``INSERT ... SELECT`` statements over ``generate_series``
instead of one service call per user, so a million stakers take seconds. Ids are drawn from
the tables' own sequences up front, which lets every statement join on them without sending a
single id through Python.
"""

import secrets
from datetime import timedelta
from functools import cache
from typing import Any

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import connection, transaction
from django.utils import timezone

from challenges.models import Challenge
from core.errors import InvalidInput
from core.money import MAX_AMOUNT
from ledger.models import Account
from ledger.services import account_create, system_account_id

# Seeded users can log in with this password (demo and manual testing only).
SEED_PASSWORD = "stakehold-seeded-user"  # noqa: S105 - a known password for generated users
# Seeding this many stakers or more refreshes the planner's statistics afterwards.
ANALYZE_THRESHOLD = 50_000


@cache
def _password_hash() -> str:
    """One real hash, computed once per process and shared by every seeded user."""
    return make_password(SEED_PASSWORD)


# Amounts are drawn from a seeded random() so a seed reproduces the same challenge.
_ROWS_SQL = """
CREATE TEMPORARY TABLE seed_rows ON COMMIT DROP AS
SELECT g,
       nextval('auth_user_id_seq') AS user_id,
       nextval('payouts_account_id_seq') AS wallet_id,
       nextval('challenges_stake_id_seq') AS stake_id,
       CASE WHEN g <= %(yes)s THEN 'yes' ELSE 'no' END AS side,
       %(low)s + floor(random() * %(span)s)::bigint AS amount
FROM generate_series(1, %(n)s) AS g
ORDER BY g
"""

_USERS_SQL = """
INSERT INTO auth_user
    (id, password, is_superuser, username, first_name, last_name, email, is_staff, is_active,
     date_joined)
SELECT user_id, %(password)s, false, %(prefix)s || g, '', '', '', false, true, now()
FROM seed_rows ORDER BY g
"""

# ``funded``: what each wallet holds once seeding commits (its deposit less its stake).
_WALLETS_SQL = """
INSERT INTO payouts_account (id, kind, user_id, currency, balance, created_at)
SELECT wallet_id, 'user_wallet', user_id, %(currency)s, %(funded)s, now()
FROM seed_rows ORDER BY g
"""

_STAKES_SQL = """
INSERT INTO challenges_stake (id, challenge_id, user_id, side, amount, created_at)
SELECT stake_id, %(challenge_id)s, user_id, side, amount, now() FROM seed_rows ORDER BY g
"""

# Each user deposits exactly their stake, so every seeded wallet holds 0 after staking and
# holds exactly its payout after the challenge settles.
_TRANSFERS_SQL = """
INSERT INTO payouts_transfer
    (debit_account_id, credit_account_id, amount, kind, idempotency_key, created_at)
SELECT %(world_id)s, wallet_id, amount, 'deposit', 'deposit:seed:' || wallet_id, now()
FROM seed_rows
UNION ALL
SELECT wallet_id, %(escrow_id)s, amount, 'stake', 'stake:' || stake_id, now()
FROM seed_rows
"""

# World and escrow net out the transfers above (a wallet's deposit and stake cancel out).
# Locked in id order, as every posting does.
_BALANCES_SQL = """
WITH total AS (SELECT coalesce(sum(amount), 0) AS amount FROM seed_rows),
locked AS (
    SELECT id FROM payouts_account WHERE id IN (%(world_id)s, %(escrow_id)s)
    ORDER BY id FOR NO KEY UPDATE
)
UPDATE payouts_account AS a
SET balance = a.balance + CASE WHEN a.id = %(world_id)s THEN -t.amount ELSE t.amount END
FROM total AS t, locked AS l
WHERE a.id = l.id
"""

_TOTALS_SQL = """
SELECT coalesce(sum(amount) FILTER (WHERE side = 'yes'), 0),
       coalesce(sum(amount) FILTER (WHERE side = 'no'), 0),
       count(*) FILTER (WHERE side = 'yes'),
       count(*) FILTER (WHERE side = 'no'),
       min(user_id) FILTER (WHERE g = 1)
FROM seed_rows
"""


def challenge_seed(
    *,
    stakers: int,
    yes_share: float = 0.5,
    min_amount: int = 100,
    max_amount: int = 10_000,
    status: str = Challenge.Status.PENDING_ADMIN,
    seed: int = 0,
    username_prefix: str | None = None,
    title: str | None = None,
) -> Challenge:
    """Create a challenge with ``stakers`` new users staking on it; return the challenge.

    ``round(stakers * yes_share)`` of them stake on ``yes``, the rest on ``no``; amounts are
    uniform in ``[min_amount, max_amount]``, reproducible for a given ``seed``. The first staker
    is the challenger. Users are named ``<username_prefix><n>`` (a random prefix by default).
    One transaction: the ledger invariants hold when it commits (``ledger_check`` is clean).
    Not idempotent: every call creates new users.
    """
    if stakers < 1 or not 0 <= yes_share <= 1:
        raise InvalidInput("stakers must be >= 1 and yes_share within [0, 1].")
    if not 0 < min_amount <= max_amount <= MAX_AMOUNT:
        raise InvalidInput("Amounts must satisfy 0 < min_amount <= max_amount <= 10**15.")
    if status not in Challenge.Status.values:
        raise InvalidInput(f"Unknown challenge status {status!r}.")
    prefix = username_prefix or f"s{secrets.token_hex(4)}_"
    now = timezone.now()
    # Open challenges are still taking stakes; the others are past their deadline.
    due = now + timedelta(days=1) if status in Challenge.OPEN_STATUSES else now - timedelta(hours=1)
    params: dict[str, Any] = {
        "n": stakers,
        "yes": round(stakers * yes_share),
        "low": min_amount,
        "span": max_amount - min_amount + 1,
        "password": _password_hash(),
        "prefix": prefix,
        "currency": settings.CURRENCY,
        "world_id": system_account_id(Account.Kind.WORLD),
        "funded": 0,
    }
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        # random() is seeded per session; map the seed into setseed's [-1, 1] range.
        cursor.execute("SELECT setseed(%s)", [(seed % 2_000_001) / 1_000_000 - 1])
        cursor.execute(_ROWS_SQL, params)
        cursor.execute(_USERS_SQL, params)
        cursor.execute(_WALLETS_SQL, params)
        cursor.execute(_TOTALS_SQL)
        yes_total, no_total, yes_count, no_count, challenger_id = cursor.fetchone()
        escrow = account_create(kind=Account.Kind.CHALLENGE_ESCROW)
        challenge = Challenge.objects.create(
            title=title or f"Seeded challenge with {stakers} stakers",
            challenger_id=challenger_id,
            escrow=escrow,
            due_date=due,
            status=status,
            yes_total=yes_total,
            no_total=no_total,
            yes_count=yes_count,
            no_count=no_count,
        )
        params.update(challenge_id=challenge.pk, escrow_id=escrow.pk)
        cursor.execute(_STAKES_SQL, params)
        cursor.execute(_TRANSFERS_SQL, params)
        cursor.execute(_BALANCES_SQL, params)
        # ON COMMIT DROP is not enough when a caller's transaction (a test) encloses this one.
        cursor.execute("DROP TABLE seed_rows")
    if stakers >= ANALYZE_THRESHOLD:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE auth_user, payouts_account, challenges_stake, payouts_transfer")
    return challenge


_FUNDED_ROWS_SQL = """
CREATE TEMPORARY TABLE seed_rows ON COMMIT DROP AS
SELECT g,
       nextval('auth_user_id_seq') AS user_id,
       nextval('payouts_account_id_seq') AS wallet_id
FROM generate_series(1, %(n)s) AS g
ORDER BY g
"""

_DEPOSITS_SQL = """
INSERT INTO payouts_transfer
    (debit_account_id, credit_account_id, amount, kind, idempotency_key, created_at)
SELECT %(world_id)s, wallet_id, %(funded)s, 'deposit', 'deposit:seed:' || wallet_id, now()
FROM seed_rows
"""

_WORLD_SQL = """
UPDATE payouts_account SET balance = balance - %(funded)s * %(n)s WHERE id = %(world_id)s
"""


def users_seed(*, users: int, balance: int, username_prefix: str | None = None) -> list[int]:
    """Create ``users`` new users, each with a wallet holding ``balance`` (a deposit from the
    ``world`` account); return their ids in creation order.

    Set-based like ``challenge_seed``: a few statements whatever the number of users, in one
    transaction after which the ledger invariants hold. Not idempotent.
    """
    if users < 1 or not 0 < balance <= MAX_AMOUNT or users * balance > MAX_AMOUNT:
        raise InvalidInput("users must be >= 1 and their total balance within 10**15.")
    params: dict[str, Any] = {
        "n": users,
        "funded": balance,
        "password": _password_hash(),
        "prefix": username_prefix or f"u{secrets.token_hex(4)}_",
        "currency": settings.CURRENCY,
        "world_id": system_account_id(Account.Kind.WORLD),
    }
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute(_FUNDED_ROWS_SQL, params)
        cursor.execute(_USERS_SQL, params)
        cursor.execute(_WALLETS_SQL, params)
        cursor.execute(_DEPOSITS_SQL, params)
        cursor.execute(_WORLD_SQL, params)
        cursor.execute("SELECT user_id FROM seed_rows ORDER BY g")
        ids = [row[0] for row in cursor.fetchall()]
        cursor.execute("DROP TABLE seed_rows")
    return ids
