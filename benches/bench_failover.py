"""Failover: how long a promotion takes, with a million entries in the store (one row
each: the log, the tables and every replica's log hold a million), from
``replica.promote()`` to the first sync write the new primary accepts; and how long a
planned switchover pauses writes.

Run it from the repository with the package installed (``replikv`` importable)::

    python benches/bench_failover.py            # 1M entries, a few minutes on 2 cores
    python benches/bench_failover.py --quick    # a fast smoke run

A primary with two replicas that answer each other (quorum 1 of 2, so a promotion must
reach both: members - quorum + 1 = 2) is loaded and let catch up, then closed. ``eu-1`` is
promoted at run time: it asks ``us-1`` to raise its epoch, and ``us-1`` then follows it;
a sync write then needs ``us-1``'s ack. The alternative is what a user would do without a
runtime promotion, measured in the same run on a third replica (one that does not fsync,
so it does not count as a member): stop it, detach its directory, reopen it as a store and
serve it.

Switchover: two stores hand the primary role back and forth 20 times under a steady write
load (a sync consent write and an async event per loop); the pause is what
``Switchover.paused`` reports (pause to new primary serving) and, as a writer sees it, the
longest gap between two writes that returned. The alternative is the manual way in the
same run: hold the writes, stop the primary, ``promote()`` the replica and write there.
Everything runs on 127.0.0.1; this script never fails on a timing.
"""

from __future__ import annotations

import functools
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# benches/ is not a package: make the sibling benchmarks importable
sys.path.insert(0, str(Path(__file__).resolve().parent))

import replikv
from bench_replication import LOOPBACK
from bench_store import Report, bench_parser, make_rows, scratch, section, show

SCENARIOS = ("promotion", "switchover")
PROMOTION_TARGET_S = 1.0
SWITCHOVER_TARGET_MS = 200.0


@dataclass(frozen=True)
class Config:
    """Counts for one run; ``--quick`` shrinks them for a smoke run."""

    rows: int = 1_000_000
    wait_s: float = 600.0
    switchovers: int = 20


QUICK = Config(rows=20_000, wait_s=60.0, switchovers=4)
#: Threads that load the promotion's store.
WRITERS = 4


def write_entries(store: replikv.Store, first: int, rows: int, step: int) -> None:
    """Commits rows `first`, `first + step`, ... below `rows`, one entry each."""
    for i in range(first, rows, step):
        key, value = make_rows(1, i)[0]
        store.put("subscribers", key, value)


def wait(what: str, check: Callable[[], bool], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.001)


def bench_promotion(base: Path, cfg: Config, report: Report) -> None:
    section(f"promotion: {cfg.rows:,} entries, primary closed, eu-1 promoted")
    with scratch(base, "failover") as d:
        store = replikv.Store(d / "primary")
        primary = replikv.Primary(store, listen=LOOPBACK, quorum=1, heartbeat_interval=0.05)
        eu1, us1 = (
            replikv.Replica(d / name, primary=primary.address, name=name, listen=LOOPBACK)
            for name in ("eu-1", "us-1")
        )
        twin = replikv.Replica(d / "twin", primary=primary.address, name="twin", fsync=False)
        # One entry per row, written by a few threads so that commits share fsyncs.
        writers = [
            threading.Thread(target=write_entries, args=(store, first, cfg.rows, WRITERS))
            for first in range(WRITERS)
        ]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        last = store.put("consent", "ana@example.com", True, durability="sync").lsn
        for replica in (eu1, us1, twin):
            if not replica.wait_for(last, timeout=cfg.wait_s):
                raise RuntimeError(f"{replica.name} did not catch up")
        wait("a heartbeat", lambda: len(eu1.status().primary_peers) == 2, cfg.wait_s)
        twin.close()
        primary.close()
        store.close()

        started = time.perf_counter()
        new = eu1.promote(quorum=1)
        promoted_s = time.perf_counter() - started
        wait("us-1 to register", lambda: new.sync_state == "ok", cfg.wait_s)
        new.store.put("consent", "bob@example.com", True, durability="sync")
        first_sync_s = time.perf_counter() - started
        show("promote()", f"{promoted_s * 1000:,.1f} ms ({new.promotion!r})")
        show("promote() to the first sync write accepted", f"{first_sync_s * 1000:,.1f} ms")

        started = time.perf_counter()
        replikv.Store.detach(d / "twin")
        reopened = replikv.Store(d / "twin")
        twin_primary = replikv.Primary(reopened, listen=LOOPBACK)
        reopen_s = time.perf_counter() - started
        show("detach + reopen + serve (the alternative)", f"{reopen_s * 1000:,.1f} ms")
        twin_primary.close()
        reopened.close()
        us1.close()
        eu1.close()
        new.close()
        new.store.close()
    report.compare(
        f"promote() vs detach + reopen + serve, {cfg.rows:,} entries",
        promoted_s * 1000,
        reopen_s * 1000,
        "ms",
        "detach + reopen",
        None,
        kind="at_most",
    )
    report.compare(
        f"promote() to the first sync write, {cfg.rows:,} entries",
        first_sync_s * 1000,
        PROMOTION_TARGET_S * 1000,
        "ms",
        "target",
        1.0,
        kind="at_most",
    )


