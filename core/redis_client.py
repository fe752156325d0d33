"""One way to open a Redis client, with the socket timeouts from settings."""

import redis
from django.conf import settings


def redis_from_url(url: str) -> redis.Redis:
    """A client for ``url`` whose calls fail after ``REDIS_SOCKET_TIMEOUT`` seconds instead of
    hanging on a Redis that stopped answering."""
    return redis.Redis.from_url(
        url,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=settings.REDIS_SOCKET_CONNECT_TIMEOUT,
    )
