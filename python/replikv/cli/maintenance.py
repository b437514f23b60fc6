"""``replikv scrub`` and ``replikv detach``: checking and freeing a store's directory."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from .._core import Store
from .._plain import tagged
from .opening import is_store, not_a_store, open_store, run_command


def add_commands(commands: Any) -> None:
    """Adds ``replikv scrub`` and ``replikv detach`` to the ``replikv`` subcommands."""
    scrub = commands.add_parser(
        "scrub",
        help="check every stored row of a store; exits 1 if anything is damaged",
        description=(
            "Read every row of the store in DIR, check each row's CRC and each table's row "
            "count and checksum against the stats the store keeps, and list what is damaged. "
            "Exits 0 if the store is sound, 1 if anything is damaged or the store cannot be "
            "opened. The store must not be open elsewhere (stop its primary or replica first)."
        ),
    )
    scrub.add_argument("dir", type=Path, metavar="DIR", help="the store's directory")
    scrub.add_argument("--json", action="store_true", help="print the report as JSON")
    scrub.add_argument("--quiet", action="store_true", help="no progress bar")
    scrub.set_defaults(run=run_command("scrub", _run_scrub))
    detach = commands.add_parser(
        "detach",
        help="make a replica's directory a standalone, writable store",
        description=(
            "A replica's directory opened as a plain Store is read-only. Detaching makes it a "
            "standalone store that accepts writes; its history then forks from the primary's, "
            "so it can never follow that primary again. Stop the replica first."
        ),
    )
    detach.add_argument("dir", type=Path, metavar="DIR", help="the replica's directory")
    detach.set_defaults(run=run_command("detach", _run_detach))


class _ReportedBelow(logging.Filter):
    """Drops the core's "scrub found damage" event for the store the command scrubs: the
    command reports that damage itself, on stdout, and the same news on stderr read as a
    second problem. It stays on the logger (the core hands its events to Python from a
    thread of its own, after the scrub returns); only that store's event matches."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.event = f"scrub found damage (path={directory}, "

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.event)


def _run_scrub(args: argparse.Namespace) -> int:
    with open_store(args.dir) as store:
        core = logging.getLogger("replikv.store.read")
        reported = _ReportedBelow(store.path)
        # Once per store: main() may run in one process many times (a program, the tests).
        if not any(getattr(kept, "event", None) == reported.event for kept in core.filters):
            core.addFilter(reported)
        report = store.scrub(progress=not (args.quiet or args.json))
    if args.json:
        print(json.dumps(report.to_dict(), default=tagged, indent=2))  # a bytes key as $base64
        return 0 if report.ok else 1
    tables = ", ".join(f"{name} {rows:,}" for name, rows in report.tables.items()) or "none"
    print(f"{args.dir}: {report.rows_checked:,} rows checked at LSN {report.lsn} ({tables})")
    if report.ok:
        print("no damage found")
        return 0
    print(f"{len(report.damaged)} problem(s):")
    for damage in report.damaged:
        where = "whole table" if damage.key is None else f"key {damage.key!r}"
        print(f"  {damage.table}, {where}: {damage.reason}")
    print(
        "To recover, re-seed the store from a replica (see the README, 'Damaged stores'); "
        "until then, reads of the damaged rows raise CorruptionError."
    )
    return 1


def _run_detach(args: argparse.Namespace) -> int:
    if not is_store(args.dir):
        raise not_a_store(args.dir)
    detached = Store.detach(args.dir)
    if detached:
        print(
            f"{args.dir} is now a standalone, writable store; it can never follow its primary again"
        )
    else:
        print(f"{args.dir} did not belong to a replica: nothing changed")
    return 0