class LoadWriter:
    """A steady load against whichever store is the primary's: each loop a sync consent
    write and an async event; a refused write is retried. Records when each write
    returned."""

    def __init__(self, store: replikv.Store) -> None:
        self.store = store
        self.returned: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                self.store.put("consent", f"user{i}", {"opted_in": True})
                self.store.put("events", i, {"type": "open"})
            except (replikv.ReplicationError, replikv.ReadOnlyError):
                # Paused (a switchover), read-only (the old primary, now a replica), or a
                # sync write cut off by the stopped primary (the alternative): retry.
                time.sleep(0.0005)
                continue
            self.returned.append(time.perf_counter())
            i += 1

    def wait_for_more(self, writes: int, limit_s: float) -> None:
        """Waits until `writes` more writes returned."""
        target = len(self.returned) + writes
        wait(f"{writes} more writes", lambda: len(self.returned) >= target, limit_s)

    def longest_gap_ms(self, start: float, end: float) -> float:
        """The longest time without a returned write that overlaps [start, end]."""
        times = [t for t in self.returned if t >= start] + [end]
        before = [t for t in self.returned if t < start]
        previous = before[-1] if before else start
        gap = 0.0
        for t in times:
            gap = max(gap, t - previous)
            previous = t
            if t > end:
                break
        return gap * 1000


def streaming(primary: replikv.Primary, replicas: int) -> bool:
    return sum(r.state == "streaming" for r in primary.status()) == replicas


def bench_switchover(base: Path, cfg: Config, report: Report) -> None:
    section(f"switchover: {cfg.switchovers} planned switchovers back and forth under load")
    with scratch(base, "switchover") as d:
        store = replikv.Store(d / "a")
        primary = replikv.Primary(store, listen=LOOPBACK, quorum=1, table_modes={"consent": "sync"})
        replica = replikv.Replica(d / "b", primary=primary.address, listen=LOOPBACK)
        wait("b to stream", lambda: streaming(primary, 1), cfg.wait_s)
        writer = LoadWriter(store)
        paused: list[float] = []
        seen: list[float] = []
        try:
            for _ in range(cfg.switchovers):
                writer.wait_for_more(50, cfg.wait_s)
                started = time.perf_counter()
                switched = primary.switchover(replica.name)
                new = replica.promoted
                assert new is not None
                writer.store = new.store
                writer.wait_for_more(1, 60)
                paused.append(switched.paused * 1000)
                seen.append(writer.longest_gap_ms(started, time.perf_counter()))
                primary, replica = new, switched.replica
                follows = functools.partial(streaming, primary, 1)
                wait("the old primary to follow", follows, cfg.wait_s)
            # The alternative, by hand: hold the writes, stop the primary, promote the
            # replica, write there (async, table_modes={} in place of the old primary's
            # sync consent table: nothing follows it yet, so this is a lower bound of the
            # manual way).
            heard = functools.partial(lambda r: r.status().primary_members == 1, replica)
            wait("a heartbeat", heard, cfg.wait_s)
            writer.stop.set()
            writer.thread.join(timeout=60)
            started = time.perf_counter()
            old_store = primary.store
            primary.close()
            new = replica.promote(table_modes={})
            new.store.put("consent", "after", {"opted_in": True})
            writer.returned.append(time.perf_counter())
            unplanned_ms = writer.longest_gap_ms(started, time.perf_counter())
        finally:
            writer.stop.set()
            writer.thread.join(timeout=60)
        paused.sort()
        seen.sort()
        p50 = statistics.median(paused)
        show("switchover pause p50 / max (Switchover.paused)", f"{p50:.1f} / {paused[-1]:.1f} ms")
        show(
            "longest write gap p50 / max (as the writer saw it)",
            f"{statistics.median(seen):.1f} / {seen[-1]:.1f} ms",
        )
        show("stop + promote() by hand (the alternative)", f"{unplanned_ms:.1f} ms")
        replica.close()
        new.close()
        new.store.close()
        old_store.close()
    report.compare(
        "switchover write pause p50 vs stop + promote() by hand",
        statistics.median(seen),
        unplanned_ms,
        "ms",
        "stop + promote",
        None,
        kind="at_most",
    )
    report.compare(
        f"switchover pause p50 over {cfg.switchovers}",
        p50,
        SWITCHOVER_TARGET_MS,
        "ms",
        "target",
        1.0,
        kind="at_most",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, SCENARIOS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    cfg = QUICK if args.quick else Config()
    report = Report()
    with scratch(Path(args.dir), "replikv-bench-failover") as base:
        if args.only in (None, "promotion"):
            bench_promotion(base, cfg, report)
        if args.only in (None, "switchover"):
            bench_switchover(base, cfg, report)
    report.print_summary("issue 8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
