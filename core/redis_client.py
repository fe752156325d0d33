"""One way to open a Redis client, with the socket timeouts from settings."""

from functools import cache

import redis
from django.conf import settings
from redis.commands.core import Script


def redis_from_url(url: str) -> redis.Redis:
    """A client for ``url`` whose calls fail after ``REDIS_SOCKET_TIMEOUT`` seconds instead of
    hanging on a Redis that stopped answering."""
    return redis.Redis.from_url(
        url,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=settings.REDIS_SOCKET_CONNECT_TIMEOUT,
    )


@cache
def redis_script(url: str, lua: str | bytes) -> Script:
    """``lua`` registered on one client for ``url``, kept for the life of the process (and per
    URL, for tests that switch): building a client per call cost as much CPU as the round
    trip on the hot paths that run a script on every request."""
    return redis_from_url(url).register_script(lua)
