"""The ledger rail's cost in figures that do not depend on the machine's speed.

Seconds move with the machine and with whoever else uses it; what one payout costs the
database does not. Two functions, each returning a JSON-able dict:

``engine_limits(winners=...)``
    Seeds a challenge of ``winners`` winners and settles its job (``payout_job_settle``: the
    terms and totals, no entry yet; no worker runs meanwhile), cuts its stakes into slices
    of ``batch_size`` as the engine does (``slice_starts``), then:

    - **work per payout**: ``explain_batches`` slices of the engine's own statement, which
      creates a slice's entries paid (``payouts.services.engine.ledger_slice_statement``),
      one at a time on one backend, each under ``EXPLAIN (ANALYZE, WAL, BUFFERS)``: rows
      written and whether their updates were heap-only (``pg_stat_xact_user_tables``, read
      inside the slice's transaction), index entries written (rows that are not heap-only
      updates times the indexes of their table whose predicate holds for the row), WAL
      records, full-page images and WAL bytes (from EXPLAIN's WAL counters), WAL bytes
      without the full-page images, by kind and by table and index (``pg_waldump`` of the
      slice's own transaction, when the server's WAL files are readable from here: every
      record counted to the table or index of its first block, which says where each byte of
      a payout goes), execution time and the backend's CPU time (``/proc/<pid>/stat`` of
      the backend, when the server runs on this host). Medians, with min and max; the first
      slice starts right after a ``CHECKPOINT``;
    - **the database's own limits**, each timed from a ``CHECKPOINT``, with no Celery:
      (a) ``statement``: the engine's slice statement, bare (no job counters, no escrow
      debit), on ``connections`` connections in parallel, as the engine's parallel chains
      run it, over half of the other slices; (b) ``posting``: a minimal two-row posting
      (transfer insert + wallet credit, ``ON CONFLICT`` on the same key; no entry written, no
      job tracking) over the entries of the other half, created pending beforehand (not
      timed), in id ranges, on as many connections. Each reports payouts/s and how busy the
      backends kept the machine's cores.

    Afterwards the job is closed the way the engine closes it (escrow debited by what was paid,
    counters, ``payout_job_finalize``: fee posted, escrow 0), so the ledger stays balanced and
    every entry has exactly one transfer ``payout:<entry_id>``.

``engine_cost(report, limits=None)``
    Per-payout figures of one end-to-end run (``proof.payout_bench.payout_benchmark``):
    microseconds and WAL bytes and rows per payout, and with ``limits`` the engine's payouts/s
    as a share of each limit. ``manage.py bench`` gives it at every size of its scale (100,000,
    1,000,000 and 3,000,000 winners), to show whether the cost per payout stays flat.
"""

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Min

from payouts.models import PayoutEntry, PayoutJob
from payouts.services.engine import (
    escrow_debit,
    ledger_slice_statement,
    payout_job_finalize,
    payout_job_settle,
)
from payouts.services.jobs import challenge_resolve
from payouts.services.settlement import (
    SettlementTerms,
    payout_entries_insert,
    slice_starts,
)
from proof.cpu import process_cpu
from proof.figures import summarize
from proof.payout_bench import (
    LOSER_RATIO,
    PayoutBenchReport,
    database_settle,
)
from proof.seeding import challenge_seed

# The tables one ledger slice writes.
SLICE_TABLES = ("payouts_payoutentry", "payouts_transfer", "payouts_account")

# (b) The least a ledger payout can write: its transfer and its wallet credit. Entries, created
# beforehand, are read by id range (no lock, no status), and nothing is marked or counted.
POSTING_SQL = """
WITH targets AS (
    SELECT e.id, e.amount, w.id AS wallet_id
    FROM payouts_payoutentry AS e
    JOIN payouts_account AS w
      ON w.user_id = e.user_id AND w.kind = 'user_wallet' AND w.currency = %(currency)s
    WHERE e.job_id = %(job_id)s AND e.id > %(after_id)s AND e.id <= %(upto)s
), posted AS (
    INSERT INTO payouts_transfer
        (debit_account_id, credit_account_id, amount, kind, idempotency_key)
    SELECT %(escrow_id)s, wallet_id, amount, %(kind)s, 'payout:' || id FROM targets
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING credit_account_id, amount
)
UPDATE payouts_account AS a SET balance = a.balance + p.amount
FROM posted AS p
WHERE a.id = p.credit_account_id
"""

