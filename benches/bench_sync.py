"""Synchronous writes: what a sync write costs, how writers share acks, and what sync
writers cost async ones.

Run it from the repository with the package installed (``replikv`` importable)::

    python benches/bench_sync.py            # every scenario, about a minute on 2 cores
    python benches/bench_sync.py --quick    # a fast smoke run
    python benches/bench_sync.py --replica-dir /dev/shm   # replicas on storage of their own
    python benches/bench_sync.py --ship-ahead   # Primary(ship_ahead=True)

Replicas run in child processes (``replikv.Replica``) and connect over 127.0.0.1. By
default their stores sit beside the primary's, on one disk: every replica's fsync then
queues with the primary's, which a deployment with replicas on other machines never sees.
``--replica-dir`` puts them elsewhere (another disk, or tmpfs standing in for one).

Every ratio compares two figures of this run, measured in interleaved slices on one disk; the
targets come from issue 7 ("Speed"). The physical path of a sync write (local commit +
a replica's durable append + a round trip) is measured in Rust by
``cargo bench --no-default-features --bench sync``. This script never fails on a timing.

Scenarios:
  latency   one durable put at a time: sync (quorum 1, one replica) vs async on the
            same primary, and vs a plain store (context)
  writers   sync writes from 16 threads vs from one thread (acks are cumulative: one ack
            releases every writer it covers)
  async     one async writer on a primary with two replicas vs on a plain store; and
            the same while a second thread does sync writes, vs while a second thread does
            plain writes on the plain store (two writers share the disk either way)
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

# benches/ is not a package: make the sibling benchmarks importable
sys.path.insert(0, str(Path(__file__).resolve().parent))

import replikv
from bench_replication import LOOPBACK, ChildReplica
from bench_store import (
    TABLE,
    Report,
    bench_parser,
    fmt_runs,
    make_key,
    scratch,
    section,
    show,
)
from replikv._measure import filesystem_of

SCENARIOS = ("latency", "writers", "async")
SYNC_TABLE = "consent"
WRITERS = 16
WRITERS_RATIO_TARGET = 5.0
ASYNC_RATIO_TARGET = 0.90


@dataclass(frozen=True)
class Config:
    """Counts and durations for one run; ``--quick`` shrinks them for a smoke run."""

    puts: int = 400
    rounds: int = 5
    slice_s: float = 1.0
    wait_s: float = 60.0
    #: Where the replicas keep their stores (``None``: beside the primary's).
    replica_dir: Path | None = None
    #: Ship sync writers' entries before the primary's fdatasync (``Primary(ship_ahead=)``).
    ship_ahead: bool = False


QUICK = Config(puts=40, rounds=2, slice_s=0.25)


@dataclass
class Served:
    """A primary whose replicas run in child processes."""

    store: replikv.Store
    primary: replikv.Primary
    replicas: list[ChildReplica]


@contextmanager
def served(base: Path, replicas: int, cfg: Config) -> Iterator[Served]:
    """A primary with ``replicas`` replicas registered (sync writes are accepted)."""
    with (
        scratch(base, "primary") as directory,
        scratch(cfg.replica_dir or base, "replicas") as replica_dir,
    ):
        store = replikv.Store(directory / "store")
        primary = replikv.Primary(store, listen=LOOPBACK, quorum=1, ship_ahead=cfg.ship_ahead)
        children = [
            ChildReplica(replica_dir / f"replica-{i}", primary.address, f"r{i}")
            for i in range(replicas)
        ]
        try:
            for child in children:
                child.wait_ready(cfg.wait_s)
            deadline = time.monotonic() + cfg.wait_s
            while primary.wait_for(store.put(TABLE, "warm-up", 0).lsn, replicas, 1.0) < replicas:
                if time.monotonic() > deadline:
                    raise RuntimeError("the replicas never caught up")
            yield Served(store, primary, children)
        finally:
            for child in children:
                child.stop()
            primary.close()
            store.close()


def latencies(put: Callable[[int], object], count: int) -> list[float]:
    """Seconds per call of ``put(i)`` for ``count`` calls."""
    samples = []
    for i in range(count):
        started = time.perf_counter()
        put(i)
        samples.append(time.perf_counter() - started)
    return samples


def bench_latency(base: Path, cfg: Config, report: Report) -> None:
    section("latency: one durable put at a time, sync (quorum 1) vs async")
    sync_us: list[float] = []
    async_us: list[float] = []
    local_us: list[float] = []
    with served(base, 1, cfg) as system, scratch(base, "plain") as plain_dir:
        plain = replikv.Store(plain_dir / "store")
        store = system.store
        for _ in range(cfg.rounds):
            for samples, put in (
                (sync_us, lambda i: store.put(SYNC_TABLE, make_key(i), i, durability="sync")),
                (async_us, lambda i: store.put(TABLE, make_key(i), i, durability="async")),
                (local_us, lambda i: plain.put(TABLE, make_key(i), i)),
            ):
                samples.append(statistics.median(latencies(put, cfg.puts)) * 1e6)
        plain.close()
    show("sync put, p50", fmt_runs(sync_us, "us"))
    show("async put on the same primary, p50", fmt_runs(async_us, "us"))
    show("put on a plain store, p50", fmt_runs(local_us, "us"))
    # A sync write pays the local commit, a replica's durable append and a round trip:
    # about two local commits on one disk.
    report.compare(
        "sync put vs async put (one replica, quorum 1)",
        statistics.median(sync_us),
        statistics.median(async_us),
        "us",
        "async put",
        None,
        kind="at_most",
    )


def sync_rate(store: replikv.Store, writers: int, seconds: float) -> float:
    """Sync writes per second from ``writers`` threads during ``seconds``."""
    counts = [0] * writers
    deadline = time.perf_counter() + seconds

    def write(index: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            store.put(SYNC_TABLE, make_key(index * 10_000_000 + i), i, durability="sync")
            i += 1
        counts[index] = i

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def bench_writers(base: Path, cfg: Config, report: Report) -> None:
    section(f"writers: sync writes from {WRITERS} threads vs one (one replica, quorum 1)")
    one: list[float] = []
    many: list[float] = []
    with served(base, 1, cfg) as system:
        for _ in range(cfg.rounds):
            one.append(sync_rate(system.store, 1, cfg.slice_s))
            many.append(sync_rate(system.store, WRITERS, cfg.slice_s))
    show("1 sync writer", fmt_runs(one, "writes/s", 0))
    show(f"{WRITERS} sync writers", fmt_runs(many, "writes/s", 0))
    report.compare(
        f"{WRITERS} sync writers vs 1",
        statistics.median(many),
        statistics.median(one),
        "writes/s",
        "1 writer",
        WRITERS_RATIO_TARGET,
        kind="higher",
    )


def async_rate(store: replikv.Store, seconds: float, row: int) -> tuple[float, int]:
    """Async durable puts per second from this thread; returns the rate and the next row."""
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        store.put(TABLE, make_key(row + done), done)
        done += 1
    return done / (time.perf_counter() - started), row + done


def second_writer(
    store: replikv.Store, durability: str | None, stop: threading.Event, done: list[int]
) -> None:
    """Writes to the sync table one at a time until ``stop`` is set, counting in ``done``."""
    while not stop.is_set():
        store.put(SYNC_TABLE, make_key(done[0]), done[0], durability=durability)
        done[0] += 1


def rate_beside(
    store: replikv.Store, durability: str | None, seconds: float, row: int
) -> tuple[float, float, int]:
    """``async_rate`` while a second thread writes with ``durability``; returns both
    writers' rates and the next row."""
    stop = threading.Event()
    done = [0]
    thread = threading.Thread(target=second_writer, args=(store, durability, stop, done))
    started = time.perf_counter()
    thread.start()
    try:
        rate, row = async_rate(store, seconds, row)
    finally:
        stop.set()
        thread.join()
    return rate, done[0] / (time.perf_counter() - started), row


