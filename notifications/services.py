"""Notifications: created set-based and idempotently, delivered after commit in chunked tasks."""

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from celery import current_app
from django.db import connection, transaction
from django.utils import timezone

from core.errors import DomainError, Forbidden, NotFound
from core.retention import rows_delete_batched
from notifications.backends import (
    PUSHER_BATCH_LIMIT,
    STAFF_CHANNEL,
    backend,
    pusher_client,
    pusher_configured,
    user_channel,
)
from notifications.models import Notification

# Ids per delivery task: a warning to 100,000 users becomes 200 messages of 500 ids each --
# neither one giant task argument nor one task per user -- which the notification workers
# drain in parallel.
DELIVERY_CHUNK = 500

# Looked up by name (registered in ``NotificationsConfig.ready``): ``notifications.tasks``
# imports this module, never the reverse.
DELIVER_TASK = "notifications.tasks.notifications_deliver_task"
FAN_OUT_TASK = "notifications.tasks.notifications_deliver_fan_out_task"
STAFF_EVENT_TASK = "notifications.tasks.staff_event_publish_task"

# The caller's SELECT must yield, in this order: user_id, kind, challenge_id, title, body,
# priority, data (jsonb), dedup_key, and must not end with an ORDER BY or LIMIT of its own.
# ON CONFLICT makes a repeated run insert nothing, so two beats or a retried task never notify
# twice. A producer that keeps its own record of whom it told (the deadline warnings) inserts
# keyless rows without it: each key is an index entry and each ON CONFLICT a speculative
# insertion, together about 40% of a row's cost.
#
# Rows go in by user: the (user, -id) index then takes its entries in key order, one leaf page
# after the next, rather than one random page per row. For a 100,000-row warning the sort
# costs about 30 ms and saves about 300. (The ORDER BY is appended rather than wrapping the
# SELECT in a subquery, which would cost its NULLs and untyped parameters the target columns'
# types.)
_INSERT_SQL = """
INSERT INTO notifications_notification
    (user_id, kind, challenge_id, title, body, priority, data, dedup_key)
{select}
ORDER BY 1
{on_conflict}
RETURNING id
"""
# The key's unique index holds only rows that have a key; naming its predicate is how
# PostgreSQL takes a partial index as the arbiter.
_ON_CONFLICT = "ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING"


