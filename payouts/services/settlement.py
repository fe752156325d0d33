"""Settlement: how much each staker of a resolved challenge receives (DESIGN.md section 3).

Pari-mutuel with the fee on the winnings only:

- ``fee = losing_pool * fee_bps // 10000`` and ``distributable = losing_pool - fee``;
- each winner gets ``stake + floor(stake * distributable / winning_pool)``; the units the
  flooring leaves over go one each to the winners with the largest remainders, ties to the
  lower stake id; so the winners receive exactly ``winning_pool + distributable``;
- a refund (draw, cancellation, or a winning side nobody staked on) returns every stake in
  full, fee 0.

``settlement_terms`` computes the global figures in PostgreSQL in two passes over the stakes
(the pools and the fee; then which winners get a leftover unit, by ranking the remainders),
and ``payout_entries_insert`` then creates the entries of any slice of the stakes with one
``INSERT ... SELECT`` (``settlement_preview`` reads the same terms and amount SQL to show staff
what a resolve would pay), so a million stakes never travel to Python and the slices can be paid
while later ones are still being created. ``settlement_compute`` is the same rule in plain
Python: the oracle the property tests hold the SQL to. Products such as
``stake * distributable`` reach 10**33 for amounts up to 10**15, past bigint, so the SQL
computes them in ``numeric`` (exact) -- or in bigint when ``winning_pool * distributable``
fits, which bounds every product -- and casts each final amount back to bigint; Python
integers are exact anyway.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connection


@dataclass(frozen=True, slots=True)
class StakeRow:
    id: int
    side: str
    amount: int


@dataclass(frozen=True, slots=True)
class Settlement:
    amounts: dict[int, int]  # stake id -> amount paid to that staker (refunded stakers included)
    fee: int


def settlement_compute(
    *, stakes: Iterable[StakeRow], winning_side: str | None, fee_bps: int
) -> Settlement:
    """The settlement rule in pure Python (the test oracle of the SQL version).

    ``winning_side`` None means a refund. A winning side with no stake also refunds everyone.
    Losers get no row.
    """
    stakes = list(stakes)
    winners = [s for s in stakes if s.side == winning_side]
    if winning_side is None or not winners:
        return Settlement({s.id: s.amount for s in stakes}, 0)
    winning_pool = sum(s.amount for s in winners)
    losing_pool = sum(s.amount for s in stakes) - winning_pool
    fee = losing_pool * fee_bps // 10_000
    distributable = losing_pool - fee
    shares = {s.id: divmod(s.amount * distributable, winning_pool) for s in winners}
    leftover = distributable - sum(q for q, _ in shares.values())
    lucky = sorted(winners, key=lambda s: (-shares[s.id][1], s.id))[:leftover]
    lucky_ids = {s.id for s in lucky}
    amounts = {s.id: s.amount + shares[s.id][0] + (s.id in lucky_ids) for s in winners}
    return Settlement(amounts, fee)


_POOLS_SQL = """
SELECT coalesce(sum(amount) FILTER (WHERE side = %(side)s), 0),
       coalesce(sum(amount) FILTER (WHERE side <> %(side)s), 0),
       count(*) FILTER (WHERE side = %(side)s),
       min(id) FILTER (WHERE side = %(side)s),
       max(amount) FILTER (WHERE side = %(side)s)
FROM challenges_stake
WHERE challenge_id = %(challenge_id)s
"""

# How many units the flooring leaves over, and the last winner who receives one of them (the
# cut) in the order (remainder desc, stake id asc): with the cut, any slice of the stakes can
# then be settled on its own.
_LEFTOVER_SQL = """
WITH shares AS (
    SELECT id, {share} AS share, {remainder} AS remainder
    FROM challenges_stake
    WHERE challenge_id = %(challenge_id)s AND side = %(side)s
), leftover AS (
    SELECT (%(distributable)s - coalesce(sum(share), 0))::bigint AS units FROM shares
), cut AS (
    SELECT remainder, id FROM shares
    ORDER BY remainder DESC, id
    OFFSET (SELECT greatest(units - 1, 0) FROM leftover) LIMIT 1
)
SELECT l.units,
       CASE WHEN l.units > 0 THEN (SELECT remainder FROM cut) END,
       CASE WHEN l.units > 0 THEN (SELECT id FROM cut) END
