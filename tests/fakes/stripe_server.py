"""A fake Stripe API: a real HTTP server that the real ``stripe`` library talks to.

Tests point ``STRIPE_API_BASE`` at it. It runs in a thread of the test process (or on its own
with ``python -m tests.fakes.stripe_server --port N``), and worker processes reach it by URL
like any other Stripe endpoint. It can be driven over HTTP, so tests, benchmarks and chaos runs
in any process configure it and read its counters the same way:

    POST /_fake/config     {"latency": s, "faults": {kind: probability}, "timeout_seconds": s,
                            "rate_limit": n per second (0 = off), "hold_after_create": bool,
                            "seed": n}
    POST /_fake/accounts   {"accounts": [{"id": "acct_...", "payouts_enabled": true}, ...]}
    POST /_fake/release    let held responses go (see ``hold_after_create``)
    POST /_fake/reset      forget every transfer, key, account, counter and setting
    POST /_fake/forget_keys {"keys": [...]} (or {} for all): Stripe's 24-hour key expiry, now
    GET  /_fake/stats      counters: transfers per idempotency key, request timestamps, faults
    GET  /_fake/transfers  every transfer created, oldest first, each with the key it was
                           created under (``idempotency_key``, null without one)

What it models of Stripe (https://docs.stripe.com/api/idempotent_requests):
- ``POST /v1/transfers`` with an ``Idempotency-Key``: the same key and parameters replay the
  first response (header ``Idempotent-Replayed: true``); the same key with other parameters is
  a 400 ``idempotency_error``; a key whose first request is still executing is a 409. Requests
  refused before they execute (injected 429/500/reset/timeout, validation errors such as an
  unknown destination) store nothing, so a retry with the same key executes afresh.
- Destination checks: an account the fake does not know is a 400 ``resource_missing`` on
  ``destination``; a known account without payouts enabled is a 400
  ``insufficient_capabilities_for_transfer``.
- ``GET /v1/transfers?transfer_group=...`` (newest first, ``starting_after`` paging) and
  ``GET /v1/transfers/{id}``, ``GET /v1/accounts/{id}``.

Faults, drawn per ``/v1`` request from a seeded generator: ``rate_limit`` (429), ``server_error``
(500), ``lock_timeout`` (409 ``lock_timeout``), ``reset`` (connection reset before anything
executes), ``timeout`` (no answer for ``timeout_seconds``, nothing executes) and ``lost`` (the
transfer is created, then the connection is reset: the response is lost).
"""

import argparse
import json
import random
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

FAULT_KINDS = ("rate_limit", "server_error", "lock_timeout", "reset", "timeout", "lost")


def _error(kind: str, message: str, **extra: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, **extra}}


