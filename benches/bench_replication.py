"""Replication benchmarks: a primary with and without replicas, lag, catch-up and snapshots.

Run it from the repository with the package installed (``replikv`` importable)::

    python benches/bench_replication.py                 # every scenario, about 2 min on 2 cores
    python benches/bench_replication.py --quick         # a fast smoke run with small counts
    python benches/bench_replication.py --only lag --dir /some/disk
    python benches/bench_replication.py --only catchup --entries 200000
    python benches/bench_replication.py --only lag --replica-dir /dev/shm

Every figure is measured in this run on one disk (a temporary directory under ``--dir``,
removed at the end; ``--replica-dir`` moves the lag scenario's replica elsewhere, as
another machine's disk would be: on one disk its fsyncs queue with the primary's), every
ratio compares two figures of the same run, and only 127.0.0.1 is used. The targets come
from issue 3 ("Speed"); this script reports PASS/MISS, it never fails on a timing.

Scenarios:
  throughput  durable single-writer puts on a primary with async replicas attached (each a
              child process running ``replikv.Replica``) vs a plain store with no replica,
              interleaved in slices: one replica at the default ``ship_interval``, one
              replica with eager shipping (``ship_interval=0``, issue 7), two replicas at the
              default; a primary with no replica connected as context; then the same for
              ``put_many`` of 100k rows with two replicas (no target)
  lag         two writer threads doing durable puts for a few seconds; per entry, the time
              the replica (in this process, so one clock) has applied its LSN minus the time
              the primary's put returned; for ``ship_interval=0`` and ``0.05``
  catchup     N single-row entries (written with ``fsync=False``, then reopened durable)
              streamed through the log onto a replica that was away (it holds a slot, its
              store is empty), with the default ``ship_interval`` and, as context, with 0;
              vs the same rows applied locally into a fresh store with one ``put`` per entry
              (one log entry and one apply each, as on the replica; ``fsync=False`` as the
              replica pays one fsync per batch only). That baseline also pays a Python call
              and the value's encoding per entry, which the replica does not: ``put_many`` of
              the same rows (one entry per 100k) is shown as a stricter context
  snapshot    M keys loaded with ``put_many`` into a primary whose log was retained away, so
              that a fresh replica is seeded by a snapshot, vs ``put_many`` of the same rows
              into a fresh local store
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import gc
import json
import math
import os
import platform
import queue
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# benches/ is not a package: make bench_store importable when run as a script or a child
sys.path.insert(0, str(Path(__file__).resolve().parent))

import replikv
from bench_store import (
    TABLE,
    Report,
    Row,
    Verdict,
    bench_parser,
    fmt_runs,
    make_key,
    make_rows,
    make_value,
    scratch,
    section,
    show,
)
from replikv._measure import filesystem_of, machine_load, percentile

SCENARIOS = ("throughput", "lag", "catchup", "snapshot")
ISSUE = "issues 3 and 7"
LOOPBACK = "127.0.0.1:0"
DEFAULT_SHIP_INTERVAL = 0.05
MiB = 1 << 20
CATCHUP_NAME = "catchup"
EAGER_NAME = "catchup-eager"

# targets of issue 3 ("Speed")
PUT_RATIO_TARGET = 0.90
EAGER_LAG_P99_MS = 5.0
INTERVAL_LAG_SLACK_MS = 10.0
CATCHUP_RATIO_TARGET = 0.50
SNAPSHOT_RATIO_TARGET = 0.50


@dataclass(frozen=True)
class Config:
    """Counts and durations for one run; ``--quick`` shrinks them for a smoke run."""

    # throughput
    slice_s: float = 1.0
    rounds: int = 10
    put_pool: int = 50_000
    put_many_rows: int = 100_000
    put_many_per_block: int = 5
    put_many_rounds: int = 3
    # lag
    lag_s: float = 4.0
    poll_s: float = 0.0001
    #: Where the lag scenario's replica keeps its store (``None``: beside the primary's).
    replica_dir: Path | None = None
    # catch-up
    entries: int = 1_000_000
    catchup_budget_s: float = 110.0
    # snapshot
    snapshot_keys: int = 1_000_000
    snapshot_batch: int = 100_000
    # generation chunk (rows generated outside the timings, a chunk at a time)
    chunk: int = 100_000
    wait_s: float = 120.0


QUICK = Config(
    slice_s=0.25,
    rounds=2,
    put_pool=5_000,
    put_many_rows=10_000,
    put_many_per_block=3,
    put_many_rounds=1,
    lag_s=1.0,
    entries=20_000,
    catchup_budget_s=15.0,
    snapshot_keys=50_000,
    snapshot_batch=10_000,
    chunk=10_000,
    wait_s=60.0,
)


# --------------------------------------------------------------------------------------
# Helpers


def timed_bulk_load(path: Path, total: int, batch: int, *, fsync: bool) -> float:
    """Seconds spent in put_many loading ``total`` rows in ``batch``-row transactions into a
    fresh store at ``path`` (removed afterwards); row generation is not counted."""
    seconds = 0.0
    store = replikv.Store(str(path), fsync=fsync)
    try:
        for lo, count in chunks(total, batch):
            rows = make_rows(count, start=lo)
            gc.collect()
            start = time.perf_counter()
            store.put_many(TABLE, rows)
            seconds += time.perf_counter() - start
            del rows
    finally:
        store.close()
    shutil.rmtree(path)
    return seconds


def chunks(total: int, size: int) -> list[tuple[int, int]]:
    """``(start, count)`` pairs covering ``range(total)`` in pieces of at most ``size``."""
    return [(lo, min(size, total - lo)) for lo in range(0, total, size)]


def log_bytes_per_entry(store_dir: Path) -> float | None:
    """Bytes per entry in a store's closed log segments (named by their first LSN).

    A closed segment holds the entries from its first LSN up to the next segment's first
    LSN; the open (last, preallocated) segment is left out. ``None`` if no segment closed.
    """
    segments = sorted((store_dir / "log").glob("*.seg"))
    firsts = [int(s.stem) for s in segments]
    size = sum(s.stat().st_size for s in segments[:-1])
    count = firsts[-1] - firsts[0] if len(firsts) > 1 else 0
    return size / count if count > 0 else None


def wait_applied(replica: replikv.Replica, lsn: int, limit_s: float, what: str) -> float:
    """Waits until ``replica`` applied ``lsn``; returns the seconds it took (raises if not)."""
    start = time.perf_counter()
    while not replica.wait_for(lsn, timeout=0.5):
        if time.perf_counter() - start > limit_s:
            status = replica.status()
            raise RuntimeError(f"{what}: LSN {lsn} not applied after {limit_s:.0f} s: {status}")
    return time.perf_counter() - start


def wait_acked(primary: replikv.Primary, lsn: int, replicas: int, limit_s: float) -> float:
    """Waits until ``replicas`` replicas acked ``lsn``; returns the seconds it took."""
    start = time.perf_counter()
    while primary.wait_for(lsn, replicas=replicas, timeout=0.5) < replicas:
        if time.perf_counter() - start > limit_s:
            states = [(r.name, r.state, r.acked_lsn) for r in primary.status()]
            raise RuntimeError(f"LSN {lsn} not acked by {replicas} replicas: {states}")
    return time.perf_counter() - start


def same_tables(a: replikv.Checksum, b: replikv.Checksum) -> bool:
    return a.lsn == b.lsn and a.tables == b.tables and a.rows == b.rows


# --------------------------------------------------------------------------------------
# Replicas in child processes


def replica_child(argv: Sequence[str]) -> None:
    """Runs a ``replikv.Replica`` until stdin closes, then prints its checksum as JSON."""
    path, address, name = argv
    replica = replikv.Replica(path, primary=address, name=name)
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or kills us)
    checksum = replica.store.checksum()
    status = replica.status()
    print(
        json.dumps(
            {
                "lsn": checksum.lsn,
                "tables": checksum.tables,
                "rows": checksum.rows,
                "connections": status.connections,
                "snapshots": status.snapshots,
            }
        ),
        flush=True,
    )
    replica.close()


CHILD_CODE = (
    "import sys; sys.path.insert(0, sys.argv[1]); import bench_replication; "
    "bench_replication.replica_child(sys.argv[2:])"
)


class ChildReplica:
    """A replica in its own process; ``stop()`` closes its stdin, then kills it if needed."""

    def __init__(self, path: Path, address: str, name: str) -> None:
        self.name = name
        cmd = [
            sys.executable,
            "-c",
            CHILD_CODE,
            str(Path(__file__).resolve().parent),
            str(path),
            address,
            name,
        ]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._pump, daemon=True)
        self.reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def wait_ready(self, timeout: float) -> None:
        line = self.lines.get(timeout=timeout)
        if line != "ready":
            raise RuntimeError(f"replica {self.name} did not start: {line!r}")

    def stop(self, timeout: float = 15.0) -> dict[str, Any] | None:
        """Stops the child; returns its final checksum report if it gave one."""
        result: dict[str, Any] | None = None
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            line = self.lines.get(timeout=timeout)
            if line:
                result = json.loads(line)
            self.proc.wait(timeout)
        except (queue.Empty, subprocess.TimeoutExpired, json.JSONDecodeError):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.reader.join(5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        return result


# --------------------------------------------------------------------------------------
# 1. durable single-writer throughput with and without two replicas


@dataclass
class Writer:
    """One system of the throughput scenario: a store, maybe a primary, and its counters."""

    name: str
    store: replikv.Store
    primary: replikv.Primary | None = None
    replicas: int = 0
    next_row: int = 0
    puts: int = 0
    put_s: float = 0.0
    rows: int = 0
    rows_s: float = 0.0
    settle_s: float = 0.0

    def settle(self, limit_s: float) -> None:
        """Lets the replicas catch up (outside the timings) so the next slice is clean."""
        if self.primary is not None and self.replicas:
            self.settle_s += wait_acked(self.primary, self.store.last_lsn, self.replicas, limit_s)


def put_slice(w: Writer, pool: list[Row], seconds: float) -> None:
    """Durable puts from one thread for ``seconds``; adds the count and the time to ``w``."""
    put, n, done = w.store.put, len(pool), 0
    i = w.next_row
    gc.collect()
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline:
        key, value = pool[i % n]
        put(TABLE, key, value)
        i += 1
        done += 1
        now = time.perf_counter()
    w.put_s += now - start
    w.puts += done
    w.next_row = i


def put_many_block(w: Writer, rows: list[Row], times: int) -> None:
    """``times`` back-to-back ``put_many`` of ``rows``; adds rows and time to ``w``."""
    gc.collect()
    start = time.perf_counter()
    for _ in range(times):
        w.store.put_many(TABLE, rows)
    w.rows_s += time.perf_counter() - start
    w.rows += len(rows) * times


def start_replicated(
    d: Path, name: str, replicas: int, ship_interval: float, wait_s: float
) -> tuple[Writer, list[ChildReplica]]:
    """A durable store served by a primary with ``replicas`` child-process replicas, all
    connected and caught up; the caller closes the primary, the store and the children."""
    store = replikv.Store(str(d / name), fsync=True)
    primary = replikv.Primary(store, listen=LOOPBACK, ship_interval=ship_interval)
    children = [
        ChildReplica(d / f"{name}-replica-{i}", primary.address, f"replica-{i}")
        for i in range(1, replicas + 1)
    ]
    for child in children:
        child.wait_ready(60)
    wait_acked(primary, store.put(TABLE, "warm-up", {"i": 0}).lsn, replicas, wait_s)
    label = f"{replicas} replica{'s' if replicas > 1 else ''}, ship_interval={ship_interval:g}"
    return Writer(label, store, primary, replicas), children


def bench_throughput(base: Path, cfg: Config, report: Report) -> None:
    section(
        "throughput: durable single-writer puts on a primary with 1 or 2 async replicas "
        "(child processes) vs no replica"
    )
    pool = make_rows(cfg.put_pool)
    many_rows = make_rows(cfg.put_many_rows, prefix="m")
    children: list[ChildReplica] = []
    writers: list[Writer] = []
    finals: list[dict[str, Any] | None] = []
    with scratch(base, "throughput") as d:
        try:
            for name, replicas, ship_interval in (
                ("one", 1, DEFAULT_SHIP_INTERVAL),
                ("eager", 1, 0.0),
                ("two", 2, DEFAULT_SHIP_INTERVAL),
            ):
                writer, started = start_replicated(d, name, replicas, ship_interval, cfg.wait_s)
                writers.append(writer)
                children += started
            one, eager, two = writers
            lonely_store = replikv.Store(str(d / "lonely"), fsync=True)
            lonely_primary = replikv.Primary(lonely_store, listen=LOOPBACK)
            lonely = Writer("primary, 0 replicas", lonely_store, lonely_primary)
            writers.append(lonely)
            plain = Writer("plain store", replikv.Store(str(d / "plain"), fsync=True))
            writers.append(plain)
            # warm-up: a short slice each
            for w in writers:
                put_slice(w, pool, min(0.2, cfg.slice_s))
                w.settle(cfg.wait_s)
                w.puts = 0
                w.put_s = w.settle_s = 0.0
            per_round: dict[str, list[float]] = {w.name: [] for w in writers}
            for r in range(cfg.rounds):
                # rotate the order: the disk's slow and fast moments fall on every system
                for k in range(len(writers)):
                    w = writers[(r + k) % len(writers)]
                    before_puts, before_s = w.puts, w.put_s
                    put_slice(w, pool, cfg.slice_s)
                    per_round[w.name].append((w.puts - before_puts) / (w.put_s - before_s))
                    w.settle(cfg.wait_s)
            put_settle_s = {w.name: w.settle_s for w in writers if w.replicas}

            # put_many: two systems, blocks of back-to-back put_many
            many = [two, plain]
            two.settle_s = 0.0
            for w in many:  # warm-up
                put_many_block(w, many_rows, 1)
                w.settle(cfg.wait_s)
                w.rows = 0
                w.rows_s = w.settle_s = 0.0
            many_round: dict[str, list[float]] = {w.name: [] for w in many}
            for r in range(cfg.put_many_rounds):
                for w in many if r % 2 == 0 else many[::-1]:
                    before_rows, before_s = w.rows, w.rows_s
                    put_many_block(w, many_rows, cfg.put_many_per_block)
                    many_round[w.name].append((w.rows - before_rows) / (w.rows_s - before_s))
                    w.settle(cfg.wait_s)
            many_settle_s = two.settle_s

            sums: list[replikv.Checksum] = []
            infos: list[tuple[str, str, int]] = []
            for w in (one, eager, two):
                assert w.primary is not None
                wait_acked(w.primary, w.store.last_lsn, w.replicas, cfg.wait_s)
                sums += [w.store.checksum()] * w.replicas
                infos += [(f"{w.name}: {r.name}", r.state, r.acked_lsn) for r in w.primary.status()]
            for child in children:
                finals.append(child.stop())
            children.clear()
        finally:
            for child in children:
                child.stop()
            for w in writers:
                if w.primary is not None:
                    w.primary.close()
                w.store.close()

    rates = {w.name: w.puts / w.put_s for w in writers}
    for w in writers:
        show(
            f"put, {w.name}",
            f"{rates[w.name]:,.0f} puts/s overall; per round "
            + fmt_runs(per_round[w.name], "puts/s", 0),
        )
    print(
        f"  ({cfg.rounds} rounds of one {cfg.slice_s:g} s slice per system, order rotated; "
        f"{two.puts:,} puts with 2 replicas)"
    )
    print(
        "  (after each slice the replicas were let catch up outside the timing: "
        + ", ".join(f"{name} {s * 1e3:,.0f} ms" for name, s in put_settle_s.items())
        + " in all)"
    )
    many_rates = {w.name: w.rows / w.rows_s for w in many}
    for w in many:
        show(
            f"put_many {cfg.put_many_rows // 1000}k rows, {w.name}",
            f"{many_rates[w.name]:,.0f} rows/s overall; per block "
            + fmt_runs(many_round[w.name], "rows/s", 0),
        )
    print(
        f"  ({cfg.put_many_rounds} round(s) of {cfg.put_many_per_block} back-to-back put_many per "
        f"system; replicas then caught up in {many_settle_s:,.2f} s in all, outside the timing)"
    )
    ok = all(
        f is not None and f["lsn"] == s.lsn and f["tables"] == s.tables
        for f, s in zip(finals, sums, strict=True)
    )
    show(
        "replicas at the end",
        f"{', '.join(f'{n} {s} acked {a}' for n, s, a in infos)}; checksums equal to their "
        f"primary's: {ok}",
    )
    if not ok:
        report.notes.append(f"throughput: replica checksums differ from the primary's: {finals}")
    for w in (one, eager, two):
        report.compare(
            f"put, {w.name} vs none",
            rates[w.name],
            rates[plain.name],
            "puts/s",
            "no replica",
            PUT_RATIO_TARGET,
            kind="higher",
        )
    report.compare(
        "put, primary w/o replica vs none",
        rates[lonely.name],
        rates[plain.name],
        "puts/s",
        "no replica",
        None,
        kind="higher",
    )
    report.compare(
        f"put_many {cfg.put_many_rows // 1000}k, 2 replicas vs none",
        many_rates[two.name],
        many_rates[plain.name],
        "rows/s",
        "no replica",
        None,
        kind="higher",
    )


# --------------------------------------------------------------------------------------
# 2. replication lag under two writers


@dataclass
class LagResult:
    ship_interval: float
    lags_ms: list[float]
    put_ms: list[float]
    puts: int
    seconds: float
    early: int
    polls: int
    backlog: int  # entries committed but not applied on the replica when the writers stopped
    drain_ms: float  # from the writers' stop until the replica applied the last entry
    thirds_p50_ms: tuple[float, float, float]  # p50 lag of the 1st, 2nd, 3rd third of the run


def measure_lag(base: Path, cfg: Config, ship_interval: float) -> LagResult:
    """Two writer threads on a primary, one replica in this process, a watcher thread."""
    with (
        scratch(base, f"lag-{ship_interval:g}") as d,
        scratch(cfg.replica_dir or base, f"lag-replica-{ship_interval:g}") as replica_home,
    ):
        store = replikv.Store(str(d / "primary"), fsync=True)
        primary: replikv.Primary | None = None
        replica: replikv.Replica | None = None
        try:
            primary = replikv.Primary(store, listen=LOOPBACK, ship_interval=ship_interval)
            replica = replikv.Replica(
                str(replica_home / "replica"), primary=primary.address, name="lag"
            )
            wait_applied(replica, store.put(TABLE, "warm-up", {"i": 0}).lsn, 60, "lag warm-up")
            pool = make_rows(cfg.put_pool)
            records: list[list[tuple[int, float, float]]] = [[], []]
            observed: list[tuple[int, float]] = []
            stop = threading.Event()
            writers_done = threading.Event()
            errors: list[BaseException] = []
            polls = [0]

            def write(i: int) -> None:
                try:
                    put, out, n = store.put, records[i], len(pool)
                    clock = time.perf_counter
                    j = i
                    while not stop.is_set():
                        key, value = pool[j % n]
                        before = clock()
                        lsn = put(TABLE, key, value).lsn
                        out.append((lsn, before, clock()))
                        j += 2
                except BaseException as exc:
                    errors.append(exc)

            def watch(rep: replikv.Replica) -> None:
                try:
                    clock, sleep = time.perf_counter, time.sleep
                    last = rep.applied_lsn
                    give_up = math.inf
                    while True:
                        applied = rep.applied_lsn
                        now = clock()
                        polls[0] += 1
                        if applied != last:
                            observed.append((applied, now))
                            last = applied
                        if writers_done.is_set():
                            if applied >= store.last_lsn:
                                return
                            give_up = min(give_up, now + cfg.wait_s)
                            if now > give_up:
                                raise RuntimeError(f"the replica stopped at LSN {applied}")
                        sleep(cfg.poll_s)
                except BaseException as exc:
                    errors.append(exc)

            watcher = threading.Thread(target=watch, args=(replica,), daemon=True)
            threads = [threading.Thread(target=write, args=(i,), daemon=True) for i in (0, 1)]
            gc.collect()
            watcher.start()
            start = time.perf_counter()
            for t in threads:
                t.start()
            time.sleep(cfg.lag_s)
            stop.set()
            for t in threads:
                t.join(cfg.wait_s)
            stopped = time.perf_counter()
            seconds = stopped - start
            backlog = store.last_lsn - replica.applied_lsn
            writers_done.set()
            watcher.join(cfg.wait_s + 10)
            if watcher.is_alive() or any(t.is_alive() for t in threads):
                raise RuntimeError("lag: a thread did not stop in time")
            if errors:
                raise errors[0]
            if not same_tables(replica.store.checksum(), store.checksum()):
                raise AssertionError("lag: the replica's checksums differ from the primary's")
        finally:
            if replica is not None:
                replica.close()
            if primary is not None:
                primary.close()
            store.close()

    applied_lsns = [lsn for lsn, _ in observed]
    timeline: list[tuple[float, float]] = []  # (returned, lag ms)
    put_ms: list[float] = []
    early = 0
    for lsn, before, returned in (r for rs in records for r in rs):
        at = bisect.bisect_left(applied_lsns, lsn)
        lag = observed[at][1] - returned
        if lag <= 0:
            early += 1
        timeline.append((returned, max(0.0, lag) * 1e3))
        put_ms.append((returned - before) * 1e3)
    timeline.sort()
    third = max(1, len(timeline) // 3)
    p50s = [
        statistics.median(lag for _, lag in timeline[k * third : (k + 1) * third] or [(0, 0.0)])
        for k in range(3)
    ]
    lags = sorted(lag for _, lag in timeline)
    put_ms.sort()
    return LagResult(
        ship_interval,
        lags,
        put_ms,
        len(lags),
        seconds,
        early,
        polls[0],
        backlog,
        (observed[-1][1] - stopped) * 1e3 if backlog else 0.0,
        (p50s[0], p50s[1], p50s[2]),
    )


def bench_lag(base: Path, cfg: Config, report: Report) -> None:
    section(
        f"lag: 2 writer threads, durable puts for {cfg.lag_s:g} s, one replica in this "
        "process (one clock)"
    )
    print(
        "  lag of an entry = time the replica's applied_lsn was first seen >= its LSN\n"
        "  (a watcher thread polling every ~" + f"{cfg.poll_s * 1e6:.0f} us) - time its put "
        "returned in the writer thread\n"
        f"  the replica's store: on {filesystem_of(cfg.replica_dir or base)}"
    )
    for ship_interval in (0.0, DEFAULT_SHIP_INTERVAL):
        res = measure_lag(base, cfg, ship_interval)
        lags, puts = res.lags_ms, res.put_ms
        p50, p99, top = percentile(lags, 50), percentile(lags, 99), lags[-1]
        label = f"ship_interval={ship_interval:g}"
        show(
            f"replica lag, {label}",
            f"p50 {p50:.2f} ms, p90 {percentile(lags, 90):.2f} ms, p99 {p99:.2f} ms, "
            f"max {top:.2f} ms",
        )
        show(
            "  put latency on the primary",
            f"p50 {percentile(puts, 50):.2f} ms, p99 {percentile(puts, 99):.2f} ms, "
            f"{res.puts / res.seconds:,.0f} puts/s",
        )
        first, _, last = res.thirds_p50_ms
        growing = " (growing: the replica falls behind)" if last > 2 * max(first, 0.5) else ""
        show(
            "  p50 lag in the 1st / 2nd / 3rd third of the run",
            ", ".join(f"{v:.2f}" for v in res.thirds_p50_ms) + f" ms{growing}",
        )
        show(
            "  backlog when the writers stopped",
            f"{res.backlog:,} entries, applied {res.drain_ms:,.1f} ms later",
        )
        print(
            f"  ({res.puts:,} entries; {res.early:,} were applied before their put returned to "
            f"Python (lag 0); watcher polls: {res.polls / res.seconds:,.0f}/s)"
        )
        limit = (
            EAGER_LAG_P99_MS
            if ship_interval == 0
            else ship_interval * 1e3 + (INTERVAL_LAG_SLACK_MS)
        )
        report.add(
            Verdict(
                f"lag p99, {label}",
                f"p99 {p99:.2f} ms (p50 {p50:.2f}, max {top:.1f})",
                f"put itself: p50 {percentile(puts, 50):.2f} ms",
                p99 / limit,
                f"{p99 / limit:.2f}x limit",
                f"p99 <= {limit:g} ms",
                p99 <= limit,
            )
        )


# --------------------------------------------------------------------------------------
# 3. catch-up of N single-row entries through the log


def register_slot(store: replikv.Store, replica_path: Path, name: str, limit_s: float) -> None:
    """Connects a replica ``name`` once so that the primary holds a slot for it, then
    closes both: a replica that was set up and went away.

    Without a slot, a ``Primary`` drops at its first retention tick every log segment that no
    slot needs, and a new replica would be seeded by a snapshot instead of the log.
    """
    primary = replikv.Primary(store, listen=LOOPBACK)
    try:
        replica = replikv.Replica(str(replica_path), primary=primary.address, name=name)
        try:
            deadline = time.monotonic() + limit_s
            while not any(slot.name == name for slot in primary.slots()):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no slot for {name!r} after {limit_s:.0f} s")
                time.sleep(0.01)
        finally:
            replica.close()
    finally:
        primary.close()


def catch_up(
    store: replikv.Store, replica_path: Path, name: str, ship_interval: float, limit_s: float
) -> tuple[float, replikv.ReplicaStatus]:
    """Serves ``store`` with ``ship_interval`` until the replica ``name`` at ``replica_path``
    has applied its last LSN; returns (seconds, the replica's status). Checks checksums."""
    target = store.last_lsn
    primary = replikv.Primary(store, listen=LOOPBACK, ship_interval=ship_interval)
    replica: replikv.Replica | None = None
    try:
        gc.collect()
        start = time.perf_counter()
        replica = replikv.Replica(str(replica_path), primary=primary.address, name=name)
        wait_applied(replica, target, limit_s, f"catch-up (ship_interval={ship_interval:g})")
        seconds = time.perf_counter() - start
        status = replica.status()
        if status.snapshots:
            raise AssertionError("catch-up: the replica was seeded by a snapshot, not the log")
        if not same_tables(replica.store.checksum(), store.checksum()):
            raise AssertionError("catch-up: the replica's checksums differ from the primary's")
        return seconds, status
    finally:
        if replica is not None:
            replica.close()
        primary.close()


def create_entries(
    path: Path, replicas: dict[str, Path], n: int, cfg: Config, fixed: bool
) -> tuple[int, float]:
    """Registers the catch-up replicas' slots, then writes ``n`` single-row entries with
    ``fsync=False``; returns (entries, seconds).

    Unless ``fixed``, ``n`` shrinks (to whole chunks) when the first chunk shows that
    creating, replaying locally and catching up ``n`` entries would not fit the budget.
    """
    chunk, budget_s = cfg.chunk, cfg.catchup_budget_s
    segment = min(64 * MiB, max(MiB, n * 16))
    # The whole log stays: the default cap (64 MiB) would have the replicas seeded by a
    # snapshot, and this scenario measures catching up through the log.
    store = replikv.Store(str(path), fsync=False, segment_bytes=segment, retain_bytes=None)
    try:
        for name, replica_path in replicas.items():
            register_slot(store, replica_path, name, cfg.wait_s)
        start = time.perf_counter()
        lo = 0
        while lo < n:
            count = min(chunk, n - lo)
            put = store.put
            for key, value in make_rows(count, start=lo):
                put(TABLE, key, value)
            lo += count
            if lo == count and not fixed and lo < n:
                per_entry = (time.perf_counter() - start) / lo
                # creation, local replay, bulk load, 2 catch-ups (one ~1/2 the local rate)
                fits = int(budget_s / (per_entry * 5)) // chunk * chunk
                if fits < n:
                    n = max(chunk, fits)
                    print(
                        f"  entries: {n:,} (reduced to fit ~{budget_s:.0f} s: creating one took "
                        f"{per_entry * 1e6:.1f} us here; --entries N to override)",
                        flush=True,
                    )
        return n, time.perf_counter() - start
    finally:
        store.close()


def bench_catchup(base: Path, cfg: Config, report: Report, fixed: bool) -> None:
    section(
        f"catchup: {cfg.entries:,} single-row entries through the log onto a replica that was away"
    )
    print(
        "  (the replica connected once to the empty primary, so that the primary keeps a slot\n"
        "   and its log for it, then went away while the entries were written)"
    )
    with scratch(base, "catchup") as d:
        replicas = {CATCHUP_NAME: d / "replica", EAGER_NAME: d / "replica-eager"}
        n, create_s = create_entries(d / "primary", replicas, cfg.entries, cfg, fixed)
        entry_bytes = log_bytes_per_entry(d / "primary")

        # local: the same rows, one put (one log entry, one apply) each, into a fresh store
        local_s = 0.0
        local = replikv.Store(str(d / "local"), fsync=False)
        try:
            for lo, count in chunks(n, cfg.chunk):
                rows = make_rows(count, start=lo)
                put = local.put
                gc.collect()
                start = time.perf_counter()
                for key, value in rows:
                    put(TABLE, key, value)
                local_s += time.perf_counter() - start
                del rows
        finally:
            local.close()
        shutil.rmtree(d / "local")

        # context: the same rows as put_many batches (one entry per chunk), a bulk load
        bulk_s = timed_bulk_load(d / "bulk", n, cfg.chunk, fsync=False)

        store = replikv.Store(str(d / "primary"), fsync=True, retain_bytes=None)
        try:
            if store.last_lsn != n or store.oldest_lsn != 1:
                raise AssertionError(f"expected LSNs 1..{n}, got {store.oldest_lsn}..")
            limit = cfg.wait_s * 3
            catchup_s, status = catch_up(
                store, d / "replica", CATCHUP_NAME, DEFAULT_SHIP_INTERVAL, limit
            )
            eager_s, _ = catch_up(store, d / "replica-eager", EAGER_NAME, 0.0, limit)
        finally:
            store.close()

    def rate(seconds: float) -> str:
        text = f"{n / seconds:,.0f} entries/s"
        if entry_bytes is not None:
            text += f", {n * entry_bytes / seconds / 1e6:,.1f} MB/s"
        return text + f" ({seconds:,.2f} s)"

    show(f"catch-up (in-process), ship_interval={DEFAULT_SHIP_INTERVAL:g}", rate(catchup_s))
    show("local: one put per entry, fsync=False", rate(local_s))
    show("context: put_many of the same rows, fsync=False", rate(bulk_s))
    show("context: catch-up with ship_interval=0", rate(eager_s))
    size = f"{entry_bytes:.1f} B" if entry_bytes is not None else "n/a (no closed segment)"
    print(
        f"  (log bytes per entry measured from the primary's closed segments: {size}; "
        f"creating the {n:,} entries with fsync=False took {create_s:.1f} s;\n"
        f"   the replica ends at LSN {status.applied_lsn:,} with the primary's checksums, "
        f"{status.connections} connection, no snapshot)"
    )
    label = f"catch-up {n:,} entries"
    report.compare(
        f"{label} vs local put",
        n / catchup_s,
        n / local_s,
        "entries/s",
        "local put replay",
        CATCHUP_RATIO_TARGET,
        kind="higher",
    )
    report.compare(
        "catch-up, ship_interval=0 vs local",
        n / eager_s,
        n / local_s,
        "entries/s",
        "local put replay",
        None,
        kind="higher",
    )
    report.compare(
        f"{label} vs put_many", n / catchup_s, n / bulk_s, "rows/s", "put_many", None, kind="higher"
    )
    if entry_bytes is not None:
        report.info(
            f"{label}, MB/s",
            f"{n * entry_bytes / catchup_s / 1e6:,.1f} MB/s",
            f"{n * entry_bytes / local_s / 1e6:,.1f} MB/s (local put replay)",
        )


# --------------------------------------------------------------------------------------
# 4. snapshot of M keys


def bench_snapshot(base: Path, cfg: Config, report: Report) -> None:
    m, batch = cfg.snapshot_keys, cfg.snapshot_batch
    section(f"snapshot: a fresh replica seeded by a snapshot of {m:,} keys")
    with scratch(base, "snapshot") as d:
        # local: the same rows with put_many into a fresh (durable) store
        local_s = timed_bulk_load(d / "local", m, batch, fsync=True)

        store = replikv.Store(str(d / "primary"), fsync=True, segment_bytes=MiB)
        primary: replikv.Primary | None = None
        replica: replikv.Replica | None = None
        try:
            load_s = 0.0
            for lo, count in chunks(m, batch):
                rows = make_rows(count, start=lo)
                gc.collect()
                start = time.perf_counter()
                store.put_many(TABLE, rows)
                load_s += time.perf_counter() - start
                del rows
            entry_bytes = log_bytes_per_entry(d / "primary")
            row_bytes = entry_bytes / batch if entry_bytes is not None else None
            primary = replikv.Primary(
                store, listen=LOOPBACK, ship_interval=DEFAULT_SHIP_INTERVAL, retain_bytes=MiB
            )
            dropped = primary.retain()
            oldest, last = store.oldest_lsn, store.last_lsn
            if oldest <= 1:
                raise AssertionError("snapshot: the log was not truncated, no snapshot needed")
            gc.collect()
            start = time.perf_counter()
            replica = replikv.Replica(str(d / "replica"), primary=primary.address, name="snapshot")
            wait_applied(replica, last, cfg.wait_s, "snapshot")
            snapshot_s = time.perf_counter() - start
            # the snapshot counter is bumped just after the swap: wait for it, untimed
            deadline = time.monotonic() + 10
            while replica.status().snapshots < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            status = replica.status()
            equal = same_tables(replica.store.checksum(), store.checksum())
        finally:
            if replica is not None:
                replica.close()
            if primary is not None:
                primary.close()
            store.close()
    if status.snapshots < 1:
        raise AssertionError(f"snapshot: the replica reports no snapshot: {status}")
    if not equal:
        raise AssertionError("snapshot: the replica's checksums differ from the primary's")

    def rate(seconds: float) -> str:
        text = f"{m / seconds:,.0f} keys/s"
        if row_bytes is not None:
            text += f", {m * row_bytes / seconds / 1e6:,.1f} MB/s"
        return text + f" ({seconds:,.2f} s)"

    show("snapshot install on a fresh replica (in-process)", rate(snapshot_s))
    show(f"local: put_many in {batch // 1000}k batches, fresh store", rate(local_s))
    show("context: the primary's own load (same put_many)", rate(load_s))
    size = f"{row_bytes:.1f} B" if row_bytes is not None else "n/a"
    print(
        f"  (row bytes as encoded in the log, from the primary's segments: {size}; "
        f"primary.retain() dropped {dropped} segments,\n"
        f"   log kept LSNs {oldest}..{last}; replica: {status.snapshots} snapshot, "
        f"state {status.state}, checksums equal to the primary's)"
    )
    report.compare(
        f"snapshot {m:,} keys vs local put_many",
        m / snapshot_s,
        m / local_s,
        "keys/s",
        "local put_many",
        SNAPSHOT_RATIO_TARGET,
        kind="higher",
    )
    if row_bytes is not None:
        report.info(
            f"snapshot {m:,} keys, MB/s",
            f"{m * row_bytes / snapshot_s / 1e6:,.1f} MB/s",
            f"{m * row_bytes / local_s / 1e6:,.1f} MB/s (local put_many)",
        )


# --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = bench_parser(__doc__, SCENARIOS)
    parser.add_argument(
        "--entries", type=int, help="entries in the catch-up scenario (default 1,000,000)"
    )
    parser.add_argument(
        "--keys", type=int, help="keys in the snapshot scenario (default 1,000,000)"
    )
    parser.add_argument(
        "--replica-dir",
        type=Path,
        help="where the lag scenario's replica keeps its store (default: beside the "
        "primary's; on one disk its fsyncs queue with the primary's)",
    )
    args = parser.parse_args(argv)
    for name in ("entries", "keys"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = QUICK if args.quick else Config()
    if args.entries is not None:
        cfg = replace(cfg, entries=args.entries)
    if args.keys is not None:
        cfg = replace(cfg, snapshot_keys=args.keys)
    if args.replica_dir is not None:
        cfg = replace(cfg, replica_dir=args.replica_dir)

    print("$ " + shlex.join([sys.executable, *sys.argv]))
    base = Path(tempfile.mkdtemp(prefix="replikv-bench-repl-", dir=args.dir))
    sample = make_value(1234)
    print(
        f"replikv {replikv.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}"
    )
    print(f"temporary directory {base} on {filesystem_of(base)}")
    print(f"machine load at start: {machine_load()}")
    print(
        f"keys: 16-byte str (e.g. {make_key(1234)!r}); values: dicts of "
        f"{len(json.dumps(sample))} bytes as JSON, e.g. {json.dumps(sample)}; network: "
        "127.0.0.1 only"
    )
    mode = "quick" if args.quick else "default"
    print(f"mode: {mode}; scenarios: {args.only or ', '.join(SCENARIOS)}")
    benches: dict[str, Callable[[Path, Config, Report], None]] = {
        "throughput": bench_throughput,
        "lag": bench_lag,
        "catchup": lambda b, c, r: bench_catchup(b, c, r, fixed=args.entries is not None),
        "snapshot": bench_snapshot,
    }
    report = Report()
    started = time.perf_counter()
    try:
        for name in SCENARIOS:
            if args.only is None or args.only == name:
                benches[name](base, cfg, report)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report.print_summary(ISSUE)
    print(f"machine load at end: {machine_load()}")
    print(f"total time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