FROM leftover AS l
"""

# stake * distributable in bigint when no winner's product can overflow (the largest winning
# stake times distributable fits), which is several times faster, and its remainders sort as
# bigints; in numeric otherwise. The bound is the largest stake, not the winning pool: with the
# pool, three million stakes of up to 10,000 units already took the numeric path, and the
# settlement's sort of every remainder took 17 s instead of about 1.
_BIGINT = {
    "share": "(amount * %(distributable)s::bigint) / %(winning)s::bigint",
    "remainder": "(amount * %(distributable)s::bigint) %% %(winning)s::bigint",
    "type": "bigint",
}
_NUMERIC = {
    "share": "div(amount * %(distributable)s::numeric, %(winning)s::numeric)",
    "remainder": "mod(amount * %(distributable)s::numeric, %(winning)s::numeric)",
    "type": "numeric",
}
BIGINT_MAX = 2**63 - 1


def _share_sql(largest_stake: int, distributable: int) -> dict[str, str]:
    return _BIGINT if largest_stake * distributable <= BIGINT_MAX else _NUMERIC


_REFUND_TERMS_SQL = """
SELECT count(*), min(id), coalesce(sum(amount), 0) FROM challenges_stake
WHERE challenge_id = %(challenge_id)s
"""


@dataclass(frozen=True, slots=True)
class SettlementTerms:
    """What a job pays, decided once for the whole challenge (plain ints: it travels in task
    arguments to the expansion chunks)."""

    challenge_id: int
    refund: bool
    winning_side: str | None
    entries: int
    first_stake_id: int | None
    total_amount: int
    fee: int
    winning_pool: int = 0
    distributable: int = 0
    leftover: int = 0
    cut_remainder: int | None = None
    cut_id: int | None = None
    # The largest winning stake (bounds every product in the share SQL). Terms sent before it
    # existed lack it: the winning pool, which bounds every stake too, stands in.
    largest_stake: int = 0

    @property
    def share_bound(self) -> int:
        return self.largest_stake or self.winning_pool


def settlement_terms(
    *, challenge_id: int, winning_side: str | None, fee_bps: int
) -> SettlementTerms:
    """The settlement of a challenge's stakes as a whole (read-only, one or two queries).

    ``winning_side`` None, or a side nobody staked on, refunds every stake.
    """
    params: dict[str, Any] = {"challenge_id": challenge_id, "side": winning_side}
    with connection.cursor() as cursor:
        if winning_side is not None:
            cursor.execute(_POOLS_SQL, params)
            winning, losing, winners, first_id, largest = (int(v or 0) for v in cursor.fetchone())
            if winners:
                fee = losing * fee_bps // 10_000
                distributable = losing - fee
                params.update(winning=winning, distributable=distributable)
                share = _share_sql(largest, distributable)
                cursor.execute(_LEFTOVER_SQL.format(**share), params)
                leftover, cut_rem, cut_id = cursor.fetchone()
                return SettlementTerms(
                    challenge_id=challenge_id,
                    refund=False,
                    winning_side=winning_side,
                    entries=winners,
                    first_stake_id=first_id,
                    total_amount=winning + distributable,
                    fee=fee,
                    winning_pool=winning,
                    distributable=distributable,
                    leftover=leftover,
                    cut_remainder=None if cut_rem is None else int(cut_rem),
                    cut_id=cut_id,
                    largest_stake=largest,
                )
        cursor.execute(_REFUND_TERMS_SQL, params)
        count, first_id, total = cursor.fetchone()
    return SettlementTerms(
        challenge_id=challenge_id,
        refund=True,
        winning_side=None,
        entries=count,
        first_stake_id=first_id,
        total_amount=int(total),
        fee=0,
    )


# One slice of the stakes (by id) becomes entries. A winner gets a leftover unit when
# (remainder, -id) >= (cut remainder, -cut id): exactly the first ``leftover`` winners in the
# order (remainder desc, id asc). ``ins`` returns the entries it created (a slice run twice
# creates nothing the second time), for a statement that pays them as it creates them; such
# an entry is completed when that statement ran (``statement_timestamp``: the expansion's
# transaction began before its settlement, which takes seconds for millions of stakes).
_SLICE_ENTRIES_CTES = """slice AS (
    SELECT s.id, s.user_id, s.amount FROM challenges_stake AS s
    WHERE s.challenge_id = %(challenge_id)s AND s.id >= %(from_id)s {side_filter}
    ORDER BY s.id
    LIMIT %(limit)s
), ins AS (
    INSERT INTO payouts_payoutentry
        (job_id, user_id, stake_amount, amount, status, attempt_count, failure_reason,
         last_error, stripe_transfer_id, created_at, completed_at)
    SELECT %(job_id)s, user_id, amount, ({amount})::bigint, %(entry_status)s, 0, '', '', '',
           now(), CASE WHEN %(entry_status)s = 'completed' THEN statement_timestamp() END
    FROM slice
    ORDER BY id
    ON CONFLICT (job_id, user_id) DO NOTHING
    RETURNING id, user_id, amount
)"""

# What a slice read and created: stakes read (fewer than the limit: the last slice), the last
# of them, entries created, the first of them.
SLICE_FIGURES = """(SELECT count(*) FROM slice), (SELECT max(id) FROM slice),
       (SELECT count(*) FROM ins), (SELECT min(id) FROM ins)"""

_ENTRIES_SQL = f"WITH {_SLICE_ENTRIES_CTES}\nSELECT {SLICE_FIGURES}"

_PAYOUT_AMOUNT = """
amount + {share}
+ CASE WHEN %(leftover)s > 0
        AND ({remainder}, -id) >= (%(cut_remainder)s::{type}, -%(cut_id)s::bigint)
       THEN 1 ELSE 0 END
