"""Failover: how long a promotion takes, with a store of a million rows, from
``replica.promote()`` to the first sync write the new primary accepts.

Run it from the repository with the package installed (``replikv`` importable)::

    python benches/bench_failover.py            # 1M rows, about a minute on 2 cores
    python benches/bench_failover.py --quick    # a fast smoke run

A primary with two replicas that answer each other (quorum 1 of 2, so a promotion must
reach both: members - quorum + 1 = 2) is loaded and let catch up, then closed. ``eu-1`` is
promoted at run time: it asks ``us-1`` to raise its epoch, and ``us-1`` then follows it;
a sync write then needs ``us-1``'s ack. The alternative is what a user would do without a
runtime promotion, measured in the same run on a third replica (one that does not fsync,
so it does not count as a member): stop it, detach its directory, reopen it as a store and
serve it. Everything runs on 127.0.0.1; this script never fails on a timing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# benches/ is not a package: make the sibling benchmarks importable
sys.path.insert(0, str(Path(__file__).resolve().parent))

import replikv
from bench_replication import LOOPBACK
from bench_store import Report, bench_parser, make_rows, scratch, section, show

SCENARIOS = ("promotion",)
PROMOTION_TARGET_S = 1.0


@dataclass(frozen=True)
class Config:
    """Counts for one run; ``--quick`` shrinks them for a smoke run."""

    rows: int = 1_000_000
    batch: int = 10_000
    wait_s: float = 600.0


QUICK = Config(rows=20_000, batch=5_000, wait_s=60.0)


def wait(what: str, check: Callable[[], bool], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.001)


def bench_promotion(base: Path, cfg: Config, report: Report) -> None:
    section(f"promotion: a store of {cfg.rows:,} rows, primary closed, eu-1 promoted")
    with scratch(base, "failover") as d:
        store = replikv.Store(d / "primary")
        primary = replikv.Primary(store, listen=LOOPBACK, quorum=1, heartbeat_interval=0.05)
        eu1, us1 = (
            replikv.Replica(d / name, primary=primary.address, name=name, listen=LOOPBACK)
            for name in ("eu-1", "us-1")
        )
        twin = replikv.Replica(d / "twin", primary=primary.address, name="twin", fsync=False)
        for start in range(0, cfg.rows, cfg.batch):
            store.put_many("subscribers", make_rows(min(cfg.batch, cfg.rows - start), start))
        last = store.put("consent", "ana@example.com", True, durability="sync").lsn
        for replica in (eu1, us1, twin):
            if not replica.wait_for(last, timeout=cfg.wait_s):
                raise RuntimeError(f"{replica.name} did not catch up")
        wait("a heartbeat", lambda: len(eu1.status()["primary_peers"]) == 2, cfg.wait_s)
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
        f"promote() vs detach + reopen + serve, {cfg.rows:,} rows",
        promoted_s * 1000,
        reopen_s * 1000,
        "ms",
        "detach + reopen",
        None,
        kind="at_most",
    )
    report.compare(
        f"promote() to the first sync write, {cfg.rows:,} rows",
        first_sync_s * 1000,
        PROMOTION_TARGET_S * 1000,
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
        bench_promotion(base, cfg, report)
    report.print_summary("issue 8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
