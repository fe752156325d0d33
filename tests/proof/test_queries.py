"""Query counts of the bench (``proof.queries``)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from proof.queries import queries_captured


@pytest.mark.django_db
def test_a_block_is_counted_after_the_connection_logged_its_limit_of_queries():
    # Given a connection whose query log is full, as in a bench's third run
    with CaptureQueriesContext(connection), connection.cursor() as cursor:
        for _ in range(connection.queries_limit + 1):
            cursor.execute("SELECT 1")
    # When a block of two queries is captured
    with queries_captured() as captured, connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.execute("SELECT 2")
    # Then both are counted (a capture on the full log counts none)
    assert len(captured.captured_queries) == 2