# Rows that are not heap-only updates write one entry in each index whose predicate holds:
# a completed entry and a transfer match no partial index of theirs.
_INDEXES_SQL = """
SELECT c.relname, count(*) FILTER (WHERE i.indpred IS NULL)
FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indrelid
WHERE c.relname = ANY(%s)
GROUP BY c.relname
"""

_XACT_ROWS_SQL = """
SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd
FROM pg_stat_xact_user_tables WHERE relname = ANY(%s)
"""


def engine_limits(
    *,
    winners: int = 100_000,
    batch_size: int = 10_000,
    connections: int = 2,
    explain_batches: int = 5,
    seed: int = 21,
) -> dict[str, Any]:
    """Work per payout of the engine's slice, and the database's two limits, in one run.

    Seeds its own challenge of ``winners`` winners (plus a tenth as many losers); needs
    ``winners >= 2 * explain_batches * batch_size`` or so for the limits to time more than a
    few slices. Leaves the ledger balanced and the job completed. See the module docstring.
    """
    job, terms = settled_job_seed(winners=winners, seed=seed)
    starts = slice_starts(terms=terms, from_stake_id=terms.first_stake_id or 0, size=batch_size)
    statement = _SliceStatement(job=job, terms=terms, size=batch_size)
    database_settle()
    work = slice_work(statement=statement, starts=starts[:explain_batches])
    rest = starts[explain_batches:]
    half = (len(rest) + 1) // 2

    _checkpoint()
    slices = _Shared(rest[:half])
    timed = _parallel(connections, lambda conn, claim: _slices_run(conn, statement, slices, claim))
    # The posting pays entries: the other half's are created pending first, as a paused job's.
    for start in rest[half:]:
        with transaction.atomic():
            payout_entries_insert(job_id=job.pk, terms=terms, from_stake_id=start, limit=batch_size)
    database_settle()
    pending = PayoutEntry.objects.filter(job=job, status=PayoutEntry.Status.PENDING)
    first_pending = pending.aggregate(first=Min("id"))["first"]
    ranges = (
        _id_ranges(job.pk, after_id=first_pending - 1, size=batch_size) if first_pending else ()
    )
    params = statement.posting_params()
    posting = _parallel(
        connections, lambda conn, claim: _posting_ranges(conn, params, ranges, claim)
    )
    _job_close(job_id=job.pk, escrow_id=params["escrow_id"])
    return {
        "winners": winners,
        "batch_size": batch_size,
        "connections": connections,
        "work_per_payout": work,
        "limits": {"statement": timed, "posting": posting},
        "limits_how": "each timed from a CHECKPOINT on its own half of the job's slices, with "
        "no Celery: statement = the engine's slice statement (entries created paid) and "
        "commit on each connection, slices handed to whichever connection asks next; posting = "
        "transfer insert + wallet credit per id range of entries created beforehand; "
        "cores_busy = the backends' CPU time / wall time / cores",
    }


def engine_cost(report: PayoutBenchReport, limits: dict[str, Any] | None = None) -> dict[str, Any]:
    """The per-payout figures of one end-to-end run of the ledger rail; with ``limits`` (from
    ``engine_limits`` in the same run) the engine's payouts/s as a share of each limit."""
    paid = report.winners or 1
    figures: dict[str, Any] = {
        "winners": report.winners,
        "payouts_per_s": report.payouts_per_second,
        "us_per_payout": round(report.end_to_end_seconds / paid * 1e6, 2),
        "wal_bytes_per_payout": round(report.wal_bytes_written / paid),
        "rows_per_payout": round(report.rows_written / paid, 2),
    }
    if limits:
        figures["share_of_limit"] = {
            name: round(report.payouts_per_second / limit["payouts_per_s"], 3)
            for name, limit in limits["limits"].items()
            if limit["payouts_per_s"]
        }
    return figures


