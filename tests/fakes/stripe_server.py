"""A fake Stripe API: a real HTTP server that the real ``stripe`` library talks to.

Tests point ``STRIPE_API_BASE`` at it. It runs in a thread of the test process (or on its own
with ``python -m tests.fakes.stripe_server --port N``), and worker processes reach it by URL
like any other Stripe endpoint. It can be driven over HTTP, so tests, benchmarks and chaos runs
in any process configure it and read its counters the same way:

    POST /_fake/config     {"latency": s, "faults": {kind: probability}, "timeout_seconds": s,
                            "rate_limit": n per second (0 = off), "hold_after_create": bool,
                            "seed": n, "faults_on_reads": bool (default true),
                            "webhook_url": url, "webhook_secret": secret}
    POST /_fake/accounts   {"accounts": [{"id": "acct_...", "payouts_enabled": true}, ...]}
    POST /_fake/release    let held responses go (see ``hold_after_create``)
    POST /_fake/reset      forget every transfer, key, account, counter and setting
    POST /_fake/forget_keys {"keys": [...]} (or {} for all): Stripe's 24-hour key expiry, now
    GET  /_fake/stats      counters: transfers per idempotency key, request timestamps, faults
    GET  /_fake/transfers  every transfer created, oldest first, each with the key it was
                           created under (``idempotency_key``, null without one)
    POST /_fake/account_update {"id": "acct_...", "payouts_enabled": bool,
                            "requirements_due": [...]}: change an account as Stripe would,
                            with its ``account.updated`` event
    GET  /_fake/onboard/{account}   where an Account Link points: "the user finished
                            onboarding", so payouts get enabled (and ``account.updated`` sent)
    GET  /_fake/events     every event made so far, oldest first

Events: every change the fake makes to an account or a transfer (onboarding, account updates,
reversals) is an event with a strictly increasing ``created``, listed by ``GET /v1/events``
and, when ``webhook_url`` is configured (``/_fake/config``), delivered there signed with
``webhook_secret`` (``Stripe-Signature``, as Stripe signs), from a background thread, in order.

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
- Connect: ``POST /v1/accounts`` (Express; idempotent like transfers, with the same faults,
  so a lost answer followed by a retry still makes one account), ``GET /v1/accounts``
  (newest first, paged), ``POST /v1/account_links`` (its ``url`` is ``/_fake/onboard/...``),
  ``POST /v1/transfers/{id}/reversals`` (partial or full; ``transfer.reversed`` event),
  ``GET /v1/events`` and ``GET /v1/events/{id}``.

Faults, drawn per ``/v1`` request from a seeded generator: ``rate_limit`` (429), ``server_error``
(500), ``lock_timeout`` (409 ``lock_timeout``), ``reset`` (connection reset before anything
executes), ``timeout`` (no answer for ``timeout_seconds``, nothing executes) and ``lost`` (the
transfer is created, then the connection is reset: the response is lost).
"""

import argparse
import hashlib
import hmac
import io
import json
import queue
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from urllib.request import Request, urlopen

FAULT_KINDS = ("rate_limit", "server_error", "lock_timeout", "reset", "timeout", "lost")


def _error(kind: str, message: str, **extra: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, **extra}}


