"""Counting the queries of a block in a long-lived bench process."""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, reset_queries
from django.test.utils import CaptureQueriesContext


@contextmanager
def queries_captured() -> Iterator[CaptureQueriesContext]:
    """``CaptureQueriesContext`` on the default connection, its query log emptied first.

    Django keeps a connection's last 9,000 queries and the context counts the difference of
    the log's lengths, so once a process has captured that many (the third run of
    ``bench --repeat 3``), every count came out 0."""
    reset_queries()
    with CaptureQueriesContext(connection) as captured:
        yield captured
