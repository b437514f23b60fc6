"""Store benchmarks: replikv next to the physical floor and sqlite3, measured in one run.

Run it from the repository with the package installed (``replikv`` importable)::

    python benches/bench_store.py            # every scenario, about 20-40 s on 2 cores
    python benches/bench_store.py --quick    # a fast smoke run with small counts
    python benches/bench_store.py --only get --dir /some/disk

Every figure is measured in this run, on the same disk (a temporary directory under
``--dir``), and every ratio compares two figures of the same run: fsync-bound figures move
by about +-20% between runs on a virtual disk, ratios much less. The targets come from
issue 2 ("Speed"); this script reports PASS/MISS, it never fails on a timing.

Scenarios:
  put       single durable put from one thread vs a bare 200-byte append + fdatasync
            (the floor) and vs sqlite3 (WAL, synchronous=FULL, one commit per row)
  threads   16 Python threads doing durable puts vs one thread (group commit);
            sqlite3 with 16 threads for context
  get       get of an existing key (dict value) vs sqlite3 SELECT by primary key + json.loads
  put_many  100k rows in one durable transaction vs sqlite3 executemany in one transaction
            (json.dumps included)
  reopen    open time of a store of N keys after its writer was killed with SIGKILL
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import queue
import random
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import replikv
from replikv._measure import filesystem_of, machine_load, timed

SCENARIOS = ("put", "threads", "get", "put_many", "reopen")
TABLE = "t"
FLOOR_RECORD_BYTES = 200
PUT_SLICE = 50
SQLITE_BUSY_TIMEOUT_S = 60.0
DEFAULT_CHECKPOINT_ENTRIES = 10_000
DEFAULT_CHECKPOINT_SECONDS = 5.0

Row = tuple[str, dict[str, Any]]


# --------------------------------------------------------------------------------------
# Configuration, data and results


@dataclass(frozen=True)
class Config:
    """Counts for one run; ``--quick`` shrinks them for a smoke run."""

    put_warmup: int = 100
    put_ops: int = 400
    put_reps: int = 7
    threads: int = 16
    thread_ops: int = 300
    single_thread_ops: int = 1000
    thread_reps: int = 5
    sqlite_thread_ops: int = 40
    sqlite_single_thread_ops: int = 300
    sqlite_thread_reps: int = 2
    get_keys: int = 10_000
    get_ops: int = 50_000
    get_reps: int = 5
    put_many_rows: int = 100_000
    put_many_reps: int = 3
    reopen_keys: int = 1_000_000
    reopen_batch: int = 100_000
    kill_after_s: float = 1.0
    checkpoint_entries: int = DEFAULT_CHECKPOINT_ENTRIES
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS


QUICK = Config(
    put_warmup=20,
    put_ops=200,
    put_reps=3,
    thread_ops=30,
    single_thread_ops=150,
    thread_reps=2,
    sqlite_thread_ops=10,
    sqlite_single_thread_ops=80,
    sqlite_thread_reps=1,
    get_ops=10_000,
    get_reps=3,
    put_many_rows=10_000,
    put_many_reps=2,
    reopen_keys=50_000,
    reopen_batch=100_000,
    kill_after_s=0.5,
)


def make_key(i: int, prefix: str = "k") -> str:
    """A 16-character key: ``prefix`` then ``i`` zero-padded."""
    return f"{prefix}{i:0{16 - len(prefix)}d}"


def make_value(i: int) -> dict[str, Any]:
    """A subscriber-like dict of about 100 bytes (as JSON; a bit less as MessagePack)."""
    return {
        "email": f"u{i:07d}@example.com",
        "name": f"User {i % 100_000}",
        "opted_in": i % 3 != 0,
        "score": i % 1000,
        "tags": ["news"],
    }


def make_rows(n: int, start: int = 0, prefix: str = "k") -> list[Row]:
    """``n`` rows of (16-byte key, ~100-byte dict)."""
    return [(make_key(i, prefix), make_value(i)) for i in range(start, start + n)]


@dataclass
class Verdict:
    """One line of the summary: replikv's figure, the alternative's, the ratio, the target."""

    scenario: str
    replikv: str
    other: str
    ratio: float
    ratio_text: str
    target_text: str
    passed: bool | None  # None: context only, no target

    @property
    def result(self) -> str:
        if self.passed is None:
            return "info"
        return "PASS" if self.passed else "MISS"


@dataclass
class Report:
    """Collects verdicts and notes while the scenarios run."""

    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, verdict: Verdict) -> None:
        self.verdicts.append(verdict)

    def compare(
        self,
        scenario: str,
        ours: float,
        theirs: float,
        unit: str,
        other: str,
        limit: float | None,
        *,
        kind: Literal["at_most", "faster", "higher"],
    ) -> None:
        """One ratio of two figures; ``limit=None`` reports it as context, with no target.

        ``kind`` says how the ratio reads and what the target is:
          at_most  costs: ``ours / theirs <= limit``, shown as "1.10x floor"
          faster   costs (lower is better): ``theirs / ours >= limit``, "2.00x faster"
          higher   throughputs (higher is better): ``ours / theirs >= limit``, "5.00x"
        """
        ratio = theirs / ours if kind == "faster" else ours / theirs
        digits = 0 if kind == "higher" else 1
        word = {"at_most": f" {other}", "faster": " faster", "higher": ""}[kind]
        if limit is None:
            target, passed = "context", None
        elif kind == "at_most":
            target, passed = f"<= {limit:g}x", ratio <= limit
        else:
            target, passed = f">= {limit:g}x{word}", ratio >= limit
        self.add(
            Verdict(
                scenario,
                f"{ours:,.{digits}f} {unit}",
                f"{theirs:,.{digits}f} {unit} ({other})",
                ratio,
                f"{ratio:.2f}x{word}",
                target,
                passed,
            )
        )

    def info(self, scenario: str, ours: str, other: str = "", target: str = "report") -> None:
        self.add(Verdict(scenario, ours, other, float("nan"), "", target, None))

    def print_summary(self, issue: str = "issue 2") -> None:
        headers = ("scenario", "replikv", "alternative", "ratio", "target", "result")
        rows = [
            (v.scenario, v.replikv, v.other, v.ratio_text, v.target_text, v.result)
            for v in self.verdicts
        ]
        widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
        line = "  ".join("-" * w for w in widths)
        print()
        print(f"Summary (ratios from this run; targets from {issue})")
        print(line)
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        print(line)
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        print(line)
        targets = [v for v in self.verdicts if v.passed is not None]
        passed = sum(1 for v in targets if v.passed)
        print(f"{passed}/{len(targets)} targets met")
        for note in self.notes:
            print(f"note: {note}")


# --------------------------------------------------------------------------------------
# Helpers


def section(title: str) -> None:
    print()
    print(f"== {title}", flush=True)


def show(label: str, text: str) -> None:
    print(f"  {label:<44} {text}", flush=True)


def fmt_runs(values: Sequence[float], unit: str, digits: int = 1) -> str:
    """Median, then every repetition, e.g. ``152.3 us/op (reps: 150.1 152.3 160.0)``."""
    reps = " ".join(f"{v:,.{digits}f}" for v in values)
    return f"{statistics.median(values):,.{digits}f} {unit} (reps: {reps})"


@contextmanager
def scratch(base: Path, name: str) -> Iterator[Path]:
    """A fresh directory under ``base``, removed afterwards whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def open_store(path: Path, **options: Any) -> replikv.Store:
    return replikv.Store(str(path), fsync=True, **options)


