"""The deadline sweep, with a frozen clock (time-machine)."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from challenges.models import Challenge
from challenges.services import challenges_sweep_deadlines, stake_place
from notifications.models import Notification
from notifications.tasks import staff_event_publish_task
from payouts.models import PayoutJob
from tests.challenges.helpers import active_challenge, open_challenge
from tests.conftest import run_together


def _kinds(user) -> list[tuple[str, int]]:
    return sorted(Notification.objects.filter(user=user).values_list("kind", "challenge_id"))


@pytest.mark.django_db
def test_nothing_moves_one_second_before_the_deadline(make_user):
    challenge, _ = active_challenge(make_user, due_in=timedelta(minutes=30))

    with time_machine.travel(challenge.due_date - timedelta(seconds=1), tick=False):
        result = challenges_sweep_deadlines()

    challenge.refresh_from_db()
    assert challenge.status == Challenge.Status.ACTIVE
    assert (result.pending_admin, result.cancelled, result.notifications) == ([], [], 0)


@pytest.mark.django_db
def test_exactly_at_the_deadline_active_goes_to_staff_and_pending_is_cancelled(
    make_user, django_capture_on_commit_callbacks
):
    # Given staff (one inactive), an active challenge and a pending one (only one side staked)
    admin_a, admin_b = make_user("admin_a", staff=True), make_user("admin_b", staff=True)
    retired = make_user("retired", staff=True)
    retired.is_active = False
    retired.save()
    lonely_creator, lonely_rival, lonely_staker = make_user(), make_user(), make_user(balance=50)
    with time_machine.travel(timezone.now(), tick=False):  # one deadline for both challenges
        active, players = active_challenge(make_user, due_in=timedelta(hours=1), stakers=2)
        pending = open_challenge(lonely_creator, due_in=timedelta(hours=1), challenged=lonely_rival)
        stake_place(user=lonely_staker, challenge_id=pending.pk, side="yes", amount=50)
        later = open_challenge(make_user(), due_in=timedelta(hours=2))

    # When the sweep runs exactly at the deadline
    with (
        time_machine.travel(active.due_date, tick=False),
        django_capture_on_commit_callbacks() as callbacks,
    ):
        result = challenges_sweep_deadlines()

    # Then the active challenge waits for staff and the pending one is cancelled
    assert result.pending_admin == [active.pk]
    assert result.cancelled == [pending.pk]
    statuses = dict(Challenge.objects.values_list("id", "status"))
    assert statuses[active.pk] == Challenge.Status.PENDING_ADMIN
    assert statuses[pending.pk] == Challenge.Status.CANCELLED
    assert statuses[later.pk] == Challenge.Status.PENDING
    # Each active staff member is told once; players of the active challenge hear nothing yet
    assert _kinds(admin_a) == _kinds(admin_b) == [("needs_resolution", active.pk)]
    assert _kinds(retired) == []
    assert all(_kinds(p) == [] for p in players)
    # Every participant of the cancelled challenge is told why
    for user in (lonely_creator, lonely_rival, lonely_staker):
        assert _kinds(user) == [("challenge_cancelled", pending.pk)]
    assert result.notifications == 5
    # The money stays in escrow for the refund job; the sweep moves none
    pending.escrow.refresh_from_db()
    assert pending.escrow.balance == 50
    # And that refund job was opened in the sweep's own transaction
    job = PayoutJob.objects.get(challenge=pending)
    assert (job.kind, job.status) == (PayoutJob.Kind.REFUND, PayoutJob.Status.QUEUED)
    # And a live alert for the staff channel is sent after commit
    alerts = [c for c in callbacks if getattr(c, "func", None) == staff_event_publish_task.delay]
    assert [a.args for a in alerts] == [
        ("challenges.needs_resolution", {"count": 1, "challenge_ids": [active.pk]})
    ]


@pytest.mark.django_db
def test_a_second_sweep_changes_and_sends_nothing(make_user):
    make_user("admin", staff=True)
    challenge, _ = active_challenge(make_user, due_in=timedelta(minutes=5))
    with time_machine.travel(challenge.due_date + timedelta(minutes=1), tick=False):
        first = challenges_sweep_deadlines()
        second = challenges_sweep_deadlines()
    assert (len(first.pending_admin), first.notifications) == (1, 1)
    assert (second.pending_admin, second.cancelled, second.notifications) == ([], [], 0)
    assert Notification.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("count", [10, 1000])
def test_the_sweep_issues_a_constant_number_of_queries(
    make_user, django_assert_num_queries, settings, count
):
    # Given `count` expired challenges (of one creator: no cap on open challenges here), half
    # active, half pending, and two staff members
    settings.CHALLENGE_OPEN_LIMIT = count
    make_user("admin_a", staff=True)
    make_user("admin_b", staff=True)
    yes, no = make_user(balance=10**6), make_user(balance=10**6)
    challenges = [open_challenge(yes, due_in=timedelta(minutes=30)) for _ in range(count)]
    for i, challenge in enumerate(challenges):
        stake_place(user=yes, challenge_id=challenge.pk, side="yes", amount=1)
        if i % 2:
            stake_place(user=no, challenge_id=challenge.pk, side="no", amount=1)

    # When the sweep runs after their deadline: the same statements whatever the count
    # (savepoint, UPDATE, staff INSERT, participants INSERT, refund jobs INSERT, release)
    with (
        time_machine.travel(challenges[-1].due_date + timedelta(minutes=1), tick=False),
        django_assert_num_queries(6),
    ):
        result = challenges_sweep_deadlines()

    # Then all of them moved; each staff member got one notification for them all, the
    # challenger one per cancelled challenge, and each cancelled challenge its refund job
    assert len(result.pending_admin) == len(result.cancelled) == count // 2
    assert result.notifications == 2 + count // 2
    assert PayoutJob.objects.filter(kind=PayoutJob.Kind.REFUND).count() == count // 2


@pytest.mark.django_db
def test_staff_get_one_notification_for_all_the_challenges_a_sweep_moves(make_user):
    # Given two staff members and 150 active challenges past their deadline
    admins = [make_user("admin_a", staff=True), make_user("admin_b", staff=True)]
    challenges = [active_challenge(make_user, due_in=timedelta(minutes=30))[0] for _ in range(150)]
    ids = sorted(c.pk for c in challenges)

    # When one sweep moves them all, and a second one runs
    with time_machine.travel(challenges[-1].due_date + timedelta(minutes=1), tick=False):
        result = challenges_sweep_deadlines()
        again = challenges_sweep_deadlines()

    # Then each staff member has one notification naming the first, the count and the first
    # hundred ids (all of them are in the console's "awaiting resolution" list)
    assert result.pending_admin == ids
    assert (result.notifications, again.notifications) == (2, 0)
    first = Challenge.objects.get(pk=ids[0])
    for admin in admins:
        (note,) = Notification.objects.filter(user=admin)
        assert (note.kind, note.challenge_id) == ("needs_resolution", ids[0])
        assert note.title == "150 challenges need resolution"
        assert note.body == (
            f'"{first.title}" and 149 more passed their deadline and wait for a result.'
        )
        assert note.data["count"] == 150
        assert note.data["challenge_ids"] == ids[:100]
        assert note.dedup_key == f"needs_resolution:{ids[0]}:{admin.pk}"


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_the_same_moment_move_and_notify_each_challenge_once(make_user):
    # Given staff, ten expired active challenges and ten expired pending ones
    make_user("admin", staff=True)
    yes, no = make_user(balance=1000), make_user(balance=1000)
    challenges = [open_challenge(yes, due_in=timedelta(minutes=20)) for _ in range(20)]
    for i, challenge in enumerate(challenges):
        stake_place(user=yes, challenge_id=challenge.pk, side="yes", amount=1)
        if i < 10:
            stake_place(user=no, challenge_id=challenge.pk, side="no", amount=1)

    # When two sweeps start together after the deadline
    with time_machine.travel(challenges[-1].due_date + timedelta(seconds=30), tick=False):
        results = run_together(challenges_sweep_deadlines, challenges_sweep_deadlines)

    # Then between them each challenge moved once, the staff heard of each once, and each
    # cancellation was told once
    assert len(results) == 2
    assert sorted(pk for r in results for pk in r.pending_admin) == [c.pk for c in challenges[:10]]
    assert sorted(pk for r in results for pk in r.cancelled) == [c.pk for c in challenges[10:]]
    told = Notification.objects.filter(kind="needs_resolution")
    assert sorted(pk for n in told for pk in n.data["challenge_ids"]) == [
        c.pk for c in challenges[:10]
    ]
    cancelled = Notification.objects.filter(kind="challenge_cancelled")
    assert sorted(cancelled.values_list("challenge_id", flat=True)) == [
        c.pk for c in challenges[10:]
    ]
    assert sum(r.notifications for r in results) == Notification.objects.count()