def _metadata(params: dict[str, str]) -> dict[str, str]:
    return {
        name[len("metadata[") : -1]: value
        for name, value in params.items()
        if name.startswith("metadata[")
    }


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
                "webhook_url": "",
                "webhook_secret": "whsec_fake",
                # False: faults hit only POSTs, so lookups (GETs) always answer.
                "faults_on_reads": True,
            }
            self.random = random.Random(0)
            self.accounts: dict[str, dict[str, Any]] = {}
            self.transfers: dict[str, dict[str, Any]] = {}
            # idempotency key -> {"params": ..., "status": ..., "body": ...} once executed
            self.keys: dict[str, dict[str, Any]] = {}
            # idempotency key -> the client's port, for requests waiting for their answer
            self.in_flight: dict[str, int] = {}
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
            self.events: list[dict[str, Any]] = []
            self.last_created = 0
            self.deliveries: list[tuple[str, int | str]] = []

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

    def event_emit(self, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Record an event about ``obj`` (call with the lock held); ``created`` always grows,
        so Stripe's order is unambiguous here even within one second."""
        self.sequence += 1
        self.last_created = max(int(time.time()), self.last_created + 1)
        event = {
            "id": f"evt_fake{self.sequence:08d}",
            "object": "event",
            "type": event_type,
            "created": self.last_created,
            "livemode": False,
            "api_version": "2024-06-20",
            "data": {"object": json.loads(json.dumps(obj))},
        }
        self.events.append(event)
        if self.config["webhook_url"]:
            _WEBHOOK_QUEUE.put(
                (self, event, self.config["webhook_url"], self.config["webhook_secret"])
            )
        return event

    def account_update(self, account_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change an account as Stripe would (onboarding finished, requirements due, payouts
        paused) and emit its ``account.updated``; returns the event."""
        with self.lock:
            account = self.accounts[account_id]
            if "payouts_enabled" in changes:
                enabled = bool(changes["payouts_enabled"])
                account["payouts_enabled"] = account["charges_enabled"] = enabled
                account["details_submitted"] = account.get("details_submitted") or enabled
            if "requirements_due" in changes or "payouts_enabled" in changes:
                due = changes.get("requirements_due", [] if account["payouts_enabled"] else None)
                if due is not None:
                    account.setdefault("requirements", {})["currently_due"] = list(due)
            return self.event_emit("account.updated", account)

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
                # Which connections wait: a test can tell whose process is in mid-call.
                "in_flight_ports": sorted(self.in_flight.values()),
                "held": self.held,
                "accounts_created": sum(1 for a in self.accounts.values() if a.get("created")),
                "events": len(self.events),
                "deliveries": list(self.deliveries),
            }

    def _created_per_key(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for key in self.transfer_keys.values():
            if key is not None:
                counts[key] = counts.get(key, 0) + 1
        return counts


# Events go out one at a time, in the order they were made, as Stripe's deliveries mostly do;
# a test that wants them out of order delivers them itself.
_WEBHOOK_QUEUE: "queue.Queue[tuple[FakeStripeState, dict[str, Any], str, str]]" = queue.Queue()


def webhook_signature(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header Stripe would send with ``payload``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _webhook_deliver_forever() -> None:
    while True:
        state, event, url, secret = _WEBHOOK_QUEUE.get()
        payload = json.dumps(event).encode()
        request = Request(  # noqa: S310 (the URL a test configured, http only)
            url,
            data=payload,
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": webhook_signature(payload, secret),
            },
        )
        try:
            with urlopen(request, timeout=30) as response:  # noqa: S310
                outcome: int | str = response.status
        # Any failure is recorded, as Stripe's delivery log would, and never stops the thread.
        except Exception as exc:
            outcome = getattr(exc, "code", None) or type(exc).__name__
        with state.lock:
            state.deliveries.append((event["id"], outcome))


threading.Thread(target=_webhook_deliver_forever, daemon=True, name="fake-webhooks").start()


# Linux's socket option (and control message) for the kernel's receive time of the data read;
# Python's socket module does not name it.
_SO_TIMESTAMPNS = 35


class _StampedSocketReader(io.RawIOBase):
    """A connection's bytes, read with the time the kernel received them: the first read of a
    request tells when it arrived at this host, which is what Stripe counts against its rate
    limit, however late this process's handler thread gets to it. (Clients here send a
    request only after the previous answer, so a request's first bytes are never in the
    buffer of an earlier read.)"""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.request_arrived: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size, ancillary, _, _ = self.sock.recvmsg_into([buffer], socket.CMSG_SPACE(16))
        if self.request_arrived is None:
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                    seconds, nanoseconds = struct.unpack("qq", data[:16])
                    self.request_arrived = seconds + nanoseconds / 1e9
        return size


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"
    # An answer is two writes (the headers, then the body). On a kept-alive connection Nagle's
    # algorithm held the body back until the client acknowledged the headers, which the
    # client's delayed ACK put off for 40 ms: every request took 40 ms longer than its
    # configured latency.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self.connection.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self._reader = _StampedSocketReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        self._reader.request_arrived = None
        super().handle_one_request()

    @property
    def arrived(self) -> float:
        """When this request's first bytes reached this host."""
        return self._reader.request_arrived or time.time()

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
        if url.path == "/_fake/events":
            with self.state.lock:
                self._send(200, {"data": list(self.state.events)})
            return
        if url.path.startswith("/_fake/onboard/"):
            account_id = url.path.rsplit("/", 1)[-1]
            if account_id not in self.state.accounts:
                self._send(404, {"error": "unknown account"})
                return
            event = self.state.account_update(account_id, {"payouts_enabled": True})
            self._send(200, {"onboarded": account_id, "event": event["id"]})
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
        elif parts[:2] == ["v1", "accounts"] and len(parts) == 2:
            with self.state.lock:
                created = [a for a in self.state.accounts.values() if a.get("created")]
            self._send_page("/v1/accounts", list(reversed(created)), query)
        elif parts[:2] == ["v1", "events"] and len(parts) == 2:
            with self.state.lock:
                events = list(reversed(self.state.events))
            if "type" in query:
                events = [e for e in events if e["type"] == query["type"]]
            self._send_page("/v1/events", events, query)
        elif parts[:2] == ["v1", "events"] and len(parts) == 3:
            with self.state.lock:
                found = next((e for e in self.state.events if e["id"] == parts[2]), None)
            if found is None:
                self._send(
                    404, _error("invalid_request_error", "No such event", code="resource_missing")
                )
            else:
                self._send(200, found)
        else:
            self._send(404, _error("invalid_request_error", f"Unrecognized request URL {url.path}"))

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        raw = self._body()
        if url.path.startswith("/_fake/"):
            self._control(url.path, raw)
            return
        parts = url.path.strip("/").split("/")
        connect = url.path in ("/v1/accounts", "/v1/account_links") or (
            len(parts) == 4 and parts[:2] == ["v1", "transfers"] and parts[3] == "reversals"
        )
        if url.path != "/v1/transfers" and not connect:
            self._send(404, _error("invalid_request_error", f"Unrecognized request URL {url.path}"))
            return
        if not self._authorized():
            return
        latency = float(self.state.config["latency"])
        fault = self.state.draw_fault(self.arrived, transfer_create=not connect)
        if fault not in ("lost", None):
            self._inject_fault(fault)
        elif url.path == "/v1/accounts":
            self._create_transfer(
                raw,
                latency=latency,
                lose_response=fault == "lost",
                execute=self._execute_account_create,
            )
        elif url.path == "/v1/account_links":
            self._account_link(dict(parse_qsl(raw.decode(), keep_blank_values=True)))
        elif connect:
            self._reverse(parts[2], dict(parse_qsl(raw.decode(), keep_blank_values=True)))
        else:
            self._create_transfer(raw, latency=latency, lose_response=fault == "lost")

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
            elif path == "/_fake/account_update":
                self.state.account_update(body["id"], body)
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
            if not self.state.config["faults_on_reads"]:
                with self.state.lock:
                    self.state.request_count += 1
                return False
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

    def _create_transfer(
        self, raw: bytes, *, latency: float, lose_response: bool, execute=None
    ) -> None:
        """An idempotent creation (a transfer, or with ``execute`` any other object)."""
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
                    state.in_flight[key] = self.client_address[1]
        if body is not None:
            self._send(status, body, {"Idempotent-Replayed": "true"})
            return
        try:
            time.sleep(latency)
            status, body = (execute or self._execute_create)(dict(params), key)
        finally:
            with state.lock:
                state.in_flight.pop(key, None)
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

    def _execute_account_create(self, params: dict[str, str], key: str | None) -> tuple[int, dict]:
        """An Express account, not onboarded yet: payouts off, Stripe's usual first requirements."""
        if params.get("type", "express") != "express":
            return 400, _error("invalid_request_error", "Only Express accounts are modelled.")
        state = self.state
        with state.lock:
            state.sequence += 1
            account = {
                "id": f"acct_fake{state.sequence:08d}",
                "object": "account",
                "type": "express",
                "created": int(time.time()),
                "payouts_enabled": False,
                "charges_enabled": False,
                "details_submitted": False,
                "capabilities": {"transfers": "inactive"},
                "requirements": {
                    "currently_due": ["business_type", "external_account", "tos_acceptance.date"]
                },
                "metadata": _metadata(params),
            }
            state.accounts[account["id"]] = account
            if key:
                state.keys[key] = {"params": sorted(params.items()), "status": 200, "body": account}
        return 200, account

    def _account_link(self, params: dict[str, str]) -> None:
        missing = [p for p in ("account", "type", "return_url", "refresh_url") if not params.get(p)]
        if missing or params.get("account") not in self.state.accounts:
            self._send(
                400,
                _error(
                    "invalid_request_error",
                    f"Missing or unknown: {', '.join(missing) or 'account'}",
                    param=(missing or ["account"])[0],
                ),
            )
            return
        host, port = self.server.server_address[:2]
        now = int(time.time())
        self._send(
            200,
            {
                "object": "account_link",
                "created": now,
                "expires_at": now + 300,
                "url": f"http://{host}:{port}/_fake/onboard/{params['account']}",
            },
        )

    def _reverse(self, transfer_id: str, params: dict[str, str]) -> None:
        """A reversal of (part of) a transfer, and its ``transfer.reversed`` event."""
        state = self.state
        with state.lock:
            transfer = state.transfers.get(transfer_id)
            if transfer is None:
                status, body = (
                    404,
                    _error(
                        "invalid_request_error",
                        f"No such transfer: '{transfer_id}'",
                        code="resource_missing",
                    ),
                )
            else:
                left = transfer["amount"] - transfer.get("amount_reversed", 0)
                amount = int(params.get("amount", left))
                if not 0 < amount <= left:
                    status, body = (
                        400,
                        _error(
                            "invalid_request_error", "Amount exceeds what is left.", param="amount"
                        ),
                    )
                else:
                    state.sequence += 1
                    body = {
                        "id": f"trr_fake{state.sequence:08d}",
                        "object": "transfer_reversal",
                        "amount": amount,
                        "currency": transfer["currency"],
                        "transfer": transfer_id,
                        "created": int(time.time()),
                        "metadata": _metadata(params),
                    }
                    reversals = transfer.setdefault(
                        "reversals", {"object": "list", "data": [], "has_more": False}
                    )
                    reversals["data"].append(body)
                    transfer["amount_reversed"] = transfer.get("amount_reversed", 0) + amount
                    transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
                    state.event_emit("transfer.reversed", transfer)
                    status = 200
        self._send(status, body)

    def _send_page(self, url: str, items: list[dict[str, Any]], query: dict[str, str]) -> None:
        limit = min(int(query.get("limit", 10)), 100)
        if "starting_after" in query:
            ids = [item["id"] for item in items]
            after = query["starting_after"]
            items = items[ids.index(after) + 1 :] if after in ids else []
        self._send(
            200,
            {"object": "list", "url": url, "data": items[:limit], "has_more": len(items) > limit},
        )

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


def _env(url: str) -> dict[str, str]:
    """Settings, as environment variables, that point a worker process at the fake at ``url``."""
    return {
        "STRIPE_API_KEY": "sk_test_fake",
        "STRIPE_API_BASE": url,
        "STRIPE_WEBHOOK_SECRET": "whsec_fake",
        "STRIPE_TIMEOUT": "2",
    }


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

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> "FakeStripe":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.state.released.set()
        self._server.shutdown()
        self._server.server_close()

    def env(self) -> dict[str, str]:
        return _env(self.url)

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

    def accounts(self) -> list[dict[str, Any]]:
        """Accounts created through the API (not the ones put in with ``accounts_put``)."""
        with self.state.lock:
            return [dict(a) for a in self.state.accounts.values() if a.get("created")]

    def events(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.events)

    def account_update(self, account_id: str, **changes: Any) -> dict[str, Any]:
        return self.state.account_update(account_id, changes)


class FakeStripeProcess:
    """The fake in a process of its own, driven through its HTTP endpoints.

    What a benchmark that counts requests by the fake's clock uses. Each request is stamped
    with the kernel's receive time of its first bytes (``_StampedSocketReader``), not with
    when a handler thread gets to it: in the benchmark's own process whatever else it does
    (starting and polling workers) bunched handler stamps by tens of milliseconds, and even
    in a process of its own, on two busy cores, handler stamps counted 101 requests within
    one second where the same requests had arrived at most 100 to a second.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> "FakeStripeProcess":
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.stripe_server", "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert self._process.stdout is not None
        started = self._process.stdout.readline()  # "fake Stripe on <url>"
        if not started:
            self._process.wait(timeout=10)
            raise RuntimeError(f"the fake Stripe exited with {self._process.returncode}")
        self.url = started.split()[-1]
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            if self._process.stdout is not None:
                self._process.stdout.close()

    def env(self) -> dict[str, str]:
        return _env(self.url)

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = Request(  # noqa: S310 (the fake's own http URL)
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        with urlopen(request, timeout=30) as response:  # noqa: S310
            return json.load(response)

    def configure(self, **changes: Any) -> None:
        self._call("/_fake/config", changes)

    def accounts_put(self, accounts: list[dict[str, Any]]) -> None:
        self._call("/_fake/accounts", {"accounts": accounts})

    def stats(self) -> dict[str, Any]:
        return self._call("/_fake/stats")


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
