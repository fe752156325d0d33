"""Settlement math: the SQL that creates the entries against its pure-Python twin."""

import random

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from challenges.models import Challenge
from core.money import MAX_AMOUNT
from ledger.models import Account
from ledger.services import account_create
from payouts.models import PayoutEntry, PayoutJob
from payouts.services.settlement import (
    BIGINT_MAX,
    StakeRow,
    payout_entries_insert,
    settlement_compute,
    settlement_terms,
)
from proof.seeding import challenge_seed

pytestmark = pytest.mark.django_db


def test_oracle_splits_the_losing_pool_pro_rata_and_keeps_the_fee():
    # Given winners staking 100 and 200 against a losing pool of 1000 at a 5% fee
    stakes = [StakeRow(1, "yes", 100), StakeRow(2, "yes", 200), StakeRow(3, "no", 1000)]
    # When settled
    result = settlement_compute(stakes=stakes, winning_side="yes", fee_bps=500)
    # Then the fee is 50 and the 950 left are split 1:2 (316.67 / 633.33, one leftover unit
    # to the larger remainder)
    assert result.fee == 50
    assert result.amounts == {1: 100 + 317, 2: 200 + 633}


def test_oracle_breaks_remainder_ties_by_stake_id():
    stakes = [StakeRow(7, "no", 1), StakeRow(3, "no", 1), StakeRow(5, "no", 1)]
    stakes += [StakeRow(9, "yes", 2)]
    result = settlement_compute(stakes=stakes, winning_side="no", fee_bps=0)
    # 2 units over 3 equal winners: the two lowest ids get the leftover units.
    assert result.amounts == {3: 2, 5: 2, 7: 1}


@pytest.mark.parametrize("winning_side", [None, "no"])
def test_oracle_refunds_on_draw_or_empty_winning_side(winning_side):
    stakes = [StakeRow(1, "yes", 10), StakeRow(2, "yes", 20)]
    result = settlement_compute(stakes=stakes, winning_side=winning_side, fee_bps=900)
    assert result.amounts == {1: 10, 2: 20}
    assert result.fee == 0


# Stakes: small explicit lists, or large lists drawn from a seed (thousands of stakers without
# Hypothesis generating thousands of values one by one).
amounts = st.one_of(st.integers(1, 100), st.integers(1, MAX_AMOUNT))
explicit_stakes = st.lists(st.tuples(st.sampled_from(["yes", "no"]), amounts), max_size=40)


@st.composite
def generated_stakes(draw):
    n = draw(st.integers(1, 3000))
    rng = random.Random(draw(st.integers(0, 2**32)))
    yes_share = draw(st.floats(0, 1))
    high = draw(st.sampled_from([10, 10_000, MAX_AMOUNT]))
    return [("yes" if rng.random() < yes_share else "no", rng.randint(1, high)) for _ in range(n)]


@pytest.fixture
def stakers(db):
    """3,000 users (with wallets) to stake with; seeded once per test, set-based."""
    challenge = challenge_seed(stakers=3000)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT user_id FROM challenges_stake WHERE challenge_id = %s ORDER BY id",
            [challenge.pk],
        )
        return [row[0] for row in cursor.fetchall()]


