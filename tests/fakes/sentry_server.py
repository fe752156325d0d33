"""A local stand-in for Sentry's ingestion endpoint that the real ``sentry-sdk`` sends to.

It serves ``POST /api/<project_id>/envelope/`` on 127.0.0.1 from a thread, checks the
``X-Sentry-Auth`` header names the DSN's public key, undoes gzip or brotli-less plain bodies,
and parses the envelope format (a JSON header line, then per item a JSON item header and a
payload of ``length`` bytes or up to the next newline). Events, transactions and check-ins
are kept in ``items`` as ``(type, payload dict)``; a request with a wrong key gets 401 and is
counted in ``rejected``.
"""

import gzip
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def envelope_parse(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The items of one envelope as ``(type, payload)``; payloads that are not JSON are
    kept as ``{"raw": bytes}``."""
    _, _, rest = body.partition(b"\n")
    items = []
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] :]
            rest = rest.removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = {"raw": payload}
        items.append((header.get("type", ""), parsed))
    return items


@dataclass
class FakeSentry:
    public_key: str = "fakepublickey"
    project_id: str = "42"
    items: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    rejected: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def dsn(self) -> str:
        assert self._server is not None
        return (
            f"http://{self.public_key}@127.0.0.1:{self._server.server_address[1]}/{self.project_id}"
        )

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [payload for item_type, payload in self.items if item_type == kind]

    def wait_for(
        self, kind: str, predicate: Callable[[dict], bool], *, timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for payload in self.of_type(kind):
                if predicate(payload):
                    return payload
            time.sleep(0.1)
        raise AssertionError(f"no {kind} item matched within {timeout}s: {self.items!r}")

    def start(self) -> "FakeSentry":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                auth = self.headers.get("X-Sentry-Auth", "")
                path_ok = self.path.split("?")[0] == f"/api/{fake.project_id}/envelope/"
                if f"sentry_key={fake.public_key}" not in auth or not path_ok:
                    with fake._lock:
                        fake.rejected += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                items = envelope_parse(body)
                with fake._lock:
                    fake.items.extend(items)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
