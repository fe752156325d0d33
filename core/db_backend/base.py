"""Django's PostgreSQL backend, with two changes for the statements every request runs.

**A kept connection is checked without a round trip.** With ``CONN_HEALTH_CHECKS``, Django asks
PostgreSQL ``SELECT 1`` before each request's first statement, so that a request never fails
on a connection PostgreSQL has ended: a round trip, and a transaction of the server's, on every
request (a third of a stake's transactions).

An idle connection has nothing to read. When PostgreSQL ends one (a restart, a terminated
backend, a crash), it sends an error message and closes the socket, which leaves it readable:
so readable means ended, or at least unexpected, and the connection is dropped for a new one.
That is one ``poll`` and no message. A connection that is not idle is asked as Django asks.
What neither check sees in time is a network gone silent: ``SELECT 1`` would wait on it too.

**The hot statements are prepared** (``prepared_cursor``). Django binds parameters on the
client, so PostgreSQL parses and plans the whole text of every statement it is sent. For the
few large statements each request is made of (the token lookup, a stake, a resolve) that was
most of the database's work: a stake's statement took 0.6-0.9 ms to plan and 0.3-0.6 ms to
run. A prepared statement is parsed once per connection, and after five executions PostgreSQL
keeps a generic plan when it costs no more than the custom ones, so planning drops to a lookup.
Every other statement keeps Django's client-side binding: preparing is worth it only for text
a connection runs again and again, and server-side binding infers parameter types, which
Django's ORM does not write its SQL for. ``DATABASE_PREPARED_STATEMENTS=false`` turns the
preparing off (the cursor still binds on the server), for a connection pooler that cannot
keep prepared statements (PgBouncer before 1.21 in transaction mode).
"""

import select

import psycopg
from django.db.backends.postgresql import base, operations
from django.db.backends.postgresql.psycopg_any import register_tzloader
from django.db.backends.utils import CursorWrapper
from psycopg import pq

_TIMESTAMPTZ_OID = psycopg.adapters.types["timestamptz"].oid

# The cursor name that asks ``create_cursor`` for a server-binding cursor (a real name asks
# for a server-side cursor, None for Django's client-binding one).
_PREPARED = "<prepared>"


class DatabaseOperations(operations.DatabaseOperations):
    def last_executed_query(self, cursor, sql, params):
        """The statement with its parameters inlined, for the query log and the tests that
        count queries: psycopg keeps no text of a statement it ran prepared, so a
        ``prepared_cursor``'s statement is composed here, as Django composes it for a
        connection that binds every parameter on the server."""
        if isinstance(cursor, base.ServerBindingCursor):
            return self.compose_sql(sql, params)
        return super().last_executed_query(cursor, sql, params)


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations

    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed or connection.broken:
            return False
        if connection.info.transaction_status != pq.TransactionStatus.IDLE:
            return super().is_usable()
        poller = select.poll()
        poller.register(connection.fileno(), select.POLLIN)
        return not poller.poll(0)

    def prepared_cursor(self) -> CursorWrapper:
        """A cursor whose statements are prepared on the server at their first execution on
        this connection and reuse their parse (and, once PostgreSQL chooses it, their plan)
        afterwards. For statements whose text never changes, run on every request; the
        parameters are typed by psycopg (``%(name)s`` placeholders, as elsewhere), so a
        parameter whose type PostgreSQL cannot infer needs a cast in the SQL."""
        return self._cursor(_PREPARED)

    def create_cursor(self, name=None):
        if name != _PREPARED:
            return super().create_cursor(name)
        cursor = base.ServerBindingCursor(self.connection)
        # As Django's own cursors: the connection's time zone, unless it already has it.
        tzloader = self.connection.adapters.get_loader(_TIMESTAMPTZ_OID, pq.Format.TEXT)
        if self.timezone != tzloader.timezone:
            register_tzloader(self.timezone, cursor)
        return cursor
