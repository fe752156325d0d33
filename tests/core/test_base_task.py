"""The base task class, exercised in real worker processes against real Redis and PostgreSQL."""

import itertools

import pytest

from core.models import DeadLetter
from core.services import dead_letter_replay
from tests.conftest import wait_for
from tests.tasks_for_tests import always_transient_task, slow_task, succeeds_on_replay_task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _attempt_times(redis_client, key: str) -> list[float]:
    return [float(x) for x in redis_client.lrange(f"attempts:{key}", 0, -1)]


def test_transient_errors_retry_with_growing_delays_then_dead_letter(workers, redis_client):
    # Given a worker with base delay 0.3 s and 4 retries (see worker_env)
    workers.start("default")
    # When a task keeps raising a transient error
    result = always_transient_task.delay("k1")
    letter = wait_for(lambda: DeadLetter.objects.filter(task_id=result.id).first(), timeout=60)
    # Then it ran 1 + 4 times, each wait longer than the one before
    times = _attempt_times(redis_client, "k1")
    assert len(times) == 5
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps)), gaps
    assert gaps[0] >= 0.3
    # And the dead letter says what failed, with what, how often
    assert letter.task_name == "tests.always_transient"
    assert letter.args == ["k1"]
    assert letter.attempts == 5
    assert "TransientError: the outside world is down" in letter.error
    assert "Traceback" in letter.traceback
    assert letter.status == DeadLetter.Status.OPEN


def test_replaying_a_dead_letter_runs_the_task_again(workers, redis_client, staff):
    workers.start("default")
    result = succeeds_on_replay_task.delay("k2")
    letter = wait_for(lambda: DeadLetter.objects.filter(task_id=result.id).first(), timeout=60)
    # When the outage is over and staff replay the letter
    redis_client.set("fixed:k2", 1)
    dead_letter_replay(dead_letter_id=letter.pk, actor=staff)
    # Then the task runs again and succeeds, and the letter is marked replayed by that person
    wait_for(lambda: redis_client.get("done:k2"), timeout=30)
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.REPLAYED
    assert letter.replayed_by == staff
    assert len(_attempt_times(redis_client, "k2")) == 6


def test_a_task_whose_worker_is_killed_runs_again_on_another_worker(workers, redis_client):
    # Given two workers, and a task that is running on one of them
    first = workers.start("default", name="first")
    slow_task.delay("k3", 2.0)
    wait_for(lambda: redis_client.llen("started:k3") == 1, timeout=30)
    second = workers.start("default", name="second")
    # When that worker dies with SIGKILL in the middle of the task
    workers.kill(first)
    assert redis_client.get("done:k3") is None
    # Then the unacknowledged message is redelivered (visibility timeout 5 s) and completes
    wait_for(lambda: redis_client.get("done:k3"), timeout=60)
    assert redis_client.llen("started:k3") == 2
    assert int(redis_client.get("done:k3")) == 1
    assert second.poll() is None
