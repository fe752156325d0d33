"""Small database helpers every app may use."""

import zlib

from django.db import connection


def advisory_xact_lock(*, namespace: str, key: int) -> None:
    """Take a PostgreSQL advisory lock on (namespace, key) until the current transaction ends.

    For rules over rows that may not exist yet (a cap on what one user does per day), where no
    row lock can serialize two concurrent requests. Call it inside ``transaction.atomic``.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)",
            [zlib.crc32(namespace.encode()) - 2**31, key % 2**31],
        )
