"""``replikv ls``, ``get``, ``scan`` and ``changes``: looking into a store from a shell."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .._args import lsn, positive, seconds
from .._core import Change, LogTail, Store
from .._html import size_text
from .._store import Key
from .opening import USAGE, CommandError, is_store, not_a_store, open_store, run_command
from .render import RENDERING_HELP, to_json

KEY_TYPES = ("str", "int", "hex")
KEY_TYPE_HELP = (
    "how KEY is written: str (as is), int (a 64-bit integer, e.g. an event id) or hex "
    "(a bytes key, its bytes in hex)"
)
MISSING = object()


def add_commands(commands: Any) -> None:
    """Adds ``ls``, ``get``, ``scan`` and ``changes`` to the ``replikv`` subcommands."""
    ls = commands.add_parser(
        "ls",
        help="list a store's tables with their rows, its LSN and its disk use",
        description="List the tables of the store in DIR with their row counts, the store's "
        "last LSN and the bytes it takes on disk.",
    )
    ls.add_argument("dir", type=Path, metavar="DIR", help="the store's directory")
    ls.add_argument("--json", action="store_true", help="print the listing as one JSON object")
    ls.set_defaults(run=run_command("ls", _run_ls))

    get = commands.add_parser(
        "get",
        help="print one value as JSON",
        description="Print the value under KEY in TABLE as one line of JSON; exits 1 if "
        "there is none. An int key needs --key-type int: '42' and 42 are different keys.",
        epilog=RENDERING_HELP,
    )
    get.add_argument("dir", type=Path, metavar="DIR", help="the store's directory")
    get.add_argument("table", metavar="TABLE", help="the table")
    get.add_argument("key", metavar="KEY", help="the key, written as --key-type says")
    get.add_argument("--key-type", choices=KEY_TYPES, default="str", help=KEY_TYPE_HELP)
    get.set_defaults(run=run_command("get", _run_get))

    scan = commands.add_parser(
        "scan",
        help="print rows in key order as JSON lines",
        description='Print the rows of TABLE in key order, one {"key": ..., "value": ...} '
        "JSON object per line.",
        epilog=RENDERING_HELP,
    )
    scan.add_argument("dir", type=Path, metavar="DIR", help="the store's directory")
    scan.add_argument("table", metavar="TABLE", help="the table")
    scan.add_argument(
        "--prefix", metavar="P", help="only keys that start with P (default: every key)"
    )
    scan.add_argument(
        "--hex", action="store_true", help="P is a bytes prefix written in hex (default: text)"
    )
    scan.add_argument(
        "--limit", type=positive, metavar="N", help="at most N rows (default: no limit)"
    )
    scan.set_defaults(run=run_command("scan", _run_scan))

    changes = commands.add_parser(
        "changes",
        help="print change-log entries as JSON lines",
        description="Print the entries of the store's change log after LSN, one JSON object "
        "per line: lsn, epoch, timestamp and its ops (kind, table, key, and value for a put). "
        "With --follow it keeps looking for new entries until Ctrl-C (exit code 0). It "
        "reads the log files without opening the store: it takes no lock and writes "
        "nothing, so it also tails a store that a running process (a primary, a script) "
        "holds and writes. It prints only durable entries, in LSN order, each once; "
        "without --follow it ends at the last one it finds.",
        epilog=RENDERING_HELP,
    )
    changes.add_argument("dir", type=Path, metavar="DIR", help="the store's directory")
    changes.add_argument(
        "--since", type=lsn, default=0, metavar="LSN", help="entries after this LSN"
    )
    changes.add_argument(
        "--table",
        action="append",
        dest="tables",
        metavar="TABLE",
        help="only ops of this table; repeat for several (default: every table)",
    )
    changes.add_argument(
        "--limit", type=positive, metavar="N", help="at most N entries (default: no limit)"
    )
    changes.add_argument(
        "--follow", action="store_true", help="keep printing new entries until Ctrl-C"
    )
    changes.add_argument(
        "--poll", type=seconds, default=0.5, metavar="S", help="with --follow, look every S s"
    )
    changes.set_defaults(run=run_command("changes", _run_changes))


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def parse_key(text: str, key_type: str) -> Key:
    """A key given on the command line, typed as ``--key-type`` says."""
    try:
        if key_type == "int":
            return int(text)
        if key_type == "hex":
            return bytes.fromhex(text)
    except ValueError:
        kind = "an integer" if key_type == "int" else "hex digits"
        raise CommandError(f"--key-type {key_type}: {text!r} is not {kind}", USAGE) from None
    return text


def require_table(store: Store, table: str) -> None:
    """Raises a ``CommandError`` naming the tables there are if ``table`` is not one."""
    tables = store.tables()
    if table not in tables:
        there = ", ".join(tables) if tables else "none yet"
        raise CommandError(f"no table {table!r} in {store.path} (its tables: {there})")


def _run_ls(args: argparse.Namespace) -> int:
    with open_store(args.dir) as store:
        stats = store.stats()
        if args.json:
            print(to_json({**stats.to_dict(), "epoch": store.epoch, "read_only": store.read_only}))
            return 0
        role = ", read-only (a replica's store)" if store.read_only else ""
        print(
            f"{stats.path}: last LSN {stats.last_lsn:,}, log from LSN {stats.oldest_lsn:,}, "
            f"epoch {store.epoch}{role}"
        )
        print(
            f"disk: {size_text(stats.total_bytes)} (log {size_text(stats.log_bytes)}, tables "
            f"{size_text(stats.tables_bytes)}, other {size_text(stats.other_bytes)})"
        )
        rows = [("table", "rows"), *((name, f"{n:,}") for name, n in stats.tables.items())]
        if len(rows) == 1:
            print("no tables")
            return 0
        width = max(len(name) for name, _ in rows)
        count_width = max(len(count) for _, count in rows)
        for name, count in rows:
            print(f"  {name:<{width}}  {count:>{count_width}}")
    return 0


def _run_get(args: argparse.Namespace) -> int:
    key = parse_key(args.key, args.key_type)
    with open_store(args.dir) as store:
        require_table(store, args.table)
        value = store.get(args.table, key, MISSING)
        if value is MISSING:
            hint = ""
            as_int = args.key_type == "str" and _is_int(args.key)
            if as_int and store.contains(args.table, int(args.key)):
                hint = f" (there is an int key {int(args.key)}: add --key-type int)"
            raise CommandError(f"no key {key!r} in table {args.table!r}{hint}")
        print(to_json(value))
    return 0


def _run_scan(args: argparse.Namespace) -> int:
    prefix: str | bytes | None = args.prefix
    if args.hex and args.prefix is not None:
        prefix = _hex_prefix(args.prefix)
    with open_store(args.dir) as store:
        require_table(store, args.table)
        out = sys.stdout
        for key, value in store.scan(args.table, prefix=prefix, limit=args.limit):
            out.write(to_json({"key": key, "value": value}) + "\n")
    return 0


def _hex_prefix(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise CommandError(f"--hex: {text!r} is not hex digits", USAGE) from None


def change_as_dict(change: Change) -> dict[str, Any]:
    """One change-log entry as the JSON object ``replikv changes`` prints."""
    ops = []
    for op in change.ops:
        entry: dict[str, Any] = {"kind": op.kind, "table": op.table, "key": op.key}
        if op.kind == "put":
            entry["value"] = op.value
        ops.append(entry)
    return {"lsn": change.lsn, "epoch": change.epoch, "timestamp": change.timestamp, "ops": ops}


def _run_changes(args: argparse.Namespace) -> int:
    # The log is read without opening the store: a store another process holds reads the
    # same as a closed one, and this command never changes a store (no lock, no recovery).
    if not is_store(args.dir):
        raise not_a_store(args.dir)
    tail = LogTail(args.dir, since=args.since, tables=args.tables)
    left = args.limit
    try:
        while left != 0:
            changes = tail.read(limit=left)
            for change in changes:
                print(to_json(change_as_dict(change)))
            if left is not None:
                left -= len(changes)
            if not changes:
                if not args.follow:
                    return 0
                sys.stdout.flush()
                time.sleep(args.poll)
        return 0
    except KeyboardInterrupt:
        if args.follow:  # how following ends: not a failure
            return 0
        raise
