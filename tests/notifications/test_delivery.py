"""Delivery through the real ``pusher`` client to a local fake Pusher HTTP server."""

import base64
import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from challenges.services import challenges_send_deadline_warnings
from core.errors import TransientError
from notifications.backends import STAFF_CHANNEL
from notifications.models import Notification
from notifications.services import (
    DELIVERY_CHUNK,
    notifications_deliver,
    notifications_deliver_enqueue,
    notifications_deliver_fan_out,
    notifications_redeliver_stale,
    staff_event_publish,
)
from tests.challenges.helpers import active_challenge
from tests.conftest import run_together, wait_for
from tests.notifications.helpers import notify


@pytest.mark.django_db
def test_delivery_sends_signed_batches_of_ten_and_marks_them_delivered(make_user, pusher_fake):
    # Given 25 stored notifications
    users = [make_user() for _ in range(25)]
    ids = notify(users)

    # When they are delivered
    sent = notifications_deliver(notification_ids=ids)

    # Then the fake accepted three signed batch requests (10 + 10 + 5) and nothing was rejected
    assert sent == 25
    assert pusher_fake.rejected == []
    assert pusher_fake.requests == 3
    assert sorted(pusher_fake.notification_ids()) == sorted(ids)
    first = Notification.objects.get(pk=ids[0])
    event = next(e for e in pusher_fake.events if e["data"]["id"] == first.pk)
    assert event["channel"] == f"private-user-{first.user_id}"
    assert event["name"] == "notification"
    assert event["data"] == {
        "id": first.pk,
        "kind": "payout_completed",
        "challenge_id": None,
        "title": "Hello",
        "body": f"Body {first.user_id}",
        "priority": "normal",
        "data": {"n": first.user_id},
    }
    assert not Notification.objects.filter(pk__in=ids, delivered_at__isnull=True).exists()
    # And delivering again sends nothing
    assert notifications_deliver(notification_ids=ids) == 0
    assert pusher_fake.requests == 3


@pytest.mark.django_db
def test_a_500_midway_keeps_what_was_sent_and_the_retry_sends_only_the_rest(make_user, pusher_fake):
    users = [make_user() for _ in range(25)]
    ids = notify(users)
    pusher_fake.fail_next(1, after=1)  # the second batch hits an outage

    with pytest.raises(TransientError):
        notifications_deliver(notification_ids=ids)

    delivered = set(
        Notification.objects.filter(delivered_at__isnull=False).values_list("id", flat=True)
    )
    assert delivered == set(sorted(ids)[:10])
    # the retry (the base task does this in a worker) sends the other 15, each once
    assert notifications_deliver(notification_ids=ids) == 15
    assert sorted(pusher_fake.notification_ids()) == sorted(ids)


@pytest.mark.django_db
def test_a_wrong_secret_is_refused_by_the_server_and_nothing_is_marked(
    make_user, pusher_fake, settings
):
    from notifications.backends import backend, pusher_client

    settings.PUSHER_SECRET = "not-the-secret"
    backend.cache_clear()
    pusher_client.cache_clear()
    ids = notify([make_user()])

    with pytest.raises(Exception, match="bad auth_signature"):
        notifications_deliver(notification_ids=ids)

    assert pusher_fake.rejected == [(401, "bad auth_signature")]
    assert Notification.objects.get(pk=ids[0]).delivered_at is None


def test_staff_events_go_to_the_staff_channel(pusher_fake):
    staff_event_publish(event="payout.progress", data={"job": 7, "percent": 50})
    assert pusher_fake.events == [
        {"channel": STAFF_CHANNEL, "name": "payout.progress", "data": {"job": 7, "percent": 50}}
    ]


def _queued(redis_client) -> list[tuple[str, list]]:
    """The notifications queue's messages as (task name, positional args), emptied."""
    messages = [json.loads(m) for m in redis_client.lrange("notifications", 0, -1)]
    redis_client.delete("notifications")
    return [
        (m["headers"]["task"], json.loads(base64.b64decode(m["body"]))[0])
        for m in reversed(messages)
    ]