class FakeStripeState:
    """Everything the fake remembers; every method takes the lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.config: dict[str, Any] = {
                "latency": 0.0,
                "faults": {},
                "timeout_seconds": 5.0,
                "rate_limit": 0,
                "hold_after_create": False,
            }
            self.random = random.Random(0)
            self.accounts: dict[str, dict[str, Any]] = {}
            self.transfers: dict[str, dict[str, Any]] = {}
            # idempotency key -> {"params": ..., "status": ..., "body": ...} once executed
            self.keys: dict[str, dict[str, Any]] = {}
            self.in_flight: set[str] = set()
            # transfer id -> the idempotency key it was created under (None without one)
            self.transfer_keys: dict[str, str | None] = {}
            self.post_times: list[float] = []
            self.request_count = 0
            self.fault_counts: dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)
            self.replays = 0
            self.conflicts = 0
            self.held = 0
            self.released.set()
            self.sequence = 0

    def configure(self, changes: dict[str, Any]) -> None:
        with self.lock:
            if "seed" in changes:
                self.random = random.Random(changes.pop("seed"))
            unknown = set(changes.get("faults", {})) - set(FAULT_KINDS)
            if unknown:
                raise ValueError(f"unknown fault kinds {sorted(unknown)}")
            self.config.update(changes)
            if self.config["hold_after_create"]:
                self.released.clear()
            else:
                self.released.set()

    def accounts_put(self, accounts: list[dict[str, Any]]) -> None:
        with self.lock:
            for account in accounts:
                self.accounts[account["id"]] = {
                    "id": account["id"],
                    "object": "account",
                    "payouts_enabled": bool(account.get("payouts_enabled", True)),
                    "charges_enabled": bool(account.get("payouts_enabled", True)),
                }

    def forget_keys(self, keys: list[str] | None = None) -> None:
        """What Stripe does to a key 24 hours after its first use: the next request with it
        executes afresh. ``None`` forgets every key."""
        with self.lock:
            for key in list(self.keys) if keys is None else keys:
                self.keys.pop(key, None)

    def transfers_created(self) -> list[dict[str, Any]]:
        """Every transfer created, oldest first, with the key it was created under."""
        with self.lock:
            return [
                {**transfer, "idempotency_key": self.transfer_keys.get(transfer_id)}
                for transfer_id, transfer in self.transfers.items()
            ]

    def draw_fault(self, now: float, *, transfer_create: bool = False) -> str | None:
        """Pick this request's fault, if any; the server-side rate limit is checked first.

        Transfer creations are logged with their arrival time (``post_times``), faults or not.
        """
        with self.lock:
            self.request_count += 1
            limit = int(self.config["rate_limit"])
            recent = self.post_times[-limit:] if limit else []
            if transfer_create:
                self.post_times.append(now)
            if limit and sum(1 for t in recent if t > now - 1.0) >= limit:
                self.fault_counts["rate_limit"] += 1
                return "rate_limit"
            roll = self.random.random()
            for kind in FAULT_KINDS:
                roll -= float(self.config["faults"].get(kind, 0.0))
                if roll < 0:
                    self.fault_counts[kind] += 1
                    return kind
        return None

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.request_count,
                "transfers_created": len(self.transfers),
                "created_per_key": self._created_per_key(),
                "post_times": list(self.post_times),
                "faults": dict(self.fault_counts),
                "replays": self.replays,
                "conflicts": self.conflicts,
                "in_flight": len(self.in_flight),
                "held": self.held,
            }

    def _created_per_key(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for key in self.transfer_keys.values():
            if key is not None:
                counts[key] = counts.get(key, 0) + 1
        return counts


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a test run makes thousands of requests; the stats endpoint is the log

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def state(self) -> FakeStripeState:
        return self.server.state

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", f"req_{time.monotonic_ns()}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (its timeout, or it was killed)

    def _reset_connection(self) -> None:
        """Close with a TCP RST: the client sees a connection reset, not a clean answer."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    # -- routing -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/_fake/stats":
            self._send(200, self.state.stats())
            return
        if url.path == "/_fake/transfers":
            self._send(200, {"transfers": self.state.transfers_created()})
            return
        if not self._authorized() or self._inject_fault(None):
            return
        query = dict(parse_qsl(url.query))
        parts = url.path.strip("/").split("/")
        if parts[:2] == ["v1", "transfers"] and len(parts) == 2:
            self._list_transfers(query)
        elif parts[:2] == ["v1", "transfers"] and len(parts) == 3:
            self._retrieve("transfers", parts[2])
        elif parts[:2] == ["v1", "accounts"] and len(parts) == 3:
            self._retrieve("accounts", parts[2])
        else:
            self._send(404, _error("invalid_request_error", f"Unrecognized request URL {url.path}"))

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        raw = self._body()
        if url.path.startswith("/_fake/"):
            self._control(url.path, raw)
            return
        if url.path != "/v1/transfers":
            self._send(404, _error("invalid_request_error", f"Unrecognized request URL {url.path}"))
            return
        if not self._authorized():
            return
        latency = float(self.state.config["latency"])
        fault = self.state.draw_fault(time.time(), transfer_create=True)
        if fault in ("lost", None):
            self._create_transfer(raw, latency=latency, lose_response=fault == "lost")
        else:
            self._inject_fault(fault)

    # -- endpoints ---------------------------------------------------------------------------

    def _control(self, path: str, raw: bytes) -> None:
        try:
            body = json.loads(raw or b"{}")
            if path == "/_fake/config":
                self.state.configure(body)
            elif path == "/_fake/accounts":
                self.state.accounts_put(body["accounts"])
            elif path == "/_fake/release":
                self.state.released.set()
            elif path == "/_fake/reset":
                self.state.reset()
            elif path == "/_fake/forget_keys":
                self.state.forget_keys(body.get("keys"))
            else:
                self._send(404, {"error": "unknown control endpoint"})
                return
        except (ValueError, KeyError, TypeError) as exc:
            self._send(400, {"error": str(exc)})
            return
        self._send(200, {"ok": True})

    def _authorized(self) -> bool:
        if self.headers.get("Authorization", "").startswith("Bearer sk_"):
            return True
        self._send(401, _error("invalid_request_error", "Invalid API Key provided."))
        return False

    def _inject_fault(self, fault: str | None) -> bool:
        """Answer with an injected fault; for GETs the fault is drawn here. True if one was."""
        if fault is None:
            fault = self.state.draw_fault(time.time())
            if fault in (None, "lost"):
                return False
        if fault == "rate_limit":
            self._send(
                429, _error("invalid_request_error", "Too many requests.", code="rate_limit")
            )
        elif fault == "server_error":
            self._send(500, _error("api_error", "Something went wrong on Stripe's end."))
        elif fault == "lock_timeout":
            self._send(409, _error("invalid_request_error", "Object locked.", code="lock_timeout"))
        elif fault == "reset":
            self._reset_connection()
        elif fault == "timeout":
            time.sleep(float(self.state.config["timeout_seconds"]))
            self._reset_connection()
        return True

    def _create_transfer(self, raw: bytes, *, latency: float, lose_response: bool) -> None:
        params = sorted(parse_qsl(raw.decode(), keep_blank_values=True))
        key = self.headers.get("Idempotency-Key")
        state = self.state
        with state.lock:
            saved = state.keys.get(key) if key else None
            if saved is not None:
                if saved["params"] != params:
                    state.conflicts += 1
                    self._send(
                        400,
                        _error(
                            "idempotency_error",
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with.",
                        ),
                    )
                    return
                state.replays += 1
                status, body = saved["status"], saved["body"]
            elif key in state.in_flight:
                state.conflicts += 1
                self._send(
                    409,
                    _error(
                        "idempotency_error",
                        "There is currently another in-progress request using this "
                        "Idempotency-Key. Please try again later.",
                    ),
                )
                return
            else:
                status = body = None
                if key:
                    state.in_flight.add(key)
        if body is not None:
            self._send(status, body, {"Idempotent-Replayed": "true"})
            return
        try:
            time.sleep(latency)
            status, body = self._execute_create(dict(params), key)
        finally:
            with state.lock:
                state.in_flight.discard(key)
        if status == 200 and state.config["hold_after_create"]:
            with state.lock:
                state.held += 1
            state.released.wait(timeout=120)
            with state.lock:
                state.held -= 1
        if lose_response:
            self._reset_connection()
        else:
            self._send(status, body)

    def _execute_create(self, params: dict[str, str], key: str | None) -> tuple[int, dict]:
        try:
            amount = int(params["amount"])
            currency = params["currency"]
            destination = params["destination"]
        except (KeyError, ValueError):
            return 400, _error(
                "invalid_request_error", "Missing or invalid amount/currency/destination."
            )
        state = self.state
        with state.lock:
            account = state.accounts.get(destination)
            if account is None:
                return 400, _error(
                    "invalid_request_error",
                    f"No such destination: '{destination}'",
                    code="resource_missing",
                    param="destination",
                )
            if not account["payouts_enabled"]:
                return 400, _error(
                    "invalid_request_error",
                    "Your destination account needs to have at least one of the following "
                    "capabilities enabled: transfers, crypto_transfers, legacy_payments",
                    code="insufficient_capabilities_for_transfer",
                    param="destination",
                )
            state.sequence += 1
            transfer = {
                "id": f"tr_fake{state.sequence:08d}",
                "object": "transfer",
                "amount": amount,
                "amount_reversed": 0,
                "currency": currency,
                "destination": destination,
                "transfer_group": params.get("transfer_group"),
                "metadata": {
                    name[len("metadata[") : -1]: value
                    for name, value in params.items()
                    if name.startswith("metadata[")
                },
                "created": int(time.time()),
                "livemode": False,
                "reversed": False,
            }
            state.transfers[transfer["id"]] = transfer
            state.transfer_keys[transfer["id"]] = key
            if key:
                state.keys[key] = {
                    "params": sorted(params.items()),
                    "status": 200,
                    "body": transfer,
                }
        return 200, transfer

    def _list_transfers(self, query: dict[str, str]) -> None:
        limit = min(int(query.get("limit", 10)), 100)
        with self.state.lock:
            found = [
                t
                for t in reversed(self.state.transfers.values())
                if "transfer_group" not in query or t["transfer_group"] == query["transfer_group"]
            ]
        if "starting_after" in query:
            ids = [t["id"] for t in found]
            found = (
                found[ids.index(query["starting_after"]) + 1 :]
                if query["starting_after"] in ids
                else []
            )
        self._send(
            200,
            {
                "object": "list",
                "url": "/v1/transfers",
                "data": found[:limit],
                "has_more": len(found) > limit,
            },
        )

    def _retrieve(self, kind: str, object_id: str) -> None:
        with self.state.lock:
            found = getattr(self.state, kind).get(object_id)
        if found is None:
            self._send(
                404,
                _error(
                    "invalid_request_error",
                    f"No such {kind[:-1]}: '{object_id}'",
                    code="resource_missing",
                    param="id",
                ),
            )
        else:
            self._send(200, found)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: FakeStripeState) -> None:
        self.state = state
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: tuple[str, int]) -> None:
        # A client killed mid-request (the chaos run's SIGKILLs) is expected, not an error
        # of the fake worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class FakeStripe:
    """The fake in a background thread of this process; ``url`` is its API base."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = FakeStripeState()
        self._server = _Server((host, port), self.state)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeStripe":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.state.released.set()
        self._server.shutdown()
        self._server.server_close()

    def env(self) -> dict[str, str]:
        """Settings, as environment variables, that point a worker process at this fake."""
        return {
            "STRIPE_API_KEY": "sk_test_fake",
            "STRIPE_API_BASE": self.url,
            "STRIPE_WEBHOOK_SECRET": "whsec_fake",
            "STRIPE_TIMEOUT": "2",
        }

    # Shortcuts for the process that owns the fake; other processes use the HTTP endpoints.
    def configure(self, **changes: Any) -> None:
        self.state.configure(changes)

    def accounts_put(self, accounts: list[dict[str, Any]]) -> None:
        self.state.accounts_put(accounts)

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def transfers(self) -> list[dict[str, Any]]:
        """Every transfer created, oldest first, as Stripe's API shows it."""
        with self.state.lock:
            return list(self.state.transfers.values())

    def forget_keys(self, keys: list[str] | None = None) -> None:
        self.state.forget_keys(keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    args = parser.parse_args()
    fake = FakeStripe(args.host, args.port)
    print(f"fake Stripe on {fake.url}", flush=True)
    fake._server.serve_forever()


if __name__ == "__main__":
    main()
