"""Deadline warnings at their boundaries, with a frozen clock (time-machine).

Policy (challenges/services.py): the 10-minute warning while 0 < time left <= 10 min, never
suppressed; the 1-hour warning while 40 min < time left <= 60 min, so it always precedes the
10-minute one by more than 30 minutes.
"""

import importlib
from datetime import timedelta

import pytest
import time_machine
from django.db import connection, transaction
from django.utils import timezone

from challenges.models import Challenge, DeadlineWarning, Stake
from challenges.services import (
    challenges_send_deadline_warnings,
    challenges_sweep_deadlines,
    stake_place,
)
from notifications.models import Notification
from tests.challenges.helpers import active_challenge, open_challenge
from tests.conftest import run_together

pytestmark = pytest.mark.django_db

MIN = timedelta(minutes=1)


def _warnings(challenge) -> list[tuple[int, str]]:
    return sorted(Notification.objects.filter(challenge=challenge).values_list("user_id", "kind"))


def _at(challenge, minutes_before: float):
    return time_machine.travel(challenge.due_date - minutes_before * MIN, tick=False)


@pytest.mark.parametrize(
    ("minutes_before", "kind"),
    [
        (61, None),
        (60, "deadline_1h"),
        (59, "deadline_1h"),
        (40.02, "deadline_1h"),
        (40, None),  # a 1-hour warning now would come within 30 minutes of the 10-minute one
        (30, None),
        (11, None),
        (10, "deadline_10m"),
        (9, "deadline_10m"),
        (0.02, "deadline_10m"),
        (0, None),  # exactly at the deadline: the sweep's turn, no more warnings
        (-1, None),
    ],
)
def test_a_single_scan_at_each_boundary(make_user, minutes_before, kind):
    challenge, players = active_challenge(make_user, stakers=1)

    with _at(challenge, minutes_before):
        created = challenges_send_deadline_warnings()

    expected = sorted((p.pk, kind) for p in players) if kind else []
    assert _warnings(challenge) == expected
    assert created == len(expected)


def test_scanning_every_minute_sends_each_warning_once_at_its_window_opening(make_user):
    # Given an active challenge whose challenger, challenged user and a staker take part
    challenge, players = active_challenge(make_user, stakers=1)
    bystander = make_user()

    # When beat scans every minute from 70 minutes before the deadline until after it
    for minutes_before in range(70, -3, -1):
        with _at(challenge, minutes_before):
            challenges_send_deadline_warnings()
            challenges_sweep_deadlines()

    # Then each participant got exactly one 1-hour warning (at 60) and one 10-minute one (at 10)
    rows = Notification.objects.filter(challenge=challenge).exclude(kind="needs_resolution")
    assert sorted(rows.values_list("user_id", "kind", "priority", "data__minutes_left")) == sorted(
        [(p.pk, "deadline_1h", "normal", 60) for p in players]
        + [(p.pk, "deadline_10m", "high", 10) for p in players]
    )
    assert not Notification.objects.filter(user=bystander).exists()
    warning = rows.get(user=players[0], kind="deadline_10m")
    assert warning.title == "Less than 10 minutes left"
    assert warning.body == '"Will it rain tomorrow?" closes in 10 minutes.'
    # keyless: the challenge's mark per warning records whom it told, through its last stake
    assert warning.dedup_key is None
    last_stake = Stake.objects.filter(challenge=challenge).latest("id").pk
    assert sorted(
        DeadlineWarning.objects.filter(challenge=challenge).values_list("kind", "last_stake_id")
    ) == [("deadline_10m", last_stake), ("deadline_1h", last_stake)]


def test_missed_beats_inside_a_window_lose_nothing(make_user):
    challenge, players = active_challenge(make_user)
    # only two scans ever run: late in each window
    for minutes_before in (41, 1):
        with _at(challenge, minutes_before):
            challenges_send_deadline_warnings()
    assert _warnings(challenge) == sorted(
        [(p.pk, "deadline_1h") for p in players] + [(p.pk, "deadline_10m") for p in players]
    )


@pytest.mark.parametrize(
    ("created_before", "kinds"),
    [
        (45, ["deadline_10m", "deadline_1h"]),  # inside the 1-hour window: both, 35 min apart
        (35, ["deadline_10m"]),  # a 1-hour warning would be within 30 min of the 10-minute one
        (15, ["deadline_10m"]),
        (5, ["deadline_10m"]),  # after both windows opened: the 10-minute one is never lost
    ],
)
def test_a_challenge_created_close_to_its_deadline(make_user, created_before, kinds):
    # Given a challenge created `created_before` minutes before its deadline, staked right away
    creator, rival = make_user(balance=10), make_user(balance=10)
    challenge = open_challenge(creator, due_in=created_before * MIN, challenged=rival)
    stake_place(user=creator, challenge_id=challenge.pk, side="yes", amount=10)
    stake_place(user=rival, challenge_id=challenge.pk, side="no", amount=10)

    # When beat scans every minute from its creation to its deadline
    now = timezone.now()
    for minute in range(created_before + 1):
        with time_machine.travel(now + minute * MIN, tick=False):
            challenges_send_deadline_warnings()

    # Then each participant got exactly the expected warnings, and any two more than 30 min apart
    for user in (creator, rival):
        sent = Notification.objects.filter(user=user, challenge=challenge)
        assert sorted(sent.values_list("kind", flat=True)) == kinds
        lefts = sorted(sent.values_list("data__minutes_left", flat=True))
        assert len(lefts) < 2 or lefts[1] - lefts[0] > 30