def bench_async(base: Path, cfg: Config, report: Report) -> None:
    section("async: one async writer with two replicas, alone and beside a sync writer")
    alone: list[float] = []
    beside: list[float] = []
    plain_rates: list[float] = []
    plain_beside: list[float] = []
    sync_beside: list[float] = []
    local_beside: list[float] = []
    with served(base, 2, cfg) as system, scratch(base, "plain") as plain_dir:
        plain = replikv.Store(plain_dir / "store")
        row = 0
        for _ in range(cfg.rounds):
            rate, row = async_rate(plain, cfg.slice_s, row)
            plain_rates.append(rate)
            rate, row = async_rate(system.store, cfg.slice_s, row)
            alone.append(rate)
            rate, second, row = rate_beside(system.store, "sync", cfg.slice_s, row)
            beside.append(rate)
            sync_beside.append(second)
            rate, second, row = rate_beside(plain, None, cfg.slice_s, row)
            plain_beside.append(rate)
            local_beside.append(second)
        plain.close()
    show("async writer, plain store", fmt_runs(plain_rates, "puts/s", 0))
    show("async writer, two replicas", fmt_runs(alone, "puts/s", 0))
    show("async writer, two replicas + a sync writer", fmt_runs(beside, "puts/s", 0))
    show("async writer, plain store + a second writer", fmt_runs(plain_beside, "puts/s", 0))
    show("  the sync writer beside it", fmt_runs(sync_beside, "puts/s", 0))
    show("  the second local writer beside it", fmt_runs(local_beside, "puts/s", 0))
    report.compare(
        "async writer with two replicas vs none",
        statistics.median(alone),
        statistics.median(plain_rates),
        "puts/s",
        "no replica",
        ASYNC_RATIO_TARGET,
        kind="higher",
    )
    # A second writer slows the first on any store (they share the disk): the sync
    # writer's cost to async writers is measured against a second, local writer.
    report.compare(
        "async writer beside a sync writer (two replicas) vs beside a local writer",
        statistics.median(beside),
        statistics.median(plain_beside),
        "puts/s",
        "plain store, 2 writers",
        ASYNC_RATIO_TARGET,
        kind="higher",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, SCENARIOS)
    parser.add_argument(
        "--replica-dir",
        type=Path,
        help="where the replicas keep their stores (default: beside the primary's)",
    )
    parser.add_argument(
        "--ship-ahead",
        action="store_true",
        help="ship a sync write's entry while the primary's fdatasync runs "
        "(Primary(ship_ahead=True); default: off, as in Primary)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    cfg = replace(
        QUICK if args.quick else Config(), replica_dir=args.replica_dir, ship_ahead=args.ship_ahead
    )
    report = Report()
    benches: dict[str, Callable[[Path, Config, Report], None]] = {
        "latency": bench_latency,
        "writers": bench_writers,
        "async": bench_async,
    }
    with scratch(Path(args.dir), "replikv-bench-sync") as base:
        show("primary's file system", filesystem_of(base))
        show("replicas' file system", filesystem_of(cfg.replica_dir or base))
        for name in SCENARIOS:
            if args.only is None or args.only == name:
                benches[name](base, cfg, report)
    report.print_summary("issue 7")
    return 0


if __name__ == "__main__":
    sys.exit(main())
