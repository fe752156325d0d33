import threading
from datetime import timedelta
from functools import partial

import pytest
import time_machine
from django.db import connection, transaction
from django.utils import timezone

from challenges.models import Challenge, Stake
from challenges.services import challenges_sweep_deadlines, stake_place
from core.errors import DomainError
from ledger.models import Account, Transfer
from ledger.selectors import wallet_get
from tests.challenges.helpers import active_challenge, open_challenge
from tests.conftest import run_together, wait_for


def _snapshot(challenge: Challenge, *users) -> tuple:
    challenge.refresh_from_db()
    return (
        challenge.status,
        challenge.yes_total,
        challenge.no_total,
        challenge.yes_count,
        challenge.no_count,
        challenge.escrow.balance,
        Transfer.objects.count(),
        Stake.objects.count(),
        *(wallet_get(user_id=u.pk).balance for u in users),
    )


@pytest.mark.django_db
def test_stakes_move_money_to_escrow_bump_totals_and_activate_once_both_sides_stake(make_user):
    challenger, alice, bob = make_user(balance=500), make_user(balance=500), make_user(balance=500)
    challenge = open_challenge(challenger)

    first = stake_place(user=challenger, challenge_id=challenge.pk, side="yes", amount=120)
    stake_place(user=alice, challenge_id=challenge.pk, side="yes", amount=30)
    challenge.refresh_from_db()
    assert challenge.status == Challenge.Status.PENDING  # nobody on the other side yet

    stake_place(user=bob, challenge_id=challenge.pk, side="no", amount=200)

    challenge.refresh_from_db()
    assert challenge.status == Challenge.Status.ACTIVE
    assert (challenge.yes_total, challenge.yes_count) == (150, 2)
    assert (challenge.no_total, challenge.no_count) == (200, 1)
    assert challenge.escrow.balance == 350
    assert wallet_get(user_id=challenger.pk).balance == 380
    transfer = Transfer.objects.get(idempotency_key=f"stake:{first.pk}")
    assert (transfer.kind, transfer.amount) == (Transfer.Kind.STAKE, 120)
    assert transfer.credit_account_id == challenge.escrow_id


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("side", "amount", "code"),
    [
        ("maybe", 10, "invalid_side"),
        ("", 10, "invalid_side"),
        ("yes", 0, "invalid_amount"),
        ("yes", -5, "invalid_amount"),
        ("yes", 1.5, "invalid_amount"),
        ("yes", "10", "invalid_amount"),
        ("yes", True, "invalid_amount"),
        ("yes", 10**16, "invalid_amount"),
        ("yes", 501, "insufficient_funds"),
    ],
)
def test_bad_stakes_change_nothing(make_user, side, amount, code):
    staker = make_user(balance=500)
    challenge = open_challenge(make_user())
    before = _snapshot(challenge, staker)

    with pytest.raises(DomainError) as error:
        stake_place(user=staker, challenge_id=challenge.pk, side=side, amount=amount)

    assert error.value.code == code
    assert _snapshot(challenge, staker) == before


@pytest.mark.django_db(transaction=True)
def test_a_stake_is_one_statement_that_commits_itself(make_user, django_assert_num_queries):
    staker = make_user(balance=500)
    challenge = open_challenge(make_user())
    # The stake with its totals and its transfer: no BEGIN, no COMMIT
    with django_assert_num_queries(1):
        stake = stake_place(user=staker, challenge_id=challenge.pk, side="no", amount=40)
    assert (stake.challenge.no_total, stake.challenge.no_count) == (40, 1)
    # The escrow, the transfers (the deposit and the stake), the stakes, the wallet
    assert _snapshot(challenge, staker)[5:] == (40, 2, 1, 460)


@pytest.mark.django_db
def test_a_stake_from_a_user_without_a_wallet_is_refused(make_user):
    staker, creator = make_user(), make_user()
    challenge = open_challenge(creator)
    Account.objects.filter(kind=Account.Kind.USER_WALLET, user=staker).delete()
    before = _snapshot(challenge, creator)

    with pytest.raises(DomainError) as error:
        stake_place(user=staker, challenge_id=challenge.pk, side="yes", amount=10)

    assert error.value.code == "wallet_not_found"
    assert _snapshot(challenge, creator) == before


