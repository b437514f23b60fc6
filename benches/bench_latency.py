"""Tail latency of durable single puts while checkpoints run, and reopen after kill -9,
next to sqlite3 measured in the same run.

Run it from the repository with the package installed (``replikv`` importable)::

    python benches/bench_latency.py            # 1M-row store, a few minutes on 2 cores
    python benches/bench_latency.py --quick    # a smoke run of seconds (20k rows)

Every ratio compares two figures of this run; the targets come from issue 10 ("Speed":
no writer pays for a checkpoint; reopen after kill -9 under 300 ms). This script never
fails on a timing.

Scenarios:
  steady   after a bulk load of N rows (one ``put_many``; sqlite3: one ``executemany``
           transaction), single durable puts from one thread: first of new keys in order
           (the first checkpoints after the load), then of random existing keys. Each put
           is timed alone: median, p99, p99.9 and max, next to sqlite3 (WAL,
           synchronous=FULL, one commit per row, same keys and values) and to the disk's
           floor (a bare 200-byte append + fdatasync to a preallocated file, as many times).
  reopen   a child process loads N rows in batches and keeps putting single rows until it
           is killed with SIGKILL; then the time to open the store and read one row, next
           to sqlite3's connect + first query after the same treatment.
"""

from __future__ import annotations

import gc
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import replikv
from bench_store import (
    FLOOR_RECORD_BYTES,
    SQL_GET,
    SQL_PUT,
    TABLE,
    Report,
    bench_parser,
    make_key,
    make_rows,
    make_value,
    open_sqlite,
    reporting_child,
    scratch,
    section,
    show,
)
from replikv._measure import filesystem_of, machine_load

SCENARIOS = ("steady", "reopen")
MAX_PUT_MS = 50.0  # the slowest single put
TAIL_TO_MEDIAN = 5.0  # p99.9 at most this many medians
REOPEN_MS = 300.0  # open + first read after kill -9


@dataclass(frozen=True)
class Config:
    """Counts for one run; ``--quick`` shrinks them for a smoke run."""

    rows: int = 1_000_000
    after_load_puts: int = 12_000
    random_puts: int = 12_000
    reopen_rows: int = 1_000_000
    reopen_batch: int = 100_000
    kill_after_s: float = 1.5


QUICK = Config(
    rows=20_000,
    after_load_puts=1_500,
    random_puts=1_500,
    reopen_rows=20_000,
    reopen_batch=10_000,
    kill_after_s=0.3,
)


# --------------------------------------------------------------------------------------
# 1. steady single puts


@dataclass(frozen=True)
class Latencies:
    """Per-put latencies of one phase, in milliseconds."""

    values: list[float]

    def pct(self, p: float) -> float:
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def line(self) -> str:
        return (
            f"median {self.median:.3f}  p99 {self.pct(99):.3f}  p99.9 {self.pct(99.9):.3f}  "
            f"max {self.max:.2f} ms  ({len(self.values):,} puts)"
        )


def time_each(put: Callable[[str, dict[str, object]], object], keys: Sequence[int]) -> Latencies:
    """Times every put alone (``perf_counter_ns`` around the call)."""
    out = []
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for i in keys:
            key, value = make_key(i), make_value(i + 7)
            start = clock()
            put(key, value)
            out.append((clock() - start) / 1e6)
    finally:
        gc.enable()
    return Latencies(out)


def phases(cfg: Config) -> list[tuple[str, list[int]]]:
    rng = random.Random(10)
    return [
        ("new keys right after the load", list(range(cfg.rows, cfg.rows + cfg.after_load_puts))),
        ("random existing keys", [rng.randrange(cfg.rows) for _ in range(cfg.random_puts)]),
    ]


def floor_latencies(path: Path, count: int) -> Latencies:
    """A bare append + fdatasync per record into a preallocated file: what the disk gives
    with no database at all."""
    record = b"x" * (FLOOR_RECORD_BYTES - 1) + b"\n"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    try:
        os.posix_fallocate(fd, 0, count * len(record))
        os.fsync(fd)
        offsets = iter(range(0, count * len(record), len(record)))

        def append(_key: str, _value: dict[str, object]) -> None:
            os.pwrite(fd, record, next(offsets))
            os.fdatasync(fd)

        return time_each(append, range(count))
    finally:
        os.close(fd)


