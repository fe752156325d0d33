"""``make up`` and ``make demo`` wait for the web server and the workers before they print the
addresses (deploy/run.py ``wait_ready``); a start that cannot finish says what is missing."""

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from deploy.run import Supervisor, wait_ready
from deploy.workers import WorkerPool


class _Ready(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def web() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def quiet_env(worker_env) -> dict[str, str]:
    """A broker database no other test's workers listen on: a ping there has no answer
    unless this test starts a worker."""
    broker = urlsplit(worker_env["REDIS_URL"])._replace(path="/9")
    return {**worker_env, "REDIS_URL": urlunsplit(broker)}


def test_a_child_that_exits_at_start_is_named(tmp_path: Path, web: str, quiet_env):
    supervisor = Supervisor(quiet_env, logs=tmp_path)
    supervisor.start("beat", [sys.executable, "-c", "raise SystemExit(3)"])
    supervisor.procs["beat"].wait()

    with pytest.raises(SystemExit, match="beat exited at start"):
        wait_ready(web, supervisor, timeout=10)


def test_a_web_server_that_never_answers_is_named(tmp_path: Path, quiet_env):
    supervisor = Supervisor(quiet_env, logs=tmp_path)

    with pytest.raises(SystemExit, match="the web server did not become ready within 1s"):
        wait_ready("http://127.0.0.1:9", supervisor, timeout=1)


def test_workers_that_never_answer_are_named(tmp_path: Path, web: str, quiet_env):
    supervisor = Supervisor(quiet_env, logs=tmp_path)

    with pytest.raises(SystemExit, match=r"the workers \(no answer to a ping\) did not become"):
        wait_ready(web, supervisor, timeout=3)


def test_ready_once_a_worker_answers(tmp_path: Path, web: str, quiet_env):
    pool = WorkerPool(quiet_env, log_dir=tmp_path)
    pool.start("default")
    try:
        wait_ready(web, Supervisor(quiet_env, logs=tmp_path), timeout=60)
    finally:
        pool.stop_all()