def settled_job_seed(*, winners: int, seed: int) -> tuple[PayoutJob, SettlementTerms]:
    """A resolved ledger-rail job, settled (terms, totals, ``running``) with no entry yet: the
    work these measurements do by hand. Its expansion task, sent by the resolve, finds no
    worker here (the bench purges the queues before each phase)."""
    challenge = challenge_seed(
        stakers=winners + winners // LOSER_RATIO,
        yes_share=winners / (winners + winners // LOSER_RATIO),
        seed=seed,
    )
    job = challenge_resolve(challenge_id=challenge.pk, result="challenger_won", actor=None)
    with transaction.atomic(durable=True):
        terms = payout_job_settle(PayoutJob.objects.select_for_update().get(pk=job.pk))
    job.refresh_from_db()
    return job, terms


class _SliceStatement:
    """The engine's slice statement for one job, run bare: as many of them as asked."""

    def __init__(self, *, job: PayoutJob, terms: SettlementTerms, size: int) -> None:
        self.job, self.terms, self.size = job, terms, size
        self.escrow_id = job.challenge.escrow_id

    def at(self, start: int) -> tuple[str, dict[str, Any]]:
        return ledger_slice_statement(
            job_id=self.job.pk,
            terms=self.terms,
            from_stake_id=start,
            limit=self.size,
            kind=self.job.kind,
            escrow_id=self.escrow_id,
        )

    def posting_params(self) -> dict[str, Any]:
        return {
            "job_id": self.job.pk,
            "currency": settings.CURRENCY,
            "escrow_id": self.escrow_id,
            "kind": self.job.kind,
        }


def slice_work(*, statement: _SliceStatement, starts: list[int]) -> dict[str, Any]:
    """Run the slices from ``starts`` one after the other under EXPLAIN ANALYZE on one backend
    and return the medians (with min and max) of what each payout cost."""
    samples = []
    with _connect() as conn:
        indexes = dict(conn.execute(_INDEXES_SQL, [list(SLICE_TABLES)]).fetchall())
        conn.execute("CHECKPOINT")
        conn.commit()
        for start in starts:
            sample = _explained_slice(conn, *statement.at(start))
            if sample["payouts"]:
                samples.append(_per_payout(sample, indexes))
    figures = {
        key: summarize([s[key] for s in samples if s.get(key) is not None])
        for key in samples[0]
        if key != "payouts"
    }
    return {
        "slices": len(samples),
        "payouts_per_slice": samples[0]["payouts"],
        "how": "EXPLAIN (ANALYZE, WAL, BUFFERS) of one engine slice at a time on one backend "
        "(its entries created paid: entry, transfer and wallet credit), the first right "
        "after a CHECKPOINT; rows from pg_stat_xact_user_tables; index entries = rows not "
        "heap-only x full indexes of the table; wal_records, wal_fpi, wal_bytes: EXPLAIN's "
        "(the statement); wal_bytes_transaction, its split into full-page images and the "
        "rest, and the by_kind and by_relation figures: pg_waldump of the slice's "
        "transaction (with its commit), each record counted to the table or index of its "
        "first block; backend_cpu_us: /proc/<backend pid>/stat over the statement",
        **figures,
    }


def _explained_slice(conn: psycopg.Connection, sql: str, params: dict[str, Any]) -> dict[str, Any]:
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    start_lsn = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
    rows_before = conn.execute(_XACT_ROWS_SQL, [list(SLICE_TABLES)]).fetchall()
    cpu_before = process_cpu(pid)
    plan = conn.execute(
        "EXPLAIN (ANALYZE, WAL, BUFFERS, TIMING OFF, FORMAT JSON) " + sql, params
    ).fetchone()[0][0]
    cpu_after = process_cpu(pid)
    xid = conn.execute("SELECT pg_current_xact_id_if_assigned()").fetchone()[0]
    # Counts not yet flushed to the shared statistics stay in these views after a commit:
    # the slice's own are the difference.
    before = {name: counts for name, *counts in rows_before}
    rows = {
        name: tuple(c - b for c, b in zip(counts, before.get(name, (0, 0, 0)), strict=True))
        for name, *counts in conn.execute(_XACT_ROWS_SQL, [list(SLICE_TABLES)]).fetchall()
    }
    conn.commit()
    end_lsn = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
    conn.commit()
    top = plan["Plan"]
    return {
        # Each payout is one transfer inserted.
        "payouts": rows.get("payouts_transfer", (0, 0, 0))[0],
        "rows": rows,
        # The top node's counters cover the whole statement, its data-modifying CTEs included.
        "wal_records": top["WAL Records"],
        "wal_fpi": top["WAL FPI"],
        "wal_bytes": top["WAL Bytes"],
        "shared_hit": top.get("Shared Hit Blocks", 0),
        "execution_ms": plan["Execution Time"],
        "cpu_seconds": None if cpu_before is None else cpu_after - cpu_before,
        "waldump": _waldump(conn, start_lsn, end_lsn, xid) if xid else None,
    }


def _per_payout(sample: dict[str, Any], indexes: dict[str, int]) -> dict:
    n = sample["payouts"]
    written = sum(ins + upd for ins, upd, _ in sample["rows"].values())
    heap_only = sum(hot for _, _, hot in sample["rows"].values())
    index_entries = sum(
        (ins + upd - hot) * indexes.get(name, 0) for name, (ins, upd, hot) in sample["rows"].items()
    )
    dump = sample["waldump"]
    figures = {
        "payouts": n,
        "rows_written": written / n,
        "heap_only_updates": heap_only / n,
        "index_entries": index_entries / n,
        "wal_records": sample["wal_records"] / n,
        "wal_fpi": sample["wal_fpi"] / n,
        "wal_bytes": sample["wal_bytes"] / n,
        "wal_bytes_transaction": dump["total"] / n if dump else None,
        "wal_bytes_without_fpi": (dump["total"] - dump["fpi"]) / n if dump else None,
        "wal_fpi_bytes": dump["fpi"] / n if dump else None,
        "execution_us": sample["execution_ms"] * 1000 / n,
        "backend_cpu_us": sample["cpu_seconds"] * 1e6 / n
        if sample["cpu_seconds"] is not None
        else None,
    }
    figures["rows_by_table"] = {
        name: {"inserted": ins / n, "updated": upd / n, "heap_only": hot / n}
        for name, (ins, upd, hot) in sample["rows"].items()
    }
    if dump:
        figures["wal_records_by_kind"] = {k: v["records"] / n for k, v in dump["kinds"].items()}
        figures["wal_bytes_by_kind"] = {
            k: (v["bytes"] + v["fpi_bytes"]) / n for k, v in dump["kinds"].items()
        }
        figures["wal_bytes_by_relation"] = {k: v / n for k, v in dump["relations"].items()}
    return figures


# One record of ``pg_waldump``'s listing: its resource manager, its length without and with
# its full-page images, its transaction, what it is, and the relation of its first block.
_WALDUMP_RECORD = re.compile(
    r"^rmgr: (?P<rmgr>\S+)\s+len \(rec/tot\):\s*(?P<rec>\d+)/\s*(?P<tot>\d+), "
    r"tx:\s*(?P<xid>\d+), .*?desc: (?P<what>\S+)"
    r"(?:.*?blkref #0: rel \d+/\d+/(?P<relfilenode>\d+))?"
)


def _waldump(
    conn: psycopg.Connection, start: str, end: str, xid: int | None = None
) -> dict[str, Any] | None:
    """What the WAL between two positions holds (one transaction's when ``xid`` is given), by
    the server's own ``pg_waldump``: bytes in all and of full-page images, records and bytes
    by kind (as ``pg_waldump --stats=record`` names them), and bytes by the table or index
    each record's first block belongs to (a commit, which names no block, by its resource
    manager). None when the server's binaries or WAL files are not readable from here."""
    try:
        bindir = conn.execute("SELECT setting FROM pg_config WHERE name = 'BINDIR'").fetchone()[0]
        datadir = conn.execute("SHOW data_directory").fetchone()[0]
        names = dict(
            conn.execute(
                "SELECT pg_relation_filenode(oid)::text, relname FROM pg_class "
                "WHERE pg_relation_filenode(oid) IS NOT NULL"
            ).fetchall()
        )
        conn.commit()
    except psycopg.Error:
        conn.rollback()
        return None
    waldump = shutil.which("pg_waldump", path=bindir)
    wal_dir = os.path.join(datadir, "pg_wal")
    if not waldump or not os.access(wal_dir, os.R_OK):
        return None
    argv = [waldump, f"--path={wal_dir}", f"--start={start}", f"--end={end}"]
    kinds: dict[str, dict[str, int]] = {}
    relations: dict[str, int] = {}
    # Streamed: an expansion of half a million entries lists a few million records.
    with subprocess.Popen(
        [*argv, f"--xid={xid}"] if xid else argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as dump:
        for line in dump.stdout or ():
            match = _WALDUMP_RECORD.match(line)
            if not match:
                continue
            rec, tot = int(match["rec"]), int(match["tot"])
            kind = kinds.setdefault(
                f"{match['rmgr']}/{match['what']}", {"records": 0, "bytes": 0, "fpi_bytes": 0}
            )
            kind["records"] += 1
            kind["bytes"] += rec
            kind["fpi_bytes"] += tot - rec
            node = match["relfilenode"]
            relation = names.get(node, node) if node else match["rmgr"]
            relations[relation] = relations.get(relation, 0) + tot
    # A listing cut short (WAL recycled, a range it could not read) would undercount.
    if dump.returncode or not kinds:
        return None
    return {
        "total": sum(k["bytes"] + k["fpi_bytes"] for k in kinds.values()),
        "fpi": sum(k["fpi_bytes"] for k in kinds.values()),
        "kinds": kinds,
        "relations": relations,
    }


def _connect() -> psycopg.Connection:
    """A plain connection to the project's database, as Django would open it."""
    return psycopg.connect(**connection.get_connection_params())


def _checkpoint() -> None:
    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")


Claim = Callable[[int], None]
T = TypeVar("T")


def _parallel(count: int, run: Callable[[psycopg.Connection, Claim], None]) -> dict[str, Any]:
    """Run ``run`` on ``count`` connections at once; payouts/s over the wall time, and the
    share of the machine's cores the backends kept busy."""
    conns = [_connect() for _ in range(count)]
    pids = [c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in conns]
    for c in conns:
        c.commit()
    paid = [0]
    lock = threading.Lock()

    def claim(n: int) -> None:
        with lock:
            paid[0] += n

    cpu_before = [process_cpu(pid) for pid in pids]
    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(c, claim)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    cpu_after = [process_cpu(pid) for pid in pids]
    for c in conns:
        c.close()
    cpu = (
        sum(a - b for a, b in zip(cpu_after, cpu_before, strict=True))
        if None not in cpu_before and None not in cpu_after
        else None
    )
    return {
        "payouts": paid[0],
        "seconds": round(seconds, 3),
        "payouts_per_s": round(paid[0] / seconds) if seconds else 0,
        "backend_cpu_us_per_payout": round(cpu * 1e6 / paid[0], 2) if cpu and paid[0] else None,
        "cores_busy": round(cpu / seconds / (os.cpu_count() or 1), 3) if cpu else None,
    }


class _Shared(Generic[T]):
    """``items`` handed out to whichever thread asks next."""

    def __init__(self, items: Iterable[T]) -> None:
        self._items = iter(items)
        self._lock = threading.Lock()

    def __iter__(self) -> "_Shared[T]":
        return self

    def __next__(self) -> T:
        with self._lock:
            return next(self._items)


def _slices_run(
    conn: psycopg.Connection, statement: _SliceStatement, starts: Iterable[int], claim: Claim
) -> None:
    """Slices, each its statement and commit, as the engine's chains run them."""
    for start in starts:
        created = conn.execute(*statement.at(start)).fetchone()[2]
        conn.commit()
        claim(created)


def _id_ranges(job_id: int, *, after_id: int, size: int) -> Iterable[tuple[int, int]]:
    """The job's entries after ``after_id`` in ranges of ``size`` entries, as (after, upto),
    handed out to whichever connection asks next."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) AS n "
            "FROM payouts_payoutentry WHERE job_id = %s AND id > %s) AS e "
            "WHERE n %% %s = 0 OR id = (SELECT max(id) FROM payouts_payoutentry WHERE job_id = %s)"
            " ORDER BY id",
            [job_id, after_id, size, job_id],
        )
        bounds = [row[0] for row in cursor.fetchall()]
    return _Shared(zip([after_id, *bounds], bounds, strict=False))


def _posting_ranges(
    conn: psycopg.Connection,
    params: dict[str, Any],
    ranges: Iterable[tuple[int, int]],
    claim: Claim,
) -> None:
    for after_id, upto in ranges:
        with conn.cursor() as cursor:
            cursor.execute(POSTING_SQL, {**params, "after_id": after_id, "upto": upto})
            posted = cursor.rowcount
        conn.commit()
        claim(posted)


def _job_close(*, job_id: int, escrow_id: int) -> None:
    """Book what the bare runs paid the way a batch books it (entries completed, job counters,
    escrow debited), then finalize the job as the engine does: fee posted, escrow checked 0."""
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE payouts_payoutentry AS e SET status = 'completed', completed_at = now() "
            "FROM payouts_transfer AS t "
            "WHERE e.job_id = %s AND e.status = 'pending' "
            "AND t.idempotency_key = 'payout:' || e.id",
            [job_id],
        )
        cursor.execute(
            "SELECT count(*), coalesce(sum(amount), 0) FROM payouts_payoutentry "
            "WHERE job_id = %s AND status = 'completed'",
            [job_id],
        )
        completed, paid = cursor.fetchone()
        escrow_debit(escrow_id=escrow_id, amount=paid)
        PayoutJob.objects.filter(pk=job_id).update(
            completed_count=completed, paid_amount=paid, status=PayoutJob.Status.RUNNING
        )
    payout_job_finalize(job_id=job_id)
