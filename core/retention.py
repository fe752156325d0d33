"""Deleting old rows without long transactions, and keeping task results from living forever.

Each app prunes its own tables with ``rows_delete_batched``; the nightly retention task
(``payouts.services.retention``) calls them. What is never pruned -- ledger transfers, payout
entries, the audit trail -- simply has no caller here.
"""

import itertools
import time

from celery import current_app
from celery.backends.redis import RedisBackend
from django.db import connection, transaction

_DELETE_SQL = """
WITH doomed AS (
    SELECT id FROM {table}
    WHERE id > %(after)s AND ({condition})
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {table} AS t USING doomed WHERE t.id = doomed.id
RETURNING t.id
"""


def rows_delete_batched(
    *, table: str, condition: str, params: dict, batch_size: int, until: float | None = None
) -> int:
    """Delete the rows of ``table`` that match ``condition``, ``batch_size`` at a time, each
    batch in its own short transaction; return how many were deleted. With ``until`` (a
    ``time.monotonic()`` value) no batch starts after it: what is left waits for the next run.

    Walks the primary key upwards (keyset), so the whole run reads the table's index once.
    ``FOR UPDATE SKIP LOCKED`` lets two runs at once split the work instead of waiting on each
    other or failing: each row is deleted by exactly one of them. ``table`` and ``condition``
    are the caller's constants (never input); values go in ``params``.
    """
    sql = _DELETE_SQL.format(table=table, condition=condition)
    deleted = 0
    after = 0
    while True:
        with transaction.atomic(durable=True), connection.cursor() as cursor:
            cursor.execute(sql, {**params, "after": after, "limit": batch_size})
            ids = [row[0] for row in cursor.fetchall()]
        deleted += len(ids)
        if len(ids) < batch_size or (until is not None and time.monotonic() > until):
            return deleted
        after = max(ids)


def task_results_expire(*, scan_limit: int) -> int:
    """Make stored task results expire: return how many had no expiry and got one.

    The Redis result backend writes every result with ``CELERY_RESULT_EXPIRES`` as its TTL and
    Redis deletes it then; a result written without one (another backend setting, a manual
    write) would stay forever, so it gets that TTL from now. At most ``scan_limit`` keys are
    looked at per run (``SCAN``, never ``KEYS``). Other backends delete their expired results
    through Celery's own ``cleanup()``.
    """
    backend = current_app.backend
    if not isinstance(backend, RedisBackend):
        backend.cleanup()
        return 0
    if not backend.expires:
        return 0  # configured to keep results forever
    client = backend.client
    prefix = backend.task_keyprefix
    prefix = prefix.decode() if isinstance(prefix, bytes) else prefix
    fixed = 0
    keys = client.scan_iter(match=f"{prefix}*", count=500)
    for key in itertools.islice(keys, scan_limit):
        if client.ttl(key) == -1:  # -1: no expiry; -2: gone meanwhile
            fixed += client.expire(key, int(backend.expires))
    return fixed