@pytest.mark.django_db
def test_a_second_stake_by_the_same_user_is_refused(make_user):
    staker = make_user(balance=500)
    challenge = open_challenge(make_user())
    stake_place(user=staker, challenge_id=challenge.pk, side="yes", amount=10)
    before = _snapshot(challenge, staker)

    with pytest.raises(DomainError) as error:
        stake_place(user=staker, challenge_id=challenge.pk, side="no", amount=10)

    assert error.value.code == "already_staked"
    assert _snapshot(challenge, staker) == before


@pytest.mark.django_db
def test_staking_at_or_after_the_deadline_or_on_a_closed_challenge_is_refused(make_user):
    staker = make_user(balance=500)
    challenge = open_challenge(make_user(), due_in=timedelta(minutes=5))
    before = _snapshot(challenge, staker)

    # exactly at the deadline, before the sweep has run: the clock alone closes it
    with time_machine.travel(challenge.due_date, tick=False):
        with pytest.raises(DomainError) as at_deadline:
            stake_place(user=staker, challenge_id=challenge.pk, side="yes", amount=10)
        challenges_sweep_deadlines()
    assert at_deadline.value.code == "challenge_not_open"
    # and once swept (cancelled: nobody staked), even with a clock that is wrong
    with pytest.raises(DomainError) as closed:
        stake_place(user=staker, challenge_id=challenge.pk, side="yes", amount=10)
    assert closed.value.code == "challenge_not_open"
    with pytest.raises(DomainError) as missing:
        stake_place(user=staker, challenge_id=10**9, side="yes", amount=10)
    assert missing.value.code == "challenge_not_found"
    assert _snapshot(challenge, staker)[1:] == before[1:]


@pytest.mark.django_db
def test_the_database_refuses_a_second_stake_written_around_the_service(make_user):
    staker = make_user(balance=500)
    challenge = open_challenge(make_user())
    stake_place(user=staker, challenge_id=challenge.pk, side="yes", amount=10)
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        Stake.objects.create(challenge=challenge, user=staker, side="no", amount=5)
    with pytest.raises(IntegrityError), transaction.atomic():
        Challenge.objects.filter(pk=challenge.pk).update(yes_total=-1)


@pytest.mark.django_db(transaction=True)
def test_concurrent_stakes_on_one_challenge_keep_exact_totals(make_user):
    # Given eight users staking on the same challenge at the same moment, one of them twice
    users = [make_user(balance=100) for _ in range(8)]
    challenge = open_challenge(make_user())
    stakes = [(u, "yes" if i % 2 else "no") for i, u in enumerate(users)] + [(users[0], "yes")]
    outcomes = run_together(
        *(
            partial(stake_place, user=u, challenge_id=challenge.pk, side=side, amount=7)
            for u, side in stakes
        )
    )
    errors = [o for o in outcomes if isinstance(o, str)]

    # Then every distinct user staked once and the totals match the stakes and the escrow
    assert errors == ["already_staked"]
    challenge.refresh_from_db()
    assert challenge.status == Challenge.Status.ACTIVE
    assert challenge.yes_count + challenge.no_count == 8
    assert challenge.yes_total + challenge.no_total == 56 == challenge.escrow.balance
    assert timezone.now() < challenge.due_date


def _escrow_matches_stakes(challenge: Challenge) -> None:
    """The per-side totals and counts, the stake rows and the escrow all say the same."""
    challenge.refresh_from_db()
    stakes = list(Stake.objects.filter(challenge=challenge))
    for side, total, count in (
        ("yes", challenge.yes_total, challenge.yes_count),
        ("no", challenge.no_total, challenge.no_count),
    ):
        assert total == sum(s.amount for s in stakes if s.side == side)
        assert count == sum(1 for s in stakes if s.side == side)
    assert challenge.escrow.balance == challenge.yes_total + challenge.no_total
    keys = set(Transfer.objects.filter(kind=Transfer.Kind.STAKE).values_list("idempotency_key"))
    assert {(f"stake:{s.pk}",) for s in stakes} <= keys