def notifications_insert_select(
    *, select_sql: str, params: Sequence[Any] | Mapping[str, Any] = (), keyed: bool = True
) -> list[int]:
    """Insert one notification per row of ``select_sql`` (one statement, whatever the count)
    and schedule their delivery after the surrounding transaction commits.

    ``params`` are the SELECT's query parameters (a sequence for ``%s``, a mapping for
    ``%(name)s``). Idempotent through ``dedup_key``: rows whose key exists already are skipped,
    including keys a concurrent transaction is inserting (the unique index makes it wait for
    that one). Returns the ids actually inserted.

    ``keyed=False`` is for a producer whose rows have no key (NULL) because it records itself
    whom it told, under a lock that serializes its runs: every row is inserted.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_SQL.format(select=select_sql, on_conflict=_ON_CONFLICT if keyed else ""),
            dict(params) if isinstance(params, Mapping) else list(params),
        )
        ids = [row[0] for row in cursor.fetchall()]
    if ids:
        transaction.on_commit(partial(notifications_deliver_enqueue, notification_ids=ids))
    return ids


def notifications_deliver_enqueue(*, notification_ids: Sequence[int]) -> int:
    """Queue delivery of the given notifications in one broker message; return how many
    delivery tasks (``DELIVERY_CHUNK`` ids each) will run.

    Up to ``DELIVERY_CHUNK`` ids go straight to a delivery task. More go to one fan-out task
    as ranges of consecutive ids, and a notifications worker splits them into delivery tasks
    (``notifications_deliver_fan_out``): the caller -- a beat tick that just stored 100,000
    warnings, still holding its worker -- pays for one message instead of 200. Safe to repeat:
    delivery skips what was delivered already, and a lost message is made up for by
    ``notifications_redeliver_stale``.
    """
    ids = sorted(notification_ids)
    if len(ids) > DELIVERY_CHUNK:
        current_app.tasks[FAN_OUT_TASK].delay(_id_ranges(ids))
    elif ids:
        current_app.tasks[DELIVER_TASK].delay(ids)
    return -(-len(ids) // DELIVERY_CHUNK)


def _id_ranges(ids: Sequence[int]) -> list[list[int]]:
    """Sorted ids as ``[first, last]`` runs of consecutive ids: the ids one INSERT returns are
    mostly consecutive, so 100,000 of them usually fit in a few pairs."""
    ranges: list[list[int]] = []
    for pk in ids:
        if ranges and pk <= ranges[-1][1] + 1:
            ranges[-1][1] = pk
        else:
            ranges.append([pk, pk])
    return ranges


def notifications_deliver_fan_out(*, id_ranges: Sequence[Sequence[int]]) -> int:
    """Queue one delivery task per ``DELIVERY_CHUNK`` ids of the ``[first, last]`` ranges;
    return how many. Run by a notifications worker for ``notifications_deliver_enqueue``; a
    repeat (the worker died half-way and the message came back) queues duplicates that find
    their notifications delivered and send nothing."""
    ids = [pk for first, last in id_ranges for pk in range(first, last + 1)]
    for start in range(0, len(ids), DELIVERY_CHUNK):
        current_app.tasks[DELIVER_TASK].delay(ids[start : start + DELIVERY_CHUNK])
    return -(-len(ids) // DELIVERY_CHUNK)


# A notification still undelivered this long after it was stored lost its delivery task (the
# process died between commit and enqueue, the broker lost the message, or retries ran out):
# beat queues it again. Older than a day it is stale news and stays in the in-app list only.
REDELIVERY_AFTER = timedelta(minutes=5)
REDELIVERY_MAX_AGE = timedelta(days=1)
REDELIVERY_LIMIT = 5_000


def notifications_redeliver_stale(*, now: datetime | None = None) -> int:
    """Queue delivery again for notifications undelivered ``REDELIVERY_AFTER`` after they were
    stored (at most ``REDELIVERY_LIMIT`` per run, oldest first); return how many.

    The safety net for lost delivery tasks, never the main path. Safe alongside a delivery
    that is still retrying: delivery claims rows with ``SKIP LOCKED`` and skips delivered ones.
    """
    now = now or timezone.now()
    ids = list(
        Notification.objects.filter(
            delivered_at__isnull=True,
            created_at__lte=now - REDELIVERY_AFTER,
            created_at__gt=now - REDELIVERY_MAX_AGE,
        )
        .order_by("id")
        .values_list("id", flat=True)[:REDELIVERY_LIMIT]
    )
    notifications_deliver_enqueue(notification_ids=ids)
    return len(ids)


def _event(notification: Notification) -> tuple[str, str, dict[str, Any]]:
    return (
        user_channel(notification.user_id),
        "notification",
        {
            "id": notification.pk,
            "kind": notification.kind,
            "challenge_id": notification.challenge_id,
            "title": notification.title,
            "body": notification.body,
            "priority": notification.priority,
            "data": notification.data,
        },
    )


def notifications_deliver(*, notification_ids: Sequence[int]) -> int:
    """Send the given notifications that are not delivered yet; return how many were sent.

    Works in backend batches (Pusher takes 10 events per call), each in its own short
    transaction: claim the batch's undelivered rows (``FOR UPDATE SKIP LOCKED``, so a duplicate
    task running at the same time sends none of them), send, set ``delivered_at``, commit. A
    failure in batch k leaves batches before it delivered and marked, so the retry sends only
    the rest: each notification is sent once unless the process dies between a send and its
    commit, in which case it is sent again (clients de-duplicate by ``id``).
    """
    ids = sorted(notification_ids)
    sent = 0
    for start in range(0, len(ids), PUSHER_BATCH_LIMIT):
        with transaction.atomic():
            batch = list(
                Notification.objects.select_for_update(skip_locked=True)
                .filter(pk__in=ids[start : start + PUSHER_BATCH_LIMIT], delivered_at__isnull=True)
                .order_by("id")
            )
            if not batch:
                continue
            backend().send([_event(n) for n in batch])
            sent += Notification.objects.filter(pk__in=[n.pk for n in batch]).update(
                delivered_at=timezone.now()
            )
    return sent


def notification_mark_read(*, user: Any, notification_id: int) -> Notification:
    """Mark one of the user's own notifications read (idempotent: the first read time stays).

    Someone else's notification is indistinguishable from a missing one (``not_found``).
    """
    Notification.objects.filter(pk=notification_id, user=user, read_at__isnull=True).update(
        read_at=timezone.now()
    )
    notification = Notification.objects.filter(pk=notification_id, user=user).first()
    if notification is None:
        raise NotFound("No such notification.", code="notification_not_found")
    return notification


class PusherNotConfigured(DomainError):
    code = "pusher_not_configured"
    status = 503
    default_detail = "Live notifications are not configured on this server."


def pusher_channel_authorize(*, user: Any, channel_name: str, socket_id: str) -> dict[str, str]:
    """Sign a private-channel subscription for ``socket_id`` (Pusher's ``authenticate``).

    Only the user's own ``private-user-<id>`` channel, plus ``private-staff`` for staff; any
    other channel is ``channel_forbidden``. Read-only.
    """
    allowed = {user_channel(user.pk)} | ({STAFF_CHANNEL} if user.is_staff else set())
    if channel_name not in allowed:
        raise Forbidden("You may not subscribe to this channel.", code="channel_forbidden")
    if not pusher_configured():
        raise PusherNotConfigured()
    return pusher_client().authenticate(channel=channel_name, socket_id=socket_id)


_STAFF_SELECT = """
SELECT u.id, %(kind)s, NULL, left(%(title)s, 200), %(body)s, %(priority)s, %(data)s::jsonb,
       %(dedup_key)s || ':' || u.id
FROM auth_user AS u
WHERE u.is_staff AND u.is_active
"""


def staff_notify(
    *, kind: str, title: str, body: str, data: dict, dedup_key: str, priority: str = "high"
) -> list[int]:
    """Store one notification per active staff user (one statement) and deliver them after
    commit; ``dedup_key`` (suffixed with each user id) makes a repeat insert nothing."""
    return notifications_insert_select(
        select_sql=_STAFF_SELECT,
        params={
            "kind": kind,
            "title": title,
            "body": body,
            "priority": priority,
            "data": json.dumps(data),
            "dedup_key": dedup_key,
        },
    )


def staff_event_publish_on_commit(*, event: str, data: dict) -> None:
    """Publish a staff event from a task once the surrounding transaction commits, so a Pusher
    outage is retried by the task and never fails or delays the caller."""
    transaction.on_commit(partial(current_app.tasks[STAFF_EVENT_TASK].delay, event, data))


def staff_event_publish(*, event: str, data: dict) -> None:
    """Push a live event (job progress, alerts) to the staff channel; best effort, not stored."""
    backend().send([(STAFF_CHANNEL, event, data)])


def notifications_prune(
    *, created_before: datetime, batch_size: int, until: float | None = None
) -> int:
    """Delete read notifications created before ``created_before``; unread ones stay however
    old (a user has not seen them yet). Batched and safe to run twice at once."""
    return rows_delete_batched(
        table=Notification._meta.db_table,
        condition="read_at IS NOT NULL AND created_at < %(before)s",
        params={"before": created_before},
        batch_size=batch_size,
        until=until,
    )
