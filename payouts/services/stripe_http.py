"""The HTTP client under the ``stripe`` library: every request to Stripe takes one token of the
shared rate limit (``stripe_token_take``) once its connection is open, just before its first
byte is sent.

Why there and not before the library call: the bucket bounds when tokens are granted, and
Stripe counts when requests arrive. A token taken before the call was followed by the
library building the request, the thread's first ``requests`` session, and on a new connection
a TCP connect (and, to Stripe, a TLS handshake of several round trips), so the delay from grant
to arrival ranged from about a millisecond to tens of milliseconds; requests granted apart
arrived together, and a one-second window of arrivals held more than the bucket grants in
one second. Taken here, only the sending of the bytes lies between the two, and once they are
sent the limiter's log of sends is told when (``token_sent``).

Every HTTP request takes its own token: each one the library retries (``max_network_retries``),
a connection opened again after the server closed it, and every kind of request (creations,
lookups, list pages, account links) alike, with the idempotency key the caller passed.
"""

import threading
from typing import Any, NoReturn

import redis
import stripe
from requests import Session
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from payouts.services.ratelimit import stripe_token_take, token_sent

_thread = threading.local()


def ratelimit_waited() -> float:
    """Seconds this thread has waited for rate-limit tokens so far (it only grows): a caller
    takes the difference around a call to know what that call waited."""
    return float(getattr(_thread, "waited", 0.0))


class _HTTPConnection(HTTPConnection):
    """A connection that opens itself, then takes a token, then sends the request."""

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> None:
        # http.client would connect lazily inside request(); opening first keeps the connect
        # (and a TLS handshake) out of the time between grant and arrival.
        if self.is_closed:
            self.connect()
        send = stripe_token_take()
        _thread.waited = ratelimit_waited() + send.waited
        try:
            super().request(method, url, *args, **kwargs)
        finally:
            # Also after an error: some of the bytes may have gone.
            token_sent(send)


class _HTTPSConnection(_HTTPConnection, HTTPSConnection):
    """The same over TLS: ``connect`` is HTTPS's (handshake included)."""


class _HTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOL_CLASSES = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}


def _rate_limited(manager: PoolManager) -> PoolManager:
    # A pool manager, direct or through an HTTP(S) proxy (requests reads HTTPS_PROXY), makes
    # its pools from this mapping; so every connection to Stripe is one of the above.
    manager.pool_classes_by_scheme = _POOL_CLASSES
    return manager


class _RateLimitedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _rate_limited(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        return _rate_limited(super().proxy_manager_for(proxy, **proxy_kwargs))


def _session() -> Session:
    session = Session()
    adapter = _RateLimitedAdapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class RateLimitedRequestsClient(stripe.RequestsClient):
    """The library's ``requests`` client (one session per thread, as before) whose sessions
    take a token for every request they send. A Redis error while taking it comes out as
    itself (a transient error of the task), not as a Stripe connection error: nothing was
    sent, so no attempt at Stripe is recorded."""

    def _request_internal(self, *args: Any, **kwargs: Any) -> Any:
        if getattr(self._thread_local, "session", None) is None:
            self._thread_local.session = _session()
        return super()._request_internal(*args, **kwargs)

    def _handle_request_error(self, e: Exception) -> NoReturn:
        if isinstance(e, redis.RedisError):
            raise e
        super()._handle_request_error(e)