def bench_steady(base: Path, cfg: Config, report: Report) -> None:
    n = cfg.rows
    section(f"steady: single durable puts after a bulk load of {n:,} rows")
    rows = make_rows(n)
    results: dict[str, dict[str, Latencies]] = {}
    with scratch(base, "steady") as d:
        store = replikv.Store(str(d / "replikv"), fsync=True)
        try:
            start = time.perf_counter()
            store.put_many(TABLE, rows)
            show("replikv: put_many load", f"{time.perf_counter() - start:.2f} s")

            def put_ours(key: str, value: dict[str, object]) -> object:
                return store.put(TABLE, key, value)

            results["replikv"] = {name: time_each(put_ours, keys) for name, keys in phases(cfg)}
        finally:
            store.close()
        conn = open_sqlite(d / "sqlite.db")
        try:
            start = time.perf_counter()
            with conn:
                conn.executemany(SQL_PUT, ((k, json.dumps(v)) for k, v in rows))
            show(
                "sqlite3: executemany load (one transaction)",
                f"{time.perf_counter() - start:.2f} s",
            )

            def put_sqlite(key: str, value: dict[str, object]) -> object:
                with conn:
                    return conn.execute(SQL_PUT, (key, json.dumps(value)))

            results["sqlite3"] = {name: time_each(put_sqlite, keys) for name, keys in phases(cfg)}
        finally:
            conn.close()
        floor = floor_latencies(d / "floor", max(len(keys) for _, keys in phases(cfg)))
    show("floor: append + fdatasync", floor.line())
    report.compare(
        "p99.9 / median of the floor (no database)",
        floor.pct(99.9) / floor.median,
        TAIL_TO_MEDIAN,
        "x",
        "target",
        None,
        kind="at_most",
    )
    for name, _ in phases(cfg):
        ours, theirs = results["replikv"][name], results["sqlite3"][name]
        show(f"replikv, {name}", ours.line())
        show(f"sqlite3, {name}", theirs.line())
        report.compare(
            f"slowest put, {name}",
            ours.max,
            MAX_PUT_MS,
            "ms",
            "target",
            1.0,
            kind="at_most",
        )
        report.compare(
            f"p99.9 / median, {name}",
            ours.pct(99.9) / ours.median,
            TAIL_TO_MEDIAN,
            "x",
            "target",
            1.0,
            kind="at_most",
        )
        report.compare(
            f"p99.9 / median vs sqlite3's, {name}",
            ours.pct(99.9) / ours.median,
            theirs.pct(99.9) / theirs.median,
            "x",
            "sqlite3",
            None,
            kind="at_most",
        )
        report.compare(
            f"slowest put vs sqlite3, {name}",
            ours.max,
            theirs.max,
            "ms",
            "sqlite3",
            None,
            kind="at_most",
        )
        report.compare(
            f"median put vs sqlite3, {name}",
            ours.median,
            theirs.median,
            "ms",
            "sqlite3",
            None,
            kind="at_most",
        )


# --------------------------------------------------------------------------------------
# 2. reopen after kill -9


def child_main(argv: Sequence[str]) -> None:
    """The writer killed by ``bench_reopen``: loads N rows in batches, says ready, then
    keeps putting single rows and printing the last acknowledged key."""
    kind, path, n, batch = argv[0], argv[1], int(argv[2]), int(argv[3])
    if kind == "replikv":
        store = replikv.Store(path, fsync=True)
        for lo in range(0, n, batch):
            store.put_many(TABLE, make_rows(min(batch, n - lo), start=lo))

        def put(i: int) -> None:
            store.put("small", i, {"i": i})

    else:
        conn = open_sqlite(Path(path))
        conn.execute("CREATE TABLE IF NOT EXISTS small (k INTEGER PRIMARY KEY, v TEXT)")
        for lo in range(0, n, batch):
            with conn:
                conn.executemany(
                    SQL_PUT,
                    ((k, json.dumps(v)) for k, v in make_rows(min(batch, n - lo), start=lo)),
                )

        def put(i: int) -> None:
            with conn:
                conn.execute(
                    "INSERT OR REPLACE INTO small VALUES (?, ?)", (i, json.dumps({"i": i}))
                )

    print("ready", flush=True)
    i = 0
    while True:
        put(i)
        print(f"acked {i}", flush=True)
        i += 1


