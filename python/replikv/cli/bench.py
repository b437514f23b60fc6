"""``replikv bench``: what replikv does on this machine's disk, next to sqlite3, measured in
the same run and shown as ratios.

Honesty rules: the same data on both sides, the same durability (every write returns only
once a crash cannot take it back), the two sides timed in turns of short slices so that a
noisy neighbour slows both alike, and medians over the slices. The stores go into a new
directory in the current directory by default, not into /tmp: /tmp is often tmpfs, where an
fsync costs nothing and durable figures lie.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .. import __version__
from .._args import positive, seconds
from .._measure import Mount, machine_load, mount_of
from .bench_replication import measure_replication
from .bench_report import Outcome, outcomes_to_dict, render_table
from .bench_scenarios import Run, Settings, measure_bulk, measure_get, measure_put, measure_scan
from .bench_sides import REPLIKV_DURABILITY, SQLITE_DURABILITY, profile
from .bench_workspace import Workspace
from .opening import run_command

DEFAULTS = Settings(rows=100_000, seconds=0.5, rounds=5, loads=3)
QUICK = Settings(rows=2_000, seconds=0.1, rounds=3, loads=2)

#: The scenarios, in the order they run.
SCENARIOS: dict[str, Callable[[Run], Outcome]] = {
    "put": measure_put,
    "bulk": measure_bulk,
    "get": measure_get,
    "scan": measure_scan,
    "replication": measure_replication,
}

DESCRIPTION = (
    "Measure replikv on this machine's disk next to sqlite3 (from Python's standard "
    "library), in the same run, and print each figure side by side with the ratio. The "
    "durability is equal on both sides: replikv with fsync=True (its default: a put returns "
    "once its log record is fdatasync'ed), sqlite3 in WAL mode with synchronous=FULL (a "
    "commit returns once its WAL is fsync'ed). Both store the same profiles (six-field "
    "dicts keyed by email; sqlite3 as json.dumps text, decoded again with json.loads). The "
    "two sides run in turns of short timed slices, the order rotated every round, so a "
    "noisy neighbour slows both alike; rates are medians over the slices. With the defaults "
    "the whole run takes about 30 s; --quick takes a few seconds."
    "\n\n"
    "put: one durable put at a time vs one INSERT OR REPLACE per commit: puts/s, p50 and "
    "p99 latency."
    "\n\n"
    "bulk: put_many of --rows profiles in one call vs executemany in one transaction: rows/s."
    "\n\n"
    "get: random point reads of the loaded profiles vs SELECT ... WHERE key = ?: gets/s."
    "\n\n"
    "scan: a full read of the loaded table: rows/s."
    "\n\n"
    "replication: a Primary and a Replica in this process over 127.0.0.1 (sqlite3 has no "
    "equivalent: compared with replikv without a replica instead): async puts/s with the "
    "replica attached, a durability='sync' put's latency (quorum 1), and the replica's lag "
    "after a burst."
    "\n\n"
    "Progress goes to stderr, results to stdout. Everything the run creates is removed at "
    "the end, also after Ctrl-C or an error, unless --keep is given."
)


def add_command(commands: Any) -> None:
    """Adds ``replikv bench`` to the ``replikv`` subcommands."""
    bench = commands.add_parser(
        "bench",
        help="measure replikv on this machine's disk next to sqlite3, durable alike, as ratios",
        description=DESCRIPTION,
    )
    bench.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help=(
            "where the stores go: a new or empty directory, or one an earlier --keep run left "
            "(default: a new directory in the current one; not /tmp, often tmpfs, where "
            "fsync is free)"
        ),
    )
    bench.add_argument(
        "--rows",
        type=positive,
        metavar="N",
        help=f"profiles in the bulk load, get and scan (default: {DEFAULTS.rows:,}; "
        f"{QUICK.rows:,} with --quick)",
    )
    bench.add_argument(
        "--seconds",
        type=seconds,
        metavar="S",
        help=f"length of each timed slice (default: {DEFAULTS.seconds:g}; {QUICK.seconds:g} "
        f"with --quick; {DEFAULTS.rounds} slices per side and scenario, {QUICK.rounds} with "
        "--quick)",
    )
    bench.add_argument(
        "--quick", action="store_true", help="a smoke run of a few seconds; rough figures"
    )
    bench.add_argument(
        "--only",
        nargs="+",
        choices=list(SCENARIOS),
        metavar="SCENARIO",
        help=f"run only these scenarios, of: {', '.join(SCENARIOS)} (default: all)",
    )
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.add_argument(
        "--keep", action="store_true", help="keep the stores and databases, and say where"
    )
    bench.set_defaults(run=run_command("bench", _run_bench))


def _settings(args: argparse.Namespace) -> Settings:
    chosen = QUICK if args.quick else DEFAULTS
    if args.rows is not None:
        chosen = replace(chosen, rows=args.rows)
    if args.seconds is not None:
        chosen = replace(chosen, seconds=args.seconds)
    return chosen


def _run_bench(args: argparse.Namespace) -> int:
    settings = _settings(args)
    names = [name for name in SCENARIOS if args.only is None or name in args.only]
    workspace = Workspace.prepare(args.dir, keep=args.keep)
    try:
        mount = mount_of(workspace.path)
        where = "unknown file system" if mount is None else f"{mount.kind}, {mount.device}"
        print(
            f"replikv bench: {', '.join(names)} in {workspace.path} ({where})",
            file=sys.stderr,
            flush=True,
        )
        if mount is not None and mount.in_memory:
            print(f"replikv bench: warning: {_in_memory(mount)}", file=sys.stderr, flush=True)
        load_before = machine_load()
        run = Run(settings, workspace.path)
        outcomes = [SCENARIOS[name](run) for name in names]
    finally:
        workspace.finish()
    context = _Context(workspace, mount, settings, bool(args.quick), load_before, machine_load())
    if args.json:
        print(json.dumps(context.to_dict(outcomes), indent=2))
    else:
        print("\n".join(context.header() + render_table(outcomes)))
    return 0


def _in_memory(mount: Mount) -> str:
    return (
        f"the directory is on {mount.kind} (memory): an fsync costs nothing there, so the "
        "durable figures say nothing about a disk; give --dir on the disk you mean"
    )


@dataclass(frozen=True)
class _Context:
    """What the figures depend on: the machine, the disk, the settings."""

    workspace: Workspace
    mount: Mount | None
    settings: Settings
    quick: bool
    load_before: str
    load_after: str

    def header(self) -> list[str]:
        where = (
            "unknown file system"
            if self.mount is None
            else f"{self.mount.kind} on {self.mount.device}, mounted at {self.mount.point}"
        )
        fate = f"kept: {self.workspace.path}" if self.workspace.keep else "removed"
        sample = json.dumps(profile(0))
        lines = [
            f"replikv bench: replikv {__version__} vs sqlite3 {sqlite3.sqlite_version}, "
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}",
            f"directory: {self.workspace.path} ({where}; {fate})",
        ]
        if self.mount is not None and self.mount.in_memory:
            lines.append(f"WARNING: {_in_memory(self.mount)}")
        lines += [
            "durability, equal on both sides:",
            f"  replikv: {REPLIKV_DURABILITY}",
            f"  sqlite3: {SQLITE_DURABILITY}",
            f"data: profiles of six fields keyed by email, {len(sample)} bytes as JSON, "
            f"e.g. {sample}",
            f"method: {self.settings.rounds} timed slices of {self.settings.seconds:g} s per side "
            "and scenario, the sides taking turns (order rotated each round) so a noisy "
            "neighbour slows both alike; rates are medians over the slices",
            f"machine load: {self.load_before} at the start; {self.load_after} at the end",
        ]
        if self.quick:
            lines.append("--quick: a smoke run with few rows and short slices; rough figures")
        return lines

    def to_dict(self, outcomes: list[Outcome]) -> dict[str, Any]:
        return {
            "versions": {
                "replikv": __version__,
                "sqlite3": sqlite3.sqlite_version,
                "python": platform.python_version(),
            },
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "directory": str(self.workspace.path),
            "kept": self.workspace.keep,
            "filesystem": None if self.mount is None else asdict(self.mount),
            "in_memory": self.mount is not None and self.mount.in_memory,
            "durability": {"replikv": REPLIKV_DURABILITY, "sqlite3": SQLITE_DURABILITY},
            "settings": {**asdict(self.settings), "quick": self.quick},
            "machine_load": {"start": self.load_before, "end": self.load_after},
            "scenarios": outcomes_to_dict(outcomes),
        }
