"""The change feed as a DataFrame: ``store.changes().to_pandas()`` (one row per op, built in
Rust from the log) vs what a user writes without it, a Python loop over ``changes()`` into
``pd.DataFrame`` of dicts. Both give the same rows (checked).

Run it from the repository with the package installed (``replikv`` importable)::

    python benches/bench_feed.py            # 1M ops (10 entries of 100k rows), ~1 minute
    python benches/bench_feed.py --quick    # a fast smoke run

The ratio compares two figures of this run. This script never fails on a timing.
"""

from __future__ import annotations

import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd
import replikv
from bench_store import Report, bench_parser, fmt_runs, make_rows, scratch, section, show

SCENARIOS = ("to_pandas",)


@dataclass(frozen=True)
class Config:
    """Counts for one run; ``--quick`` shrinks them for a smoke run."""

    entries: int = 10
    rows_per_entry: int = 100_000
    rounds: int = 3


QUICK = Config(entries=4, rows_per_entry=5_000, rounds=2)


def python_loop(store: replikv.Store) -> pd.DataFrame:
    """The frame a user builds by iterating the feed in Python."""
    frame: pd.DataFrame = pd.DataFrame(
        [
            {
                "lsn": change.lsn,
                "epoch": change.epoch,
                "timestamp": change.timestamp,
                "table": op.table,
                "key": op.key,
                "op": op.kind,
                "value": op.value,
            }
            for change in store.changes()
            for op in change.ops
        ]
    )
    return frame


def timed_runs(fn: Callable[[], Any], rounds: int) -> tuple[list[float], Any]:
    """Seconds of each of `rounds` calls, and the last result."""
    seconds, result = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def bench_to_pandas(base: Path, cfg: Config, report: Report) -> None:
    ops = cfg.entries * cfg.rows_per_entry
    section(f"changes() of {ops:,} ops ({cfg.entries} put_many entries) into pandas")
    # The whole history stays (about 100 MB of log, above the default cap of 64 MiB).
    with scratch(base, "feed") as path, replikv.Store(str(path / "db"), retain_bytes=None) as store:
        for entry in range(cfg.entries):
            store.put_many("profiles", make_rows(cfg.rows_per_entry, entry * cfg.rows_per_entry))
        ours, frame = timed_runs(lambda: store.changes().to_pandas(), cfg.rounds)
        theirs, looped = timed_runs(lambda: python_loop(store), cfg.rounds)
        assert len(frame) == len(looped) == ops
        assert list(frame["key"]) == list(looped["key"])
        assert list(frame["value"]) == list(looped["value"])
        show("changes().to_pandas()", fmt_runs(ours, "s", 2))
        show("pd.DataFrame of dicts from a changes() loop", fmt_runs(theirs, "s", 2))
        report.compare(
            "feed to pandas",
            statistics.median(ours),
            statistics.median(theirs),
            "s",
            "Python loop",
            None,
            kind="faster",
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = bench_parser(__doc__, SCENARIOS).parse_args(sys.argv[1:] if argv is None else argv)
    cfg = QUICK if args.quick else Config()
    print("$ " + shlex.join([sys.executable, *sys.argv]))
    base = Path(tempfile.mkdtemp(prefix="replikv-bench-feed-", dir=args.dir))
    report = Report()
    try:
        bench_to_pandas(base, cfg, report)
    finally:
        base.rmdir()
    report.print_summary("issue 10")
    return 0


if __name__ == "__main__":
    sys.exit(main())