CHILD_CODE = (
    "import sys; sys.path.insert(0, sys.argv[1]); import bench_latency; "
    "bench_latency.child_main(sys.argv[2:])"
)


def kill_writer(kind: str, path: Path, cfg: Config) -> int:
    """Runs the writer child until ``kill_after_s`` after it is ready, kills it with
    SIGKILL and returns the last single put it acknowledged."""
    cmd = [
        sys.executable,
        "-c",
        CHILD_CODE,
        str(Path(__file__).resolve().parent),
        kind,
        str(path),
        str(cfg.reopen_rows),
        str(cfg.reopen_batch),
    ]
    child, lines, reader = reporting_child(cmd)
    try:
        if lines.get(timeout=600) != "ready":
            raise RuntimeError(f"the {kind} writer did not get ready")
        time.sleep(cfg.kill_after_s)
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    reader.join(10)
    acked = -1
    while (line := lines.get()) is not None:
        if line.startswith("acked "):
            acked = int(line.split()[1])
    return acked


def bench_reopen(base: Path, cfg: Config, report: Report) -> None:
    n = cfg.reopen_rows
    section(f"reopen: open and read one row after a writer of {n:,} rows was killed with SIGKILL")
    probe = make_key(n - 1)
    with scratch(base, "reopen") as d:
        acked = kill_writer("replikv", d / "replikv", cfg)
        gc.collect()
        start = time.perf_counter()
        store = replikv.Store(str(d / "replikv"))
        opened = time.perf_counter()
        value = store.get(TABLE, probe)
        ours_s = time.perf_counter() - start
        try:
            if value != make_value(n - 1) or store.get("small", acked) != {"i": acked}:
                raise AssertionError("an acknowledged write is missing after the reopen")
            lsn = store.last_lsn
        finally:
            store.close()
        show("replikv: acknowledged single puts at the kill", f"{acked + 1:,} (last_lsn {lsn:,})")
        show("replikv: Store(path) after the kill", f"{(opened - start) * 1e3:,.1f} ms")
        show("replikv: open + first get", f"{ours_s * 1e3:,.1f} ms")

        acked = kill_writer("sqlite3", d / "sqlite.db", cfg)
        gc.collect()
        start = time.perf_counter()
        conn = sqlite3.connect(str(d / "sqlite.db"))
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        row = conn.execute(SQL_GET, (probe,)).fetchone()
        theirs_s = time.perf_counter() - start
        try:
            small = conn.execute("SELECT v FROM small WHERE k = ?", (acked,)).fetchone()
            if row is None or small is None:
                raise AssertionError("sqlite3 lost an acknowledged write")
        finally:
            conn.close()
        show("sqlite3: acknowledged single puts at the kill", f"{acked + 1:,}")
        show("sqlite3: connect + first query", f"{theirs_s * 1e3:,.1f} ms")
    report.compare(
        f"reopen + first read after kill -9, {n:,} rows",
        ours_s * 1e3,
        REOPEN_MS,
        "ms",
        "target",
        1.0,
        kind="at_most",
    )
    report.compare(
        f"reopen + first read vs sqlite3, {n:,} rows",
        ours_s * 1e3,
        theirs_s * 1e3,
        "ms",
        "sqlite3",
        None,
        kind="at_most",
    )


# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = bench_parser(__doc__, SCENARIOS).parse_args(sys.argv[1:] if argv is None else argv)
    cfg = QUICK if args.quick else Config()
    base = Path(tempfile.mkdtemp(prefix="replikv-latency-", dir=args.dir))
    print(f"replikv {replikv.__version__}, SQLite {sqlite3.sqlite_version}")
    print(f"temporary directory {base} on {filesystem_of(base)}")
    print(f"machine load at start: {machine_load()}")
    print(f"mode: {'quick' if args.quick else 'default'}")
    benches: dict[str, Callable[[Path, Config, Report], None]] = {
        "steady": bench_steady,
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
    report.print_summary(issue="issue 10")
    print(f"machine load at end: {machine_load()}")
    print(f"total time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