def open_sqlite(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A file database in WAL mode with ``synchronous=FULL`` (every commit fsyncs the WAL)."""
    conn = sqlite3.connect(
        str(path), timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=check_same_thread
    )
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        raise RuntimeError(f"sqlite3 refused WAL mode: {mode}")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
    conn.commit()
    return conn


SQL_PUT = f"INSERT OR REPLACE INTO {TABLE} (k, v) VALUES (?, ?)"
SQL_GET = f"SELECT v FROM {TABLE} WHERE k = ?"


# --------------------------------------------------------------------------------------
# 1. single durable put from one thread


def bench_put(base: Path, cfg: Config, report: Report) -> None:
    section("put: single durable put from one thread (16-byte key, ~100-byte dict)")
    total = cfg.put_warmup + cfg.put_ops * cfg.put_reps
    rows = make_rows(total)
    record = b"x" * (FLOOR_RECORD_BYTES - 1) + b"\n"
    slice_ops = max(1, min(cfg.put_ops, PUT_SLICE))
    with scratch(base, "put") as d:
        fd = os.open(d / "floor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        # the log's own technique: write into posix_fallocate'd space (no size change)
        pre_fd = os.open(d / "prealloc.log", os.O_WRONLY | os.O_CREAT, 0o644)
        pre_len = (total + 16) * FLOOR_RECORD_BYTES
        os.posix_fallocate(pre_fd, 0, pre_len)
        os.fsync(pre_fd)
        pre_offset = [0]
        store = open_store(d / "replikv")
        conn = open_sqlite(d / "sqlite.db")
        try:

            def floor(chunk: list[Row]) -> None:
                for _ in chunk:
                    os.write(fd, record)
                    os.fdatasync(fd)

            def prealloc(chunk: list[Row]) -> None:
                for _ in chunk:
                    os.pwrite(pre_fd, record, pre_offset[0])
                    os.fdatasync(pre_fd)
                    pre_offset[0] += FLOOR_RECORD_BYTES

            def ours(chunk: list[Row]) -> None:
                put = store.put
                for key, value in chunk:
                    put(TABLE, key, value)

            def sqlite(chunk: list[Row]) -> None:
                execute, commit = conn.execute, conn.commit
                for key, value in chunk:
                    execute(SQL_PUT, (key, json.dumps(value)))
                    commit()

            systems: list[tuple[str, Callable[[list[Row]], None]]] = [
                ("floor", floor),
                ("replikv", ours),
                ("sqlite3", sqlite),
                ("prealloc", prealloc),
            ]
            per_op: dict[str, list[float]] = {name: [] for name, _ in systems}
            warm = rows[: cfg.put_warmup]
            for _, run in systems:
                run(warm)
            for rep in range(cfg.put_reps):
                lo = cfg.put_warmup + rep * cfg.put_ops
                spent = dict.fromkeys(per_op, 0.0)
                # small slices, round-robin, rotating the order: the disk's slow and fast
                # moments fall on every system alike
                for j, at in enumerate(range(lo, lo + cfg.put_ops, slice_ops)):
                    chunk = rows[at : min(at + slice_ops, lo + cfg.put_ops)]
                    for k in range(len(systems)):
                        name, run = systems[(rep + j + k) % len(systems)]
                        spent[name] += timed(functools.partial(run, chunk))
                for name, seconds in spent.items():
                    per_op[name].append(seconds / cfg.put_ops * 1e6)
            if store.get(TABLE, rows[-1][0]) != rows[-1][1]:
                raise AssertionError("replikv lost a put")
        finally:
            os.close(fd)
            os.close(pre_fd)
            store.close()
            conn.close()
    show(
        f"floor: {FLOOR_RECORD_BYTES} B os.write append + fdatasync",
        fmt_runs(per_op["floor"], "us/op"),
    )
    show("replikv Store.put (fsync=True)", fmt_runs(per_op["replikv"], "us/op"))
    show("sqlite3 INSERT OR REPLACE + commit (WAL, FULL)", fmt_runs(per_op["sqlite3"], "us/op"))
    show(
        f"context: {FLOOR_RECORD_BYTES} B pwrite into fallocated file + fdatasync",
        fmt_runs(per_op["prealloc"], "us/op"),
    )
    print(
        f"  ({cfg.put_reps} reps of {cfg.put_ops} puts per system, interleaved in slices of "
        f"{slice_ops}, after {cfg.put_warmup} warm-up puts; medians over reps)"
    )
    med = {name: statistics.median(v) for name, v in per_op.items()}
    report.compare(
        "put vs floor", med["replikv"], med["floor"], "us/op", "floor", 1.5, kind="at_most"
    )
    report.compare(
        "put vs sqlite3", med["replikv"], med["sqlite3"], "us/op", "sqlite3", 1.3, kind="faster"
    )
    report.compare(
        "put vs fallocated write",
        med["replikv"],
        med["prealloc"],
        "us/op",
        "pwrite",
        None,
        kind="at_most",
    )


# --------------------------------------------------------------------------------------
# 2. 16 threads doing durable puts


def run_threads(
    worker: Callable[[int, list[Row]], int], work: list[list[Row]], deadline_s: float
) -> tuple[float, int]:
    """Runs ``worker(i, work[i])`` in ``len(work)`` threads started together.

    Returns (elapsed seconds, operations done). Exceptions in a worker are re-raised.
    """
    barrier = threading.Barrier(len(work) + 1)
    done = [0] * len(work)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait()
            done[i] = worker(i, work[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(len(work))]
    for t in threads:
        t.start()
    gc.collect()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join(deadline_s)
    elapsed = time.perf_counter() - start
    if any(t.is_alive() for t in threads):
        raise RuntimeError(f"threads still running after {deadline_s:.0f} s")
    if errors:
        raise errors[0]
    return elapsed, sum(done)


def put_worker(store: replikv.Store) -> Callable[[int, list[Row]], int]:
    """A ``run_threads`` worker that puts its rows into ``store``, one put per row."""

    def put_rows(_i: int, rows: list[Row]) -> int:
        put = store.put
        for key, value in rows:
            put(TABLE, key, value)
        return len(rows)

    return put_rows


def bench_threads(base: Path, cfg: Config, report: Report) -> None:
    n = cfg.threads
    section(f"threads: durable puts from {n} Python threads vs one thread (group commit)")
    counter = iter(range(10**9))

    def work_for(threads: int, ops: int) -> list[list[Row]]:
        """Each thread its own keys: prefix ``t<run>-<thread>``, never reused."""
        run_id = next(counter)
        return [make_rows(ops, prefix=f"r{run_id:03d}{i:02d}-") for i in range(threads)]

    with scratch(base, "threads") as d:
        store = open_store(d / "replikv")
        try:
            put_rows = put_worker(store)
            # warm-up: both shapes once
            run_threads(put_rows, work_for(1, 50), 60)
            run_threads(put_rows, work_for(n, 10), 60)
            one: list[float] = []
            many: list[float] = []
            for rep in range(cfg.thread_reps):
                shapes = [(1, cfg.single_thread_ops, one), (n, cfg.thread_ops, many)]
                for threads, ops, out in shapes if rep % 2 == 0 else shapes[::-1]:
                    work = work_for(threads, ops)
                    elapsed, done = run_threads(put_rows, work, 120)
                    out.append(done / elapsed)
            lsn = store.last_lsn
        finally:
            store.close()

        # context: the same work without fsync is the CPU ceiling of this machine
        scratch_store = replikv.Store(str(d / "nofsync"), fsync=False)
        try:
            put_scratch = put_worker(scratch_store)
            run_threads(put_scratch, work_for(n, 10), 60)
            cpu_one: list[float] = []
            cpu_many: list[float] = []
            for threads, ops, out in [
                (1, cfg.single_thread_ops, cpu_one),
                (n, cfg.thread_ops, cpu_many),
            ]:
                elapsed, done = run_threads(put_scratch, work_for(threads, ops), 120)
                out.append(done / elapsed)
        finally:
            scratch_store.close()

        conn_lock = threading.Lock()
        locked_retries = [0]
        conns: list[sqlite3.Connection] = []
        try:
            sq_one: list[float] = []
            sq_many: list[float] = []
            open_sqlite(d / "sqlite.db").close()
            for _ in range(n):
                conns.append(open_sqlite(d / "sqlite.db", check_same_thread=False))

            def sqlite_rows(i: int, rows: list[Row]) -> int:
                conn = conns[i]
                for key, value in rows:
                    while True:
                        try:
                            conn.execute(SQL_PUT, (key, json.dumps(value)))
                            conn.commit()
                            break
                        except sqlite3.OperationalError as exc:
                            # the busy timeout should absorb this; count it if it does not
                            if "locked" not in str(exc):
                                raise
                            conn.rollback()
                            with conn_lock:
                                locked_retries[0] += 1
                return len(rows)

            run_threads(sqlite_rows, work_for(n, 3), 60)
            for rep in range(cfg.sqlite_thread_reps):
                shapes = [
                    (1, cfg.sqlite_single_thread_ops, sq_one),
                    (n, cfg.sqlite_thread_ops, sq_many),
                ]
                for threads, ops, out in shapes if rep % 2 == 0 else shapes[::-1]:
                    elapsed, done = run_threads(sqlite_rows, work_for(threads, ops), 120)
                    out.append(done / elapsed)
        finally:
            for conn in conns:
                conn.close()

    show("replikv, 1 thread", fmt_runs(one, "puts/s", 0))
    show(f"replikv, {n} threads (one Store)", fmt_runs(many, "puts/s", 0))
    show("context: replikv fsync=False, 1 thread", fmt_runs(cpu_one, "puts/s", 0))
    show(f"context: replikv fsync=False, {n} threads", fmt_runs(cpu_many, "puts/s", 0))
    show("sqlite3, 1 thread", fmt_runs(sq_one, "commits/s", 0))
    show(f"sqlite3, {n} threads (one connection each)", fmt_runs(sq_many, "commits/s", 0))
    print(
        f"  (replikv: {cfg.thread_reps} reps, {n} x {cfg.thread_ops} vs 1 x "
        f"{cfg.single_thread_ops} puts; last LSN {lsn}; sqlite3: busy timeout "
        f"{SQLITE_BUSY_TIMEOUT_S:g} s, 'database is locked' retries: {locked_retries[0]})"
    )
    m_one, m_many = statistics.median(one), statistics.median(many)
    s_one, s_many = statistics.median(sq_one), statistics.median(sq_many)
    cpu_many_median = statistics.median(cpu_many)
    for scenario, ours, theirs, unit, other, limit in [
        (f"{n} threads vs 1 (replikv)", m_many, m_one, "puts/s", "1 thread", 5.0),
        (f"{n} thr fsync=False vs 1 durable", cpu_many_median, m_one, "puts/s", "1 thread", None),
        (f"{n} threads vs 1 (sqlite3)", s_many, s_one, "commits/s", "1 thread", None),
        (f"{n} threads: replikv vs sqlite3", m_many, s_many, "puts/s", "sqlite3", None),
    ]:
        report.compare(scenario, ours, theirs, unit, other, limit, kind="higher")


# --------------------------------------------------------------------------------------
# 3. get of an existing key


def bench_get(base: Path, cfg: Config, report: Report) -> None:
    section(f"get: existing key with a dict value, random order over {cfg.get_keys:,} keys")
    rows = make_rows(cfg.get_keys)
    rng = random.Random(42)
    order = [rows[rng.randrange(len(rows))][0] for _ in range(cfg.get_ops)]
    with scratch(base, "get") as d:
        store = open_store(d / "replikv")
        conn = open_sqlite(d / "sqlite.db")
        try:
            store.put_many(TABLE, rows)
            with conn:
                conn.executemany(SQL_PUT, [(k, json.dumps(v)) for k, v in rows])

            def ours() -> None:
                get = store.get
                for key in order:
                    get(TABLE, key)

            def sqlite() -> None:
                execute, loads = conn.execute, json.loads
                for key in order:
                    loads(execute(SQL_GET, (key,)).fetchone()[0])

            # same answers on both sides, checked outside the timing
            for key, value in rows[:: max(1, len(rows) // 100)]:
                theirs = json.loads(conn.execute(SQL_GET, (key,)).fetchone()[0])
                if not (store.get(TABLE, key) == value == theirs):
                    raise AssertionError(f"different values for {key!r}")
            ours()
            sqlite()
            us: dict[str, list[float]] = {"replikv": [], "sqlite3": []}
            for rep in range(cfg.get_reps):
                pairs = [("replikv", ours), ("sqlite3", sqlite)]
                for name, run in pairs if rep % 2 == 0 else pairs[::-1]:
                    us[name].append(timed(run) / len(order) * 1e6)
        finally:
            store.close()
            conn.close()
    show("replikv Store.get", fmt_runs(us["replikv"], "us/op", 2))
    show("sqlite3 SELECT v WHERE k=? + json.loads", fmt_runs(us["sqlite3"], "us/op", 2))
    print(f"  ({cfg.get_reps} reps of {len(order):,} random gets, same keys for both)")
    ours_us, theirs_us = statistics.median(us["replikv"]), statistics.median(us["sqlite3"])
    report.compare("get vs sqlite3", ours_us, theirs_us, "us/op", "sqlite3", 3.0, kind="faster")


# --------------------------------------------------------------------------------------
# 4. put_many in one durable transaction


def bench_put_many(base: Path, cfg: Config, report: Report) -> None:
    n = cfg.put_many_rows
    section(f"put_many: {n:,} rows in one durable transaction")
    rows = make_rows(n)
    ms: dict[str, list[float]] = {"replikv": [], "sqlite3": []}
    with scratch(base, "put_many") as d:

        def ours(rep: int) -> float:
            store = open_store(d / f"replikv-{rep}")
            try:
                seconds = timed(lambda: store.put_many(TABLE, rows))
                if store.count(TABLE) != n:
                    raise AssertionError("replikv put_many lost rows")
            finally:
                store.close()
            shutil.rmtree(d / f"replikv-{rep}")
            return seconds

        def sqlite(rep: int) -> float:
            path = d / f"sqlite-{rep}.db"
            conn = open_sqlite(path)
            try:

                def load() -> None:
                    with conn:  # one transaction, committed (WAL fsync'ed) on exit
                        conn.executemany(SQL_PUT, ((k, json.dumps(v)) for k, v in rows))

                seconds = timed(load)
                if conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] != n:
                    raise AssertionError("sqlite3 executemany lost rows")
            finally:
                conn.close()
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
            return seconds

        for rep in range(cfg.put_many_reps):
            pairs: list[tuple[str, Callable[[int], float]]] = [
                ("replikv", ours),
                ("sqlite3", sqlite),
            ]
            for name, run in pairs if rep % 2 == 0 else pairs[::-1]:
                ms[name].append(run(rep) * 1e3)
    show("replikv Store.put_many (one transaction)", fmt_runs(ms["replikv"], "ms"))
    show("sqlite3 executemany + json.dumps, one commit", fmt_runs(ms["sqlite3"], "ms"))
    ours_ms, theirs_ms = statistics.median(ms["replikv"]), statistics.median(ms["sqlite3"])
    print(
        f"  ({cfg.put_many_reps} reps, each into a fresh store/database; per row: replikv "
        f"{ours_ms * 1e3 / n:.2f} us, sqlite3 {theirs_ms * 1e3 / n:.2f} us)"
    )
    report.compare(
        f"put_many {n // 1000}k vs sqlite3", ours_ms, theirs_ms, "ms", "sqlite3", 2.0, kind="faster"
    )


# --------------------------------------------------------------------------------------
# 5. reopen after kill -9


def child_main(argv: Sequence[str]) -> None:
    """The writer killed by ``bench_reopen``: loads N keys, says ready, then keeps writing."""
    path, n, batch = argv[0], int(argv[1]), int(argv[2])
    entries, seconds = int(argv[3]), float(argv[4])
    store = replikv.Store(path, fsync=True, checkpoint_entries=entries, checkpoint_seconds=seconds)
    start = time.perf_counter()
    for lo in range(0, n, batch):
        store.put_many(TABLE, make_rows(min(batch, n - lo), start=lo))
    print(f"ready {store.last_lsn} {time.perf_counter() - start:.3f}", flush=True)
    i = 0
    while True:
        store.put("small", i, {"i": i})
        i += 1
        if i % 250 == 0:
            print(f"lsn {store.last_lsn}", flush=True)


CHILD_CODE = (
    "import sys; sys.path.insert(0, sys.argv[1]); import bench_store; "
    "bench_store.child_main(sys.argv[2:])"
)


def bench_reopen(base: Path, cfg: Config, report: Report) -> None:
    n = cfg.reopen_keys
    section(f"reopen: open a store of {n:,} keys after its writer was killed with SIGKILL")
    print(
        f"  checkpoint setting: checkpoint_entries={cfg.checkpoint_entries}, "
        f"checkpoint_seconds={cfg.checkpoint_seconds:g}"
    )
    print(
        "  (a durable redb checkpoint after that many entries or seconds; the open replays\n"
        "   the log after the last checkpoint, so that setting bounds recovery)"
    )
    with scratch(base, "reopen") as d:
        path = d / "replikv"
        cmd = [
            sys.executable,
            "-c",
            CHILD_CODE,
            str(Path(__file__).resolve().parent),
            str(path),
            str(n),
            str(cfg.reopen_batch),
            str(cfg.checkpoint_entries),
            str(cfg.checkpoint_seconds),
        ]
        child, lines, reader = reporting_child(cmd)
        try:
            ready = lines.get(timeout=150)
            if ready is None or not ready.startswith("ready"):
                raise RuntimeError(f"writer did not get ready: {ready!r}")
            _, ready_lsn, load_s = ready.split()
            time.sleep(cfg.kill_after_s)
            child.send_signal(signal.SIGKILL)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
        reader.join(10)
        last_seen = ready_lsn
        while True:
            line = lines.get_nowait() if not lines.empty() else None
            if line is None:
                break
            if line.startswith("lsn "):
                last_seen = line.split()[1]
        log_bytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())

        gc.collect()
        start = time.perf_counter()
        store = replikv.Store(str(path))
        open_s = time.perf_counter() - start
        try:
            lsn = store.last_lsn
            rows = store.count(TABLE)
            small = store.count("small")
            probe = make_key(n - 1)
            if store.get(TABLE, probe) != make_value(n - 1):
                raise AssertionError(f"{probe!r} missing after reopen")
        finally:
            store.close()
        start = time.perf_counter()
        replikv.Store(str(path)).close()
        clean_s = time.perf_counter() - start

    show("writer: load time (put_many batches)", f"{float(load_s):.2f} s, LSN {ready_lsn} at ready")
    show(
        "writer: killed with SIGKILL",
        f"{cfg.kill_after_s:g} s after ready; last LSN it printed {last_seen}",
    )
    show("store directory size at the kill (allocated)", f"{log_bytes / 1e6:,.1f} MB")
    show("replikv.Store(path) after the kill", f"{open_s * 1e3:,.1f} ms")
    show(
        "store.last_lsn after the reopen",
        f"{lsn} ({rows:,} rows in {TABLE!r}, {small:,} small puts)",
    )
    show("reopen after a clean close (for context)", f"{clean_s * 1e3:,.1f} ms")
    report.info(
        f"reopen {n:,} keys after kill -9",
        f"{open_s * 1e3:,.1f} ms (last_lsn {lsn})",
        f"clean reopen {clean_s * 1e3:,.1f} ms",
        f"report; ckpt {cfg.checkpoint_entries} entries / {cfg.checkpoint_seconds:g} s",
    )


# --------------------------------------------------------------------------------------


def reporting_child(
    cmd: list[str],
) -> tuple[subprocess.Popen[str], queue.Queue[str | None], threading.Thread]:
    """Starts ``cmd`` with its output read line by line, by the thread it returns, into the
    queue it returns (``None`` once the output ends): the caller waits for a line with a
    timeout."""
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line.strip())
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return child, lines, reader


def bench_parser(doc: str | None, scenarios: Sequence[str]) -> argparse.ArgumentParser:
    """The options every benchmark runner takes: --quick, --only and --dir."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    parser.add_argument("--only", choices=scenarios, help="run one scenario")
    parser.add_argument(
        "--dir", default="/tmp", help="where the temporary directory goes (default /tmp)"
    )
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = bench_parser(__doc__, SCENARIOS)
    parser.add_argument("--reopen-keys", type=int, help="keys in the reopen scenario")
    parser.add_argument(
        "--checkpoint-entries",
        type=int,
        default=DEFAULT_CHECKPOINT_ENTRIES,
        help="checkpoint_entries of the writer in the reopen scenario",
    )
    parser.add_argument(
        "--checkpoint-seconds",
        type=float,
        default=DEFAULT_CHECKPOINT_SECONDS,
        help="checkpoint_seconds of the writer in the reopen scenario",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = QUICK if args.quick else Config()
    overrides: dict[str, Any] = {
        "checkpoint_entries": args.checkpoint_entries,
        "checkpoint_seconds": args.checkpoint_seconds,
    }
    if args.reopen_keys is not None:
        overrides["reopen_keys"] = args.reopen_keys
    cfg = Config(**{**cfg.__dict__, **overrides})

    print("$ " + shlex.join([sys.executable, *sys.argv]))
    base = Path(tempfile.mkdtemp(prefix="replikv-bench-", dir=args.dir))
    sample = make_value(1234)
    print(
        f"replikv {replikv.__version__}, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs, {platform.platform()}"
    )
    print(f"temporary directory {base} on {filesystem_of(base)}")
    print(f"machine load at start: {machine_load()}")
    print(
        f"keys: 16-byte str (e.g. {make_key(1234)!r}); values: dicts of "
        f"{len(json.dumps(sample))} bytes as JSON, e.g. {json.dumps(sample)}"
    )
    mode = "quick" if args.quick else "default"
    print(f"mode: {mode}; scenarios: {args.only or ', '.join(SCENARIOS)}")
    benches: dict[str, Callable[[Path, Config, Report], None]] = {
        "put": bench_put,
        "threads": bench_threads,
        "get": bench_get,
        "put_many": bench_put_many,
        "reopen": bench_reopen,
    }
    report = Report()
    started = time.perf_counter()
    try:
        for name in SCENARIOS:
            if args.only is None or args.only == name:
                benches[name](base, cfg, report)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report.print_summary()
    print(f"machine load at end: {machine_load()}")
    print(f"total time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
