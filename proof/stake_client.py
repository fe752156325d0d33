"""The load generator of ``proof.stake_load``: closed-loop HTTP/1.1 clients.

It runs as its own process (``python -m proof.stake_client`` with a plan as JSON on standard
input, the figures as JSON on standard output) so that it never shares the server's GIL, and it
imports nothing of Django, so it starts in a blink. One asyncio loop drives every client: each
client sends its requests one after another, the next as soon as the previous answer is read
(closed loop: the figures are what a fixed crowd of users sees), on one connection while the
server keeps it open and on a new one each time it closes it (gunicorn's sync workers close
theirs after each answer). A raw HTTP/1.1 exchange over asyncio streams costs this process
about 0.3 ms of CPU per request on a kept connection and 0.6-0.8 ms with a connection each
(``client_cpu_us``), a share of what the server spends; a Debian ``wrk`` would cost less
but is not on a user's machine.

Plan: ``{"host", "port", "requests": [[request, ...] per client]}`` where a request is
``[path, token, body]``; the run is timed from the moment the clients start.
"""

import asyncio
import json
import sys
import time

from proof.figures import percentile

_TIMEOUT_SECONDS = 30.0


def _request_bytes(host: str, path: str, token: str, body: str) -> bytes:
    payload = body.encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Token {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def _exchange(reader, writer, data: bytes) -> tuple[int, bool]:
    """Send one request, read its whole answer; (status, whether the server keeps the link)."""
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, keep = 0, True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            keep = False
    if length:
        await reader.readexactly(length)
    return status, keep


async def _client(host: str, port: int, requests: list, samples: list, errors: dict) -> None:
    """Send ``requests`` one after another; each answered one's time goes to ``samples``."""
    reader = writer = None
    for path, token, body in requests:
        data = _request_bytes(host, path, token, body)
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            status, keep = await asyncio.wait_for(_exchange(reader, writer, data), _TIMEOUT_SECONDS)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        samples.append(time.perf_counter() - started)
        if status != 201:
            errors[str(status)] = errors.get(str(status), 0) + 1
        if not keep:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def _run(plan: dict) -> dict:
    per_client: list[list[float]] = [[] for _ in plan["requests"]]
    errors: dict[str, int] = {}
    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(
        *(
            _client(plan["host"], plan["port"], reqs, samples, errors)
            for reqs, samples in zip(plan["requests"], per_client, strict=True)
        )
    )
    seconds = time.perf_counter() - started
    samples = [sample for mine in per_client for sample in mine]
    ordered = sorted(samples) or [0.0]
    # Each client's median: equal when the server serves its clients alike; two groups apart
    # when some connections wait longer than others (e.g. a web process holding more of them).
    medians = sorted(percentile(mine, 0.50) for mine in per_client if mine) or [0.0]
    refused = sum(n for code, n in errors.items() if code.isdigit())
    return {
        "requests": sum(len(reqs) for reqs in plan["requests"]),
        "clients": len(plan["requests"]),
        "seconds": round(seconds, 3),
        # Stakes taken (201) per second; refusals and failures are in ``errors``.
        "per_s": round((len(samples) - refused) / seconds, 1),
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 1),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "client_p50_ms": {
            "fastest": round(medians[0] * 1000, 1),
            "slowest": round(medians[-1] * 1000, 1),
        },
        "errors": errors,
        # This process's own CPU per request: what the load generator takes from the server.
        "client_cpu_us": round((time.process_time() - cpu) / max(1, len(samples)) * 1e6),
    }


if __name__ == "__main__":
    json.dump(asyncio.run(_run(json.load(sys.stdin))), sys.stdout)
