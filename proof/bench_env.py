"""What makes one ``make bench`` comparable with another: the same starting state for every
measured phase, the machine written down next to the figures, and repeated runs summed up as
median, min and max.

Every phase runs in a database of its own, copied from a freshly migrated template and dropped
afterwards, so no phase pays for what an earlier phase (or an earlier run) left behind: a second
run against the first one's leftovers measured a different database, and the embedded server's
folder grew by gigabytes a run.
"""

import contextlib
import os
import platform
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psutil
from django.core.management import call_command
from django.db import connection, connections

from config.celery import app as celery_app

T = TypeVar("T")

# The PostgreSQL settings that move the figures: durability, WAL volume, memory, checkpoints.
PG_SETTINGS = (
    "server_version",
    "shared_buffers",
    "work_mem",
    "maintenance_work_mem",
    "effective_io_concurrency",
    "synchronous_commit",
    "fsync",
    "full_page_writes",
    "wal_compression",
    "wal_level",
    "wal_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "max_connections",
    "max_parallel_workers_per_gather",
    "autovacuum",
)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _url_with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


class BenchDatabases:
    """Fresh databases on the server ``DATABASE_URL`` names, one per measured phase.

    ``with BenchDatabases(prefix) as dbs:`` migrates a template once; ``with dbs.fresh("x"):``
    then points this process (and, through ``DATABASE_URL``, every worker started inside the
    block) at a new copy of it, and drops the copy afterwards. ``dbs.fresh("x", seed=f)`` runs
    ``f`` in the new database the first time and keeps a copy of what it wrote: later runs of
    phase ``x`` start from that copy (a file copy takes seconds where seeding three million
    stakers takes minutes) and get ``f``'s return value again, ids included. The templates are
    dropped on exit.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.template = f"{prefix}_template"
        self._home_name = connection.settings_dict["NAME"]
        self._home_url = os.environ.get("DATABASE_URL", "")
        self._seeded: dict[str, tuple[str, Any]] = {}

    def _admin(self, sql: str) -> None:
        """Run one statement from the database this process started on (CREATE and DROP
        DATABASE cannot run inside a transaction, nor against the database they touch)."""
        self._point(self._home_name, self._home_url)
        with connection.cursor() as cursor:
            cursor.execute(sql)

    def _point(self, name: str, url: str) -> None:
        connections.close_all()
        connection.settings_dict["NAME"] = name
        if url:
            os.environ["DATABASE_URL"] = url

    def _drop(self, name: str) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)")

    def __enter__(self) -> "BenchDatabases":
        self._drop(self.template)
        self._admin(f"CREATE DATABASE {_quoted(self.template)}")
        self._point(self.template, _url_with_database(self._home_url, self.template))
        call_command("migrate", "--noinput", verbosity=0)
        connections.close_all()  # a template must have no sessions to be copied
        self._point(self._home_name, self._home_url)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, _ in self._seeded.values():
            self._drop(name)
        self._drop(self.template)

    def _copy(self, *, source: str, name: str) -> None:
        # FILE_COPY: one checkpoint and a copy of the files, not every page through the WAL.
        self._drop(name)
        self._admin(
            f"CREATE DATABASE {_quoted(name)} TEMPLATE {_quoted(source)} STRATEGY FILE_COPY"
        )

    @contextlib.contextmanager
    def fresh(self, phase: str, seed: Callable[[], T] | None = None) -> Iterator[T | None]:
        """A new database for ``phase``, with ``seed``'s data in it; yields ``seed``'s value.
        ``seed`` must leave the database settled (vacuumed and checkpointed)."""
        name = f"{self.prefix}_{phase}"
        url = _url_with_database(self._home_url, name)
        kept = self._seeded.get(phase)
        self._copy(source=kept[0] if kept else self.template, name=name)
        self._point(name, url)
        # Messages a crashed earlier run left behind would name rows this database lacks.
        celery_app.control.purge()
        try:
            data = kept[1] if kept else None
            if seed is not None and kept is None:
                data = seed()
                self._copy(source=name, name=f"{name}_seeded")
                self._seeded[phase] = (f"{name}_seeded", data)
                self._point(name, url)
            yield data
        finally:
            self._drop(name)


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_report() -> dict[str, Any]:
    """The machine and the database server the figures were measured on."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)", [list(PG_SETTINGS)]
        )
        pg = {name: f"{setting}{f' ({unit})' if unit else ''}" for name, setting, unit in cursor}
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "postgresql": pg,
    }


def load_now() -> dict[str, float]:
    """How busy the machine was when a run started: other work on shared cores moves figures."""
    one, five, _ = os.getloadavg()
    return {"load_1m": round(one, 2), "load_5m": round(five, 2)}
