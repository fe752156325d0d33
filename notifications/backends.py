"""Where notifications go after they are stored: Pusher when configured, the log otherwise.

Both backends take a list of ``(channel, event, data)`` triples and either accept all of them
or raise: a raised ``TransientError`` is retried by the delivery task, so ``delivered_at`` is
set only for messages the backend accepted.
"""

import json
import logging
from collections.abc import Sequence
from functools import cache
from typing import Any, Protocol

from django.conf import settings

from core.errors import TransientError

logger = logging.getLogger(__name__)

Event = tuple[str, str, dict[str, Any]]

# Pusher accepts at most 10 events per batch trigger.
PUSHER_BATCH_LIMIT = 10


class Backend(Protocol):
    def send(self, events: Sequence[Event]) -> None: ...


class LogBackend:
    """Development and tests without credentials: every event is written to the log."""

    def send(self, events: Sequence[Event]) -> None:
        for channel, event, data in events:
            logger.info("notify %s %s %s", channel, event, json.dumps(data, sort_keys=True))


class PusherBackend:
    """Pusher Channels through the official client's ``trigger_batch``."""

    def __init__(self) -> None:
        self.client = pusher_client()

    def send(self, events: Sequence[Event]) -> None:
        import pusher.errors
        import requests

        for start in range(0, len(events), PUSHER_BATCH_LIMIT):
            chunk = events[start : start + PUSHER_BATCH_LIMIT]
            batch = [{"channel": c, "name": e, "data": d} for c, e, d in chunk]
            try:
                self.client.trigger_batch(batch)
            # 5xx and 429 arrive as PusherBadStatus and are worth retrying; 400/401/403 are
            # configuration mistakes that a retry cannot fix, so they propagate.
            except (pusher.errors.PusherBadStatus, requests.RequestException) as exc:
                raise TransientError(f"pusher: {exc}") from exc


def pusher_configured() -> bool:
    return bool(settings.PUSHER_APP_ID and settings.PUSHER_KEY and settings.PUSHER_SECRET)


@cache
def pusher_client() -> Any:
    """The official Pusher client, built once per process (delivery and channel auth share it)."""
    import pusher

    options: dict[str, Any] = {"ssl": settings.PUSHER_SSL, "timeout": 5}
    if settings.PUSHER_HOST:
        options["host"] = settings.PUSHER_HOST
        if settings.PUSHER_PORT:
            options["port"] = settings.PUSHER_PORT
    else:
        options["cluster"] = settings.PUSHER_CLUSTER
    return pusher.Pusher(
        app_id=settings.PUSHER_APP_ID,
        key=settings.PUSHER_KEY,
        secret=settings.PUSHER_SECRET,
        **options,
    )


@cache
def backend() -> Backend:
    """The configured backend, built once per process."""
    return PusherBackend() if pusher_configured() else LogBackend()


def user_channel(user_id: int) -> str:
    return f"private-user-{user_id}"


STAFF_CHANNEL = "private-staff"
