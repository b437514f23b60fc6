"""The replication scenario of ``replikv bench``: a primary and one replica in this process,
over 127.0.0.1. sqlite3 has no replication, so the figures are compared with replikv's own
without a replica, on the same disk."""

from __future__ import annotations

import statistics
import time
from contextlib import ExitStack

from .._core import Primary, Replica, Store
from .._measure import Slice, interleaved
from .bench_report import Figure, Outcome
from .bench_scenarios import Run, check, putting, rate, slices_bar, step_percentile
from .bench_sides import TABLE, profile
from .opening import CommandError

#: How long a replica may take to connect or to catch up before the run gives up.
REPLICA_WAIT_S = 30.0
SYNC_TABLE = "consent"


def wait_streaming(primary: Primary, replica: Replica, store: Store) -> None:
    """Waits until the replica acknowledged a first write and sync writes can complete."""
    lsn = store.put(TABLE, "warm-up", profile(0), durability="async").lsn
    deadline = time.monotonic() + REPLICA_WAIT_S
    while primary.wait_for(lsn, replicas=1, timeout=0.5) < 1 or primary.sync_state != "ok":
        if time.monotonic() > deadline:
            status = replica.status()
            raise CommandError(
                f"the replica did not connect over 127.0.0.1 within {REPLICA_WAIT_S:g} s "
                f"({status.state}: {status.last_error or 'no error reported'})"
            )


def measure_replication(run: Run) -> Outcome:
    directory = run.part("replication")
    seconds = run.settings.seconds
    lags_ms: list[float] = []
    behind: list[int] = []
    with ExitStack() as stack:
        plain = stack.enter_context(Store(directory / "plain"))
        served = stack.enter_context(Store(directory / "primary"))
        primary = stack.enter_context(Primary(served, listen="127.0.0.1:0", quorum=1))
        replica = stack.enter_context(
            Replica(directory / "replica", primary=primary.address, name="bench")
        )
        wait_streaming(primary, replica, served)
        async_puts = putting(lambda k, v: served.put(TABLE, k, v, durability="async"), seconds)
        sync_puts = putting(lambda k, v: served.put(SYNC_TABLE, k, v, durability="sync"), seconds)

        def burst() -> Slice:
            timed_puts = async_puts()
            last = served.last_lsn
            behind.append(last - replica.applied_lsn)
            if not replica.wait_for(last, timeout=REPLICA_WAIT_S):
                raise CommandError(f"the replica did not catch up within {REPLICA_WAIT_S:g} s")
            lags_ms.append((time.perf_counter() - timed_puts.ended) * 1e3)
            return timed_puts

        timers = [
            ("no replica", putting(lambda k, v: plain.put(TABLE, k, v), seconds)),
            ("async", burst),
            ("sync", sync_puts),
        ]
        for _, warm_up in timers:
            warm_up()
        lags_ms.clear()
        behind.clear()
        with slices_bar("replication", len(timers) * run.settings.rounds) as step:
            slices = interleaved(timers, run.settings.rounds, step)
        check(replica.wait_for(served.last_lsn, timeout=REPLICA_WAIT_S), "the replica fell behind")
        check(
            replica.store.checksum() == served.checksum(),
            "the replica's tables differ from the primary's",
        )
    alone, sync = slices["no replica"], slices["sync"]
    return Outcome(
        "replication",
        "a primary and one replica in this process, over 127.0.0.1 (no sqlite3 equivalent: "
        "compared with replikv without a replica)",
        "no replica",
        [
            Figure("async put throughput", "puts/s", True, rate(slices["async"]), rate(alone)),
            *(
                Figure(
                    f"sync put p{p} latency",
                    "us",
                    False,
                    step_percentile(sync, p),
                    step_percentile(alone, p),
                )
                for p in (50, 99)
            ),
            Figure("replica lag after a burst", "ms", False, statistics.median(lags_ms)),
        ],
        [
            "no replica: a plain Store on the same disk, one put at a time; sync: "
            "durability='sync' with quorum=1, so each put also waits for the replica's "
            "fdatasync and ack",
            f"lag: from a {seconds:g} s burst's last async put returning until the replica "
            f"applied it (median over {len(lags_ms)} bursts; it was a median of "
            f"{statistics.median(behind):,.0f} entries behind when the burst ended; "
            "the primary ships async writes in batches every 0.05 s, its default ship_interval)",
            "the replica writes to the same disk: its fdatasyncs queue with the primary's, "
            "which a replica on another machine would not do",
        ],
        subject="with a replica",
    )