@pytest.mark.django_db
def test_big_fan_outs_cost_the_caller_one_message_and_a_worker_splits_them(redis_client):
    # Given the notifications queue is empty
    redis_client.delete("notifications")

    # When 1,201 notifications (ids 1-1,000 and 2,001-2,201) are queued for delivery
    ids = [*range(1, 1001), *range(2001, 2202)]
    tasks = notifications_deliver_enqueue(notification_ids=ids)

    # Then the caller sent one fan-out message carrying the id ranges
    assert tasks == 3
    assert _queued(redis_client) == [
        ("notifications.tasks.notifications_deliver_fan_out_task", [[[1, 1000], [2001, 2201]]])
    ]
    # And the fan-out, run by a worker, queues delivery tasks of 500, 500 and 201 ids
    assert notifications_deliver_fan_out(id_ranges=[[1, 1000], [2001, 2201]]) == 3
    queued = _queued(redis_client)
    assert {name for name, _ in queued} == {"notifications.tasks.notifications_deliver_task"}
    assert [args[0] for _, args in queued] == [
        ids[:DELIVERY_CHUNK],
        ids[DELIVERY_CHUNK : 2 * DELIVERY_CHUNK],
        ids[2 * DELIVERY_CHUNK :],
    ]


@pytest.mark.django_db
def test_small_fan_outs_go_straight_to_one_delivery_task(redis_client):
    redis_client.delete("notifications")

    assert notifications_deliver_enqueue(notification_ids=[7, 3, 5]) == 1

    assert _queued(redis_client) == [
        ("notifications.tasks.notifications_deliver_task", [[3, 5, 7]])
    ]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_big_fan_out_is_split_by_a_worker_and_delivered_exactly_once(
    workers, pusher_fake, pusher_worker_env
):
    # Given a notifications worker pointed at the fake Pusher, and 1,201 users
    workers.start("notifications", **pusher_worker_env)
    users = get_user_model().objects.bulk_create(
        get_user_model()(username=f"fan-{i}") for i in range(2 * DELIVERY_CHUNK + 201)
    )

    # When one notification each is stored (the caller queues one fan-out message on commit)
    with transaction.atomic():
        ids = notify(users, key="big")

    # Then the worker splits it and every notification reaches its user's channel once
    wait_for(
        lambda: not Notification.objects.filter(delivered_at__isnull=True).exists(), timeout=120
    )
    assert sorted(pusher_fake.notification_ids()) == sorted(ids)
    assert pusher_fake.rejected == []


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_warnings_reach_pusher_exactly_once_through_a_worker_despite_500s(
    make_user, workers, pusher_fake, pusher_worker_env
):
    # Given a notifications worker pointed at the fake Pusher, which fails its first 3 requests
    workers.start("notifications", **pusher_worker_env)
    pusher_fake.fail_next(3)
    # and an active challenge with 23 participants, 9 minutes before its deadline
    _, players = active_challenge(make_user, due_in=timedelta(minutes=9), stakers=21)

    # When two warning scans run at the same moment (two beats, or a slow one and the next)
    created = run_together(challenges_send_deadline_warnings, challenges_send_deadline_warnings)
    assert sorted(created) == [0, 23]

    # Then every warning is delivered, after retries, exactly once, on its user's channel
    wait_for(
        lambda: not Notification.objects.filter(delivered_at__isnull=True).exists(), timeout=60
    )
    ids = list(Notification.objects.values_list("id", flat=True))
    assert sorted(pusher_fake.notification_ids()) == sorted(ids)
    assert pusher_fake.requests == 3 + 3  # three 500s, then batches of 10, 10 and 3
    assert pusher_fake.rejected == []
    channels = {e["channel"] for e in pusher_fake.events}
    assert channels == {f"private-user-{p.pk}" for p in players}
    assert all(e["data"]["priority"] == "high" for e in pusher_fake.events)
    assert all(n.delivered_at <= timezone.now() for n in Notification.objects.all())


@pytest.mark.django_db
def test_notifications_whose_delivery_was_lost_are_queued_again(make_user, redis_client):
    # Given three stored notifications whose delivery tasks never ran, one delivered since
    ids = notify([make_user() for _ in range(3)])
    notifications_deliver(notification_ids=ids[:1])  # log backend
    redis_client.delete("notifications")
    now = timezone.now()

    # When the safety net runs: too early, in time, and a day later
    too_early = notifications_redeliver_stale(now=now)
    in_time = notifications_redeliver_stale(now=now + timedelta(minutes=6))
    too_late = notifications_redeliver_stale(now=now + timedelta(days=1, minutes=1))

    # Then only the undelivered ones are queued, once they are 5 minutes old and until a day old
    assert (too_early, in_time, too_late) == (0, 2, 0)
    messages = [json.loads(m) for m in redis_client.lrange("notifications", 0, -1)]
    redis_client.delete("notifications")
    assert [json.loads(base64.b64decode(m["body"]))[0][0] for m in messages] == [sorted(ids[1:])]