def test_a_user_who_joins_late_still_gets_the_10_minute_warning(make_user):
    challenge, _ = active_challenge(make_user)
    with _at(challenge, 50):
        challenges_send_deadline_warnings()
    latecomer = make_user(balance=10)
    with _at(challenge, 20):
        stake_place(user=latecomer, challenge_id=challenge.pk, side="yes", amount=10)
    with _at(challenge, 10):
        challenges_send_deadline_warnings()
    assert sorted(Notification.objects.filter(user=latecomer).values_list("kind", flat=True)) == [
        "deadline_10m"
    ]


def test_the_challenged_user_who_stakes_after_the_first_warning_is_not_warned_again(make_user):
    # Given a pending challenge warned at 50 minutes, when its challenged user had not staked
    creator, rival = make_user(balance=10), make_user(balance=10)
    challenge = open_challenge(creator, due_in=timedelta(minutes=55), challenged=rival)
    stake_place(user=creator, challenge_id=challenge.pk, side="yes", amount=10)
    with _at(challenge, 50):
        assert challenges_send_deadline_warnings() == 2

    # When the challenged user stakes, and beat keeps scanning through the window
    with _at(challenge, 45):
        stake_place(user=rival, challenge_id=challenge.pk, side="no", amount=10)
    for minutes_before in range(44, 39, -1):
        with _at(challenge, minutes_before):
            assert challenges_send_deadline_warnings() == 0

    # Then each party has the one 1-hour warning the first scan sent
    assert _warnings(challenge) == sorted([(creator.pk, "deadline_1h"), (rival.pk, "deadline_1h")])


@pytest.mark.django_db(transaction=True)
def test_a_stake_uncommitted_during_a_scan_is_warned_by_the_next_one(make_user):
    challenge, players = active_challenge(make_user)
    latecomer = make_user(balance=10)
    with _at(challenge, 9):
        # Given a stake that holds the challenge's row lock, not yet committed
        with transaction.atomic():
            stake_place(user=latecomer, challenge_id=challenge.pk, side="yes", amount=10)
            # When a scan runs meanwhile on another connection
            [created] = run_together(challenges_send_deadline_warnings)
            # Then it warns everyone it can see and does not wait for the stake
            assert created == len(players)
        # and the next scan, after the stake committed, warns its user
        assert challenges_send_deadline_warnings() == 1
    assert _warnings(challenge) == sorted(
        (user.pk, "deadline_10m") for user in [*players, latecomer]
    )


def test_challenges_warned_through_keys_before_the_upgrade_are_not_warned_again(make_user):
    # Given a challenge due within the hour whose participants the previous release warned, one
    # key per row (the migration reads the database's clock)
    challenge, players = active_challenge(make_user, stakers=2, due_in=timedelta(minutes=30))
    Notification.objects.bulk_create(
        Notification(
            user=user,
            kind="deadline_10m",
            challenge=challenge,
            title="Less than 10 minutes left",
            dedup_key=f"deadline_10m:{challenge.pk}:{user.pk}",
        )
        for user in players[:-1]
    )
    # When the upgrade's migration marks what was warned, and a latecomer joins
    mark_warned = importlib.import_module(
        "challenges.migrations.0008_deadline_warning_marks"
    ).MARK_WARNED
    with _at(challenge, 9):
        with connection.cursor() as cursor:
            cursor.execute(mark_warned)
        latecomer = make_user(balance=10)
        stake_place(user=latecomer, challenge_id=challenge.pk, side="yes", amount=10)
        created = challenges_send_deadline_warnings()

    # Then the scan warns the staker after the last one warned, and the latecomer, only
    assert created == 2
    assert _warnings(challenge) == sorted(
        (user.pk, "deadline_10m") for user in [*players, latecomer]
    )


def test_participants_are_counted_once_and_closed_challenges_are_skipped(make_user):
    # Given a pending challenge whose challenger also staked, and whose challenged user did not
    creator, rival = make_user(balance=10), make_user()
    pending = open_challenge(creator, due_in=timedelta(minutes=30), challenged=rival)
    stake_place(user=creator, challenge_id=pending.pk, side="yes", amount=10)
    # and a challenge already closed by the sweep, then (by hand) given the same deadline
    closed, _ = active_challenge(make_user, due_in=timedelta(minutes=20))
    with _at(closed, -1):
        challenges_sweep_deadlines()
    Challenge.objects.filter(pk=closed.pk).update(due_date=pending.due_date)

    with _at(pending, 5):
        created = challenges_send_deadline_warnings()

    assert created == 2
    assert _warnings(pending) == sorted([(creator.pk, "deadline_10m"), (rival.pk, "deadline_10m")])
    assert not Notification.objects.filter(challenge=closed, kind__startswith="deadline").exists()


@pytest.mark.parametrize("participants", [10, 1000])
def test_the_fan_out_issues_a_constant_number_of_queries(
    make_user, django_assert_num_queries, participants
):
    challenge, players = active_challenge(make_user, stakers=participants - 2)
    assert len(players) == participants

    # savepoint, the marks, their advance, the INSERT ... SELECT, release: whatever the number
    # of participants
    with _at(challenge, 5), django_assert_num_queries(5):
        created = challenges_send_deadline_warnings()

    assert created == participants


@pytest.mark.django_db(transaction=True)
def test_two_scans_at_the_same_moment_send_each_warning_once(make_user):
    challenges = [active_challenge(make_user, stakers=20)[0] for _ in range(3)]

    with _at(challenges[-1], 9.5):
        created = run_together(challenges_send_deadline_warnings, challenges_send_deadline_warnings)

    assert len(created) == 2
    assert sum(created) == 3 * 22 == Notification.objects.count()
    assert Notification.objects.values("user", "challenge", "kind").distinct().count() == 66
