"""A local stand-in for Pusher's HTTP API that checks what the real ``pusher`` client sends.

It serves ``POST /apps/<app_id>/batch_events`` on 127.0.0.1 from a thread and verifies the
request the way Pusher does: the path, the JSON body (at most 10 events, each with channel,
name and string data), ``body_md5``, the key, the timestamp and the HMAC-SHA256
``auth_signature`` over ``METHOD\\nPATH\\nsorted query``. A request that fails a check gets the
status Pusher would send (400/401/404) and is recorded in ``rejected``; an accepted one appends
its events to ``events``. ``fail_next(n, after=k)`` lets ``k`` valid requests through and then
answers the next ``n`` with 500, as an outage does.
"""

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class FakePusher:
    app_id: str = "4242"
    key: str = "fake-key"
    secret: str = "fake-secret"
    events: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    requests: int = 0
    _failures: int = 0
    _passes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def settings(self) -> dict[str, Any]:
        """The project settings (and worker environment) that point the client here."""
        return {
            "PUSHER_APP_ID": self.app_id,
            "PUSHER_KEY": self.key,
            "PUSHER_SECRET": self.secret,
            "PUSHER_HOST": "127.0.0.1",
            "PUSHER_PORT": self.port,
            "PUSHER_SSL": False,
        }

    def fail_next(self, count: int, *, after: int = 0) -> None:
        with self._lock:
            self._failures, self._passes = count, after

    def start(self) -> "FakePusher":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, reply = fake._handle(self.path, body)
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _reject(self, status: int, reason: str) -> tuple[int, dict]:
        with self._lock:
            self.rejected.append((status, reason))
        return status, {"error": reason}

    def _handle(self, raw_path: str, body: bytes) -> tuple[int, dict]:
        with self._lock:
            self.requests += 1
        url = urlsplit(raw_path)
        if url.path != f"/apps/{self.app_id}/batch_events":
            return self._reject(404, f"unknown path {url.path}")
        query = dict(parse_qsl(url.query))
        signature = query.pop("auth_signature", "")
        if query.get("auth_key") != self.key:
            return self._reject(401, "unknown auth_key")
        if query.get("auth_version") != "1.0":
            return self._reject(401, "bad auth_version")
        if abs(time.time() - float(query.get("auth_timestamp") or 0)) > 600:
            return self._reject(401, "stale auth_timestamp")
        if query.get("body_md5") != hashlib.md5(body).hexdigest():  # noqa: S324 - Pusher's scheme
            return self._reject(401, "body_md5 does not match the body")
        to_sign = "\n".join(
            ["POST", url.path, "&".join(f"{k}={v}" for k, v in sorted(query.items()))]
        )
        expected = hmac.new(self.secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return self._reject(401, "bad auth_signature")
        try:
            batch = json.loads(body)["batch"]
            assert isinstance(batch, list)
            assert 1 <= len(batch) <= 10
            for event in batch:
                assert isinstance(event["channel"], str)
                assert isinstance(event["name"], str)
                assert isinstance(event["data"], str)
        except (ValueError, KeyError, TypeError, AssertionError):
            return self._reject(400, "malformed batch")
        with self._lock:
            if self._passes > 0:
                self._passes -= 1
            elif self._failures > 0:
                self._failures -= 1
                return 500, {"error": "internal error"}
            for event in batch:
                self.events.append({**event, "data": json.loads(event["data"])})
        return 200, {}

    def notification_ids(self) -> list[int]:
        """Ids of the notifications received, in arrival order (with any duplicates)."""
        with self._lock:
            return [e["data"]["id"] for e in self.events if e["name"] == "notification"]