"""


@dataclass(frozen=True, slots=True)
class Chunk:
    stakes: int  # stakes read (fewer than the limit: this was the last slice)
    last_stake_id: int | None
    inserted: int
    first_entry_id: int | None


def payout_entries_insert(
    *, job_id: int, terms: SettlementTerms, from_stake_id: int, limit: int
) -> Chunk:
    """Create the entries of up to ``limit`` stakes with id >= ``from_stake_id`` (the job's
    winners, or every staker for a refund), each with its exact amount and ``pending``; one
    statement.

    Idempotent per (job, user) through the unique constraint: a slice inserted twice (a
    redelivered task) creates nothing the second time.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _ENTRIES_SQL.format(**_amount_sql(terms)),
            slice_params(
                job_id=job_id, terms=terms, from_stake_id=from_stake_id, limit=limit, paid=False
            ),
        )
        stakes, last_stake_id, inserted, first_entry_id = cursor.fetchone()
    return Chunk(stakes, last_stake_id, inserted, first_entry_id)


# The first stake of every slice of ``size`` stakes from ``from_id`` on, in one pass: over
# ``stake_side_idx`` for a payout's winners (an index-only scan of ids, in order), with one
# sort of the stakers' ids for a refund, whose stakes no index keeps in id order.
_SLICE_STARTS_SQL = """
SELECT id FROM (
    SELECT s.id, row_number() OVER (ORDER BY s.id) AS n FROM challenges_stake AS s
    WHERE s.challenge_id = %(challenge_id)s AND s.id >= %(from_id)s {side_filter}
) AS ranked
WHERE (n - 1) %% %(size)s = 0
ORDER BY id
"""


