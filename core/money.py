"""Money conventions every app shares: amounts are integers of minor units, never floats."""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DataError
from psycopg import errors as pg_errors

from core.errors import AmountOutOfRange

# Largest amount one transfer (and so one stake or deposit) may carry: far below bigint's
# limit, so that sums of many transfers on one account cannot overflow.
MAX_AMOUNT = 10**15


@contextmanager
def amounts_in_range() -> Iterator[None]:
    """Turn PostgreSQL's bigint overflow inside the block into ``AmountOutOfRange`` (409).

    Use it around statements that add to a running total inside the caller's transaction: the
    error leaves that transaction, so nothing of it is written.
    """
    try:
        yield
    except DataError as exc:
        if isinstance(exc.__cause__, pg_errors.NumericValueOutOfRange):
            raise AmountOutOfRange() from exc
        raise