def _settle_in_sql(user_ids, stakes, winning_side, fee_bps, chunk_size):
    escrow = account_create(kind=Account.Kind.CHALLENGE_ESCROW)
    challenge = Challenge.objects.create(
        title="t",
        challenger_id=user_ids[0],
        escrow=escrow,
        due_date="2030-01-01T00:00:00Z",
        status=Challenge.Status.RESOLVING,
        result=Challenge.Result.DRAW,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO challenges_stake (challenge_id, user_id, side, amount, created_at)
            SELECT %s, u, s, a, now() FROM unnest(%s::bigint[], %s::text[], %s::bigint[])
                AS x(u, s, a)
            RETURNING id, user_id, side, amount
            """,
            [
                challenge.pk,
                user_ids[: len(stakes)],
                [side for side, _ in stakes],
                [amount for _, amount in stakes],
            ],
        )
        rows = cursor.fetchall()
    job = PayoutJob.objects.create(
        challenge=challenge, kind="payout", fee_bps=fee_bps, batch_size=10, parallelism=1
    )
    terms = settlement_terms(challenge_id=challenge.pk, winning_side=winning_side, fee_bps=fee_bps)
    # The entries are created slice by slice, each slice settled on its own.
    start = terms.first_stake_id
    while start is not None:
        chunk = payout_entries_insert(
            job_id=job.pk, terms=terms, from_stake_id=start, limit=chunk_size
        )
        start = chunk.last_stake_id + 1 if chunk.stakes == chunk_size else None
    paid = dict(PayoutEntry.objects.filter(job=job).values_list("user_id", "amount"))
    return rows, terms, paid


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    stakes=st.one_of(explicit_stakes, generated_stakes()),
    winning_side=st.sampled_from(["yes", "no", None]),
    fee_bps=st.one_of(st.sampled_from([0, 500, 10_000]), st.integers(0, 10_000)),
    chunk_size=st.one_of(st.integers(1, 50), st.just(100_000)),
)
def test_sql_settlement_matches_the_oracle_to_the_unit(
    stakers, stakes, winning_side, fee_bps, chunk_size
):
    # Given any stakes on a challenge; When the SQL creates the entries in slices of any size
    # (rolled back after)
    with transaction.atomic():
        rows, terms, paid = _settle_in_sql(stakers, stakes, winning_side, fee_bps, chunk_size)
        transaction.set_rollback(True)
    expected = settlement_compute(
        stakes=[StakeRow(i, side, amount) for i, _, side, amount in rows],
        winning_side=winning_side,
        fee_bps=fee_bps,
    )
    user_of = {stake_id: user_id for stake_id, user_id, _, _ in rows}
    # Then SQL and oracle agree on every amount and on the fee
    assert paid == {user_of[i]: amount for i, amount in expected.amounts.items()}
    assert terms.fee == expected.fee
    assert terms.entries == len(paid)
    assert terms.total_amount == sum(paid.values())
    # And the whole pool is accounted for, and nobody gets back less than their stake
    pool = sum(amount for _, amount in stakes)
    assert terms.total_amount + terms.fee == pool
    stake_of = {user_id: amount for _, user_id, _, amount in rows}
    assert all(amount >= stake_of[user] for user, amount in paid.items())
    if terms.refund:
        assert terms.fee == 0
        assert paid == stake_of


@pytest.mark.parametrize(
    ("winners", "loser"),
    [
        # The pool times distributable overflows bigint, each stake's product does not: the
        # bigint path, which the pool alone would have refused.
        ([4 * 10**9, 4 * 10**9 + 1, 3 * 10**9 + 7], 2 * 10**9 + 3),
        # The largest stake's product lands just past the bound (distributable 950,000,000
        # after the 5% fee): the numeric path.
        ([BIGINT_MAX // 950_000_000 + 1, 5, 3], 10**9),
    ],
)
def test_sql_settlement_at_the_bigint_bound_matches_the_oracle(stakers, winners, loser):
    # Given winners whose pool times the distributable amount is past bigint
    stakes = [("yes", amount) for amount in winners] + [("no", loser)]
    with transaction.atomic():
        rows, terms, paid = _settle_in_sql(stakers, stakes, "yes", 500, 2)
        transaction.set_rollback(True)
    assert terms.winning_pool * terms.distributable > BIGINT_MAX
    assert terms.largest_stake == max(winners)
    # Then the amounts are the oracle's to the unit, whichever arithmetic the SQL chose
    expected = settlement_compute(
        stakes=[StakeRow(i, side, amount) for i, _, side, amount in rows],
        winning_side="yes",
        fee_bps=500,
    )
    user_of = {stake_id: user_id for stake_id, user_id, _, _ in rows}
    assert paid == {user_of[i]: amount for i, amount in expected.amounts.items()}
    assert terms.fee == expected.fee