def slice_starts(*, terms: SettlementTerms, from_stake_id: int, size: int) -> list[int]:
    """Where each slice of ``size`` of the job's stakes (winners, or every staker for a
    refund) begins, from ``from_stake_id`` on: slice ``i`` is the ``size`` stakes from
    ``starts[i]``, ending just before ``starts[i + 1]`` (stakes no longer change once a
    challenge is resolved), so slices can be created in any order and in parallel."""
    with connection.cursor() as cursor:
        cursor.execute(
            _SLICE_STARTS_SQL.format(side_filter=_amount_sql(terms)["side_filter"]),
            {
                "challenge_id": terms.challenge_id,
                "side": terms.winning_side,
                "from_id": from_stake_id,
                "size": size,
            },
        )
        return [row[0] for row in cursor.fetchall()]


def slice_entries_ctes(terms: SettlementTerms) -> str:
    """The CTEs ``slice`` (the stakes) and ``ins`` (their entries, as created) of one slice of
    a job's stakes, for a statement that does more with them (the ledger rail's start pays
    them at once); their parameters are ``slice_params``'s."""
    return _SLICE_ENTRIES_CTES.format(**_amount_sql(terms))


def slice_params(
    *, job_id: int, terms: SettlementTerms, from_stake_id: int, limit: int, paid: bool
) -> dict[str, Any]:
    """Parameters of a slice's CTEs: its entries are created ``completed`` when ``paid`` (by
    the statement that pays them), else ``pending``."""
    return {
        **_amount_params(terms),
        "job_id": job_id,
        "from_id": from_stake_id,
        "limit": limit,
        "entry_status": "completed" if paid else "pending",
    }


def _amount_sql(terms: SettlementTerms) -> dict[str, str]:
    """Which stakes get an entry and the SQL of each one's amount: shared by the expansion and
    the preview, so what staff are shown is computed by what pays."""
    if terms.refund:
        return {"side_filter": "", "amount": "amount"}
    share = _share_sql(terms.share_bound, terms.distributable)
    return {"side_filter": "AND s.side = %(side)s", "amount": _PAYOUT_AMOUNT.format(**share)}


def _amount_params(terms: SettlementTerms) -> dict[str, Any]:
    return {
        "challenge_id": terms.challenge_id,
        "side": terms.winning_side,
        "winning": terms.winning_pool,
        "distributable": terms.distributable,
        "leftover": terms.leftover,
        "cut_remainder": terms.cut_remainder,
        "cut_id": terms.cut_id,
    }


_PREVIEW_SQL = """
SELECT min(({amount})::bigint), max(({amount})::bigint)
FROM challenges_stake AS s
WHERE s.challenge_id = %(challenge_id)s {side_filter}
"""


@dataclass(frozen=True, slots=True)
class SettlementPreview:
    """What a job settling these terms will pay, before it exists (the resolve confirmation
    page shows it)."""

    refund: bool
    entries: int  # winners paid, or stakers refunded
    total_amount: int
    fee: int
    smallest: int | None
    largest: int | None


def settlement_preview(
    *, challenge_id: int, winning_side: str | None, fee_bps: int
) -> SettlementPreview:
    """The settlement a job would pay now, from the same terms (``settlement_terms``) and the
    same per-stake amount SQL as ``payout_entries_insert``: never a second copy of the rule.

    Read-only; a pass over the stakes like the expansion's (seconds for a million). Stakes
    cannot change once a challenge is past its deadline, so a job created right after pays
    exactly this.
    """
    terms = settlement_terms(challenge_id=challenge_id, winning_side=winning_side, fee_bps=fee_bps)
    smallest = largest = None
    if terms.entries:
        with connection.cursor() as cursor:
            cursor.execute(_PREVIEW_SQL.format(**_amount_sql(terms)), _amount_params(terms))
            smallest, largest = cursor.fetchone()
    return SettlementPreview(
        refund=terms.refund,
        entries=terms.entries,
        total_amount=terms.total_amount,
        fee=terms.fee,
        smallest=smallest,
        largest=largest,
    )
