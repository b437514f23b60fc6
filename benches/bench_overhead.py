"""The cost of a change on the hot paths: this build next to an earlier one, in one run.

Issue 6 added a CRC-32C to every stored value (checked on every read) and a check that a
handle is used in the process that opened it; both must cost at most 3% on ``get`` and
``put``. This script measures ``get``, ``put`` without fsync (the CPU path, where such costs
show) and durable ``put`` (the disk's cost, for context) in child processes of two
interpreters, alternating between them round after round, and prints the ratio of medians::

    python benches/bench_overhead.py --baseline /path/to/other/venv/bin/python
    python benches/bench_overhead.py --quick --baseline ...     # a smoke run
    python benches/bench_overhead.py --instructions --baseline ...

Times on a shared, virtual machine move by several percent from run to run, more than the
3% to be shown. ``--instructions`` therefore also counts the CPU instructions of one call
with valgrind's callgrind, which gives the same count for the same build and input
whatever else the machine does: the calls are run twice in a child process, N1 and N2
times, and the difference of the two totals is divided by N2 - N1, so that start-up and
setup cancel out.

Make the baseline interpreter from an earlier commit, for example::

    git worktree add /tmp/replikv-base <commit>
    (cd /tmp/replikv-base && maturin build --release -o /tmp/replikv-base/wheels)
    python -m venv /tmp/base-venv && /tmp/base-venv/bin/pip install /tmp/replikv-base/wheels/*.whl

Without ``--baseline`` it measures this build alone. Timings are never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench_store import make_value

FIGURES = ("get_us", "put_nosync_us", "put_durable_us")
LABELS = {
    "get_us": "get (dict value, random key of 100k)",
    "put_nosync_us": "put, fsync=False (CPU path)",
    "put_durable_us": "put, durable (fdatasync)",
}


def child(directory: str, keys: int, gets: int, puts: int, durable_puts: int) -> None:
    """One measurement in this process (run under the interpreter being measured)."""
    import replikv

    base = Path(directory)
    rows = [(f"k{i:015d}", make_value(i)) for i in range(keys)]
    rng = random.Random(7)
    order = [rows[rng.randrange(keys)][0] for _ in range(gets)]
    figures: dict[str, float] = {}
    with replikv.Store(base / "get", fsync=False) as store:
        store.put_many("t", rows)
        get = store.get
        for key in order[:1000]:
            get("t", key)
        started = time.perf_counter()
        for key in order:
            get("t", key)
        figures["get_us"] = (time.perf_counter() - started) / gets * 1e6
    for name, fsync, count in (
        ("put_nosync_us", False, puts),
        ("put_durable_us", True, durable_puts),
    ):
        with replikv.Store(base / name, fsync=fsync) as store:
            put = store.put
            batch = rows[:count]
            started = time.perf_counter()
            for key, value in batch:
                put("t", key, value)
            figures[name] = (time.perf_counter() - started) / count * 1e6
    print(json.dumps(figures))


def count_child(kind: str, calls: int) -> None:
    """Setup, then `calls` calls of `kind` (run under callgrind by `instructions`)."""
    import replikv

    with tempfile.TemporaryDirectory(prefix="replikv-count-") as directory:
        rows = [(f"k{i:015d}", make_value(i)) for i in range(5000)]
        store = replikv.Store(Path(directory) / "db", fsync=False)
        store.put_many("t", rows)
        store.close()  # the rows are read from redb, as in a long-running process
        store = replikv.Store(Path(directory) / "db", fsync=False)
        rng = random.Random(7)
        if kind == "get":
            get = store.get
            for key in [rows[rng.randrange(len(rows))][0] for _ in range(calls)]:
                get("t", key)
        else:
            put = store.put
            for key, value in rows[:calls]:
                put("t", key, value)
        store.close()


def instructions(python: str, kind: str) -> float:
    """CPU instructions of one call of `kind`, counted by callgrind."""
    totals = []
    calls = (500, 4500)
    for n in calls:
        with tempfile.NamedTemporaryFile(prefix="callgrind-") as out:
            run = subprocess.run(
                [
                    *("valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}"),
                    *(python, __file__, "--count", kind, str(n)),
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=900,
                # str hashing is randomized per process: fix it, so counts repeat exactly.
                env={**os.environ, "PYTHONHASHSEED": "0"},
            )
        collected = [line for line in run.stderr.splitlines() if "Collected" in line]
        totals.append(int(collected[-1].split(":")[-1].strip()))
    return (totals[1] - totals[0]) / (calls[1] - calls[0])


def measure(python: str, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="replikv-overhead-", dir=args.dir) as directory:
        counts = ["20000", "50000", "20000", "300"] if args.quick else []
        counts = counts or ["100000", "400000", "50000", "1000"]
        out = subprocess.run(
            [python, __file__, "--child", directory, *counts],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--count":
        count_child(argv[1], int(argv[2]))
        return 0
    if argv and argv[0] == "--child":
        directory, *counts = argv[1:]
        keys, gets, puts, durable = (int(c) for c in counts)
        child(directory, keys, gets, puts, durable)
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--baseline", help="python of an earlier build to compare with")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    parser.add_argument("--dir", default="/tmp", help="where the stores go (default /tmp)")
    parser.add_argument(
        "--instructions", action="store_true", help="also count instructions with callgrind"
    )
    args = parser.parse_args(argv)
    print("$ " + shlex.join([sys.executable, *sys.argv]))
    pythons = {"this build": sys.executable}
    if args.baseline:
        pythons["baseline"] = args.baseline
    runs: dict[str, dict[str, list[float]]] = {
        name: {figure: [] for figure in FIGURES} for name in pythons
    }
    rounds = 1 if args.quick else args.rounds
    for round_number in range(rounds):
        order = list(pythons.items())
        # Alternate who goes first, so that a trend in the machine's load hits both.
        for name, python in order if round_number % 2 == 0 else order[::-1]:
            for figure, value in measure(python, args).items():
                runs[name][figure].append(value)
    print(f"{rounds} alternating round(s); medians in microseconds per call")
    header = f"{'':42} {'this build':>12}"
    if args.baseline:
        header += f" {'baseline':>12} {'ratio':>8}"
    print(header)
    for figure in FIGURES:
        ours = statistics.median(runs["this build"][figure])
        line = f"{LABELS[figure]:42} {ours:12.3f}"
        if args.baseline:
            theirs = statistics.median(runs["baseline"][figure])
            line += f" {theirs:12.3f} {ours / theirs:7.3f}x"
        print(line)
    if args.instructions:
        print("CPU instructions per call (callgrind; the same for the same build and input)")
        for kind in ("get", "put"):
            ours = instructions(sys.executable, kind)
            label = "get" if kind == "get" else "put (fsync=False)"
            line = f"{label:42} {ours:12,.0f}"
            if args.baseline:
                theirs = instructions(args.baseline, kind)
                line += f" {theirs:12,.0f} {ours / theirs:7.3f}x"
            print(line)
    if args.baseline:
        print("ratio = this build / baseline: 1.03x would be a 3% cost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
