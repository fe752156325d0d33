"""Notifications: created set-based and idempotently, delivered after commit by a task."""

from collections.abc import Sequence
from functools import partial

from django.db import connection, transaction
from django.utils import timezone

from notifications.backends import STAFF_CHANNEL, backend, user_channel
from notifications.models import Notification

# The caller's SELECT must yield, in this order: user_id, kind, challenge_id, title, body,
# priority, data (jsonb), dedup_key. ON CONFLICT makes a repeated run insert nothing, so two
# beats or a retried task never notify twice.
_INSERT_SQL = """
INSERT INTO notifications_notification
    (user_id, kind, challenge_id, title, body, priority, data, dedup_key)
{select}
ON CONFLICT (dedup_key) DO NOTHING
RETURNING id
"""


def notifications_insert_select(*, select_sql: str, params: Sequence[object] = ()) -> list[int]:
    """Insert one notification per row of ``select_sql`` (one statement, whatever the count)
    and schedule their delivery after the surrounding transaction commits.

    Idempotent through ``dedup_key``: rows whose key exists already are skipped. Returns the
    ids actually inserted.
    """
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_SQL.format(select=select_sql), list(params))
        ids = [row[0] for row in cursor.fetchall()]
    if ids:
        from notifications.tasks import notifications_deliver_task

        transaction.on_commit(partial(notifications_deliver_task.delay, ids))
    return ids


def notifications_deliver(*, notification_ids: Sequence[int]) -> int:
    """Send the given notifications that are not delivered yet; return how many were sent.

    Safe to run twice: only undelivered rows are sent and ``delivered_at`` is set after the
    backend accepted them (a crash in between re-sends, which clients de-duplicate by id).
    """
    pending = list(
        Notification.objects.filter(pk__in=notification_ids, delivered_at__isnull=True).order_by(
            "id"
        )
    )
    if not pending:
        return 0
    backend().send(
        [
            (
                user_channel(n.user_id),
                "notification",
                {
                    "id": n.pk,
                    "kind": n.kind,
                    "challenge_id": n.challenge_id,
                    "title": n.title,
                    "body": n.body,
                    "priority": n.priority,
                    "data": n.data,
                },
            )
            for n in pending
        ]
    )
    return Notification.objects.filter(
        pk__in=[n.pk for n in pending], delivered_at__isnull=True
    ).update(delivered_at=timezone.now())


def staff_event_publish(*, event: str, data: dict) -> None:
    """Push a live event (job progress, alerts) to the staff channel; best effort, not stored."""
    backend().send([(STAFF_CHANNEL, event, data)])
