"""The beat tasks in a real scheduler worker, and their notifications through a real
notifications worker (log backend: no Pusher credentials)."""

import time
from datetime import timedelta

import pytest

from challenges.models import Challenge
from challenges.tasks import challenges_send_deadline_warnings_task, challenges_sweep_deadlines_task
from notifications.models import Notification
from tests.challenges.helpers import active_challenge
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def test_the_beat_tasks_run_in_workers_and_their_notifications_are_delivered(make_user, workers):
    # Given scheduler and notifications workers, staff, and two active challenges: one whose
    # deadline passes in a moment and one due in five minutes
    workers.start("scheduler", name="scheduler")
    workers.start("notifications", name="notifications")
    make_user("admin", staff=True)
    expiring, _ = active_challenge(make_user, due_in=timedelta(seconds=2))
    closing, players = active_challenge(make_user, due_in=timedelta(minutes=5), stakers=3)
    time.sleep(2.5)

    # When beat fires both tasks
    challenges_sweep_deadlines_task.delay()
    challenges_send_deadline_warnings_task.delay()

    # Then the expired challenge waits for staff, and every notification is delivered
    wait_for(
        lambda: Challenge.objects.get(pk=expiring.pk).status == Challenge.Status.PENDING_ADMIN,
        timeout=30,
    )
    wait_for(lambda: Notification.objects.count() == 1 + len(players), timeout=30)
    wait_for(
        lambda: not Notification.objects.filter(delivered_at__isnull=True).exists(), timeout=30
    )
    assert set(Notification.objects.values_list("kind", flat=True)) == {
        "needs_resolution",
        "deadline_10m",
    }
    assert Challenge.objects.get(pk=closing.pk).status == Challenge.Status.ACTIVE
