"""Django's PostgreSQL backend, except how a kept connection is checked before a request uses it.

With ``CONN_HEALTH_CHECKS``, Django asks PostgreSQL ``SELECT 1`` before each request's first
statement, so that a request never fails on a connection PostgreSQL has ended: a round trip,
and a transaction of the server's, on every request (a third of a stake's transactions).

An idle connection has nothing to read. When PostgreSQL ends one (a restart, a terminated
backend, a crash), it sends an error message and closes the socket, which leaves it readable:
so readable means ended, or at least unexpected, and the connection is dropped for a new one.
That is one ``poll`` and no message. A connection that is not idle is asked as Django asks.
What neither check sees in time is a network gone silent: ``SELECT 1`` would wait on it too.
"""

import select

from django.db.backends.postgresql import base
from psycopg import pq


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed or connection.broken:
            return False
        if connection.info.transaction_status != pq.TransactionStatus.IDLE:
            return super().is_usable()
        poller = select.poll()
        poller.register(connection.fileno(), select.POLLIN)
        return not poller.poll(0)