@pytest.mark.django_db(transaction=True)
def test_a_stake_waiting_on_the_sweep_finds_the_challenge_closed_and_writes_nothing(make_user):
    # Given an active challenge whose row the deadline sweep holds (closed, not yet committed)
    challenge, _ = active_challenge(make_user)
    staker = make_user(balance=50)
    before = _snapshot(challenge, staker)
    swept, release = threading.Event(), threading.Event()

    def sweep_and_hold() -> None:
        try:
            with transaction.atomic():
                challenges_sweep_deadlines(now=challenge.due_date)
                swept.set()
                release.wait(10)
        finally:
            connection.close()

    outcome: list[object] = []

    def stake() -> None:
        try:
            outcome.append(
                stake_place(user=staker, challenge_id=challenge.pk, side="yes", amount=20)
            )
        except DomainError as exc:
            outcome.append(exc.code)
        finally:
            connection.close()

    sweeper, staking = threading.Thread(target=sweep_and_hold), threading.Thread(target=stake)
    sweeper.start()
    assert swept.wait(10)
    # When a stake arrives meanwhile, it waits for the challenge's row lock
    staking.start()
    wait_for(_someone_waits_for_a_lock, timeout=10)
    release.set()
    sweeper.join()
    staking.join()

    # Then, the sweep committed, the stake re-checks the row, finds it closed, and writes nothing
    assert outcome == ["challenge_not_open"]
    assert _snapshot(challenge, staker)[1:] == before[1:]
    assert challenge.status == Challenge.Status.PENDING_ADMIN


def _someone_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_stakes_racing_the_sweep_land_before_it_or_change_nothing(make_user):
    # Given an active challenge and ten users staking the moment the sweep closes it
    challenge, _ = active_challenge(make_user)
    stakers = [make_user(balance=50) for _ in range(10)]
    stakes = [
        partial(stake_place, user=u, challenge_id=challenge.pk, side=("yes", "no")[i % 2], amount=5)
        for i, u in enumerate(stakers)
    ]
    outcomes = run_together(
        *stakes[:5], partial(challenges_sweep_deadlines, now=challenge.due_date), *stakes[5:]
    )
    del outcomes[5]

    # Then each stake either landed (counted, escrowed, paid for) or changed nothing
    assert all(isinstance(o, Stake) or o == "challenge_not_open" for o in outcomes)
    _escrow_matches_stakes(challenge)
    assert challenge.status == Challenge.Status.PENDING_ADMIN
    landed = set(Stake.objects.filter(challenge=challenge).values_list("user_id", flat=True))
    for user, outcome in zip(stakers, outcomes, strict=True):
        assert (user.pk in landed) == isinstance(outcome, Stake)
        assert wallet_get(user_id=user.pk).balance == (45 if user.pk in landed else 50)


@pytest.mark.django_db(transaction=True)
def test_concurrent_stakes_one_without_funds_keep_totals_escrow_and_wallets_exact(make_user):
    # Given twelve users staking on one challenge at once, one of them without the coins
    users = [make_user(balance=30) for _ in range(11)] + [make_user(balance=3)]
    challenge = open_challenge(make_user())
    outcomes = run_together(
        *(
            partial(
                stake_place, user=u, challenge_id=challenge.pk, side=("no", "yes")[i % 2], amount=4
            )
            for i, u in enumerate(users)
        )
    )

    # Then the poor one is refused, every other stake is counted once and escrowed exactly
    assert outcomes[-1] == "insufficient_funds"
    assert all(isinstance(o, Stake) for o in outcomes[:-1])
    _escrow_matches_stakes(challenge)
    assert challenge.yes_count + challenge.no_count == 11
    assert challenge.status == Challenge.Status.ACTIVE
    assert [wallet_get(user_id=u.pk).balance for u in users] == [26] * 11 + [3]
