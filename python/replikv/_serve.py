"""``replikv primary``, ``replikv replica`` and ``replikv status``: replication from a shell."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._args import address, seconds
from ._cache_cli import node_info, print_node_status, speaks_first
from ._core import (
    Primary,
    Replica,
    ReplicaInfo,
    Store,
    fetch_status,
    promote_stopped,
)
from ._failure import describe
from ._roles import run_roles, stops_on_sigterm
from .exceptions import ReplikvError, StoreLockedError

TOKEN_ENV = "REPLIKV_TOKEN"
#: The replica table's column widths under --status-every, where rows of later reports
#: must line up under a header printed once.
WIDTHS = (12, 8, 21, 10, 8, 10, 10, 8, 7, 11, 12)


def add_commands(commands: Any) -> None:
    """Adds the replication subcommands to the ``replikv`` parser."""
    token_help = f"shared token (default: ${TOKEN_ENV}; without one, loopback peers only)"
    primary = commands.add_parser(
        "primary",
        help="serve a store's change log to replicas",
        description="Open (or create) a store and serve it to replicas until interrupted. "
        "A start that fails (a bad option, a port in use) removes the store it created.",
    )
    primary.add_argument("--data", type=Path, required=True, metavar="DIR", help="store directory")
    primary.add_argument("--listen", default="127.0.0.1:7400", metavar="ADDR", help="host:port")
    primary.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=token_help)
    primary.add_argument(
        "--ship-interval", type=float, default=0.05, metavar="S", help="seconds between batches"
    )
    primary.add_argument(
        "--status-every",
        type=float,
        default=0.0,
        metavar="S",
        help="print the replicas every S s (default: 0, never)",
    )
    primary.add_argument(
        "--quorum", type=int, default=1, metavar="N", help="replicas that must hold a sync write"
    )
    primary.add_argument(
        "--sync-tables",
        default="",
        metavar="T1,T2",
        help="tables whose writes are sync by default (default: none; the others are async)",
    )
    primary.add_argument(
        "--sync-timeout", type=float, default=5.0, metavar="S", help="how long a sync write waits"
    )
    primary.add_argument(
        "--ship-ahead",
        action="store_true",
        help="ship a sync write's entry to replicas while this primary's fsync runs "
        "(lower sync latency; costs async writers beside sync ones some throughput)",
    )
    primary.add_argument(
        "--on-timeout",
        choices=("raise", "degrade"),
        default="raise",
        help="what a sync write does when its quorum is not reached in time",
    )
    primary.set_defaults(run=_run_primary)

    replica = commands.add_parser(
        "replica",
        help="follow a primary into a local read-only store",
        description=(
            "Follow a primary until interrupted; resumes where it stopped. A start that "
            "fails (a bad option, a port in use) removes the store it created."
        ),
    )
    replica.add_argument("--data", type=Path, required=True, metavar="DIR", help="store directory")
    replica.add_argument("--primary", required=True, metavar="ADDR", help="the primary's host:port")
    replica.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=token_help)
    replica.add_argument("--name", help="slot name on the primary (default: the directory's name)")
    replica.add_argument(
        "--listen",
        metavar="ADDR",
        help=(
            "host:port where other members ask this replica to raise its epoch when one of "
            "them is promoted (default: none; without it, a promotion cannot count this "
            "replica)"
        ),
    )
    replica.add_argument(
        "--status-every",
        type=float,
        default=1.0,
        metavar="S",
        help="print progress every S s (0: never)",
    )
    replica.add_argument(
        "--resync",
        action="store_true",
        help=(
            "if this store's history forks from the primary's, keep its local-only entries "
            "in a report file under DIR/diverged/ and re-seed (default: stop with the account)"
        ),
    )
    replica.set_defaults(run=_run_replica)

    promote = commands.add_parser(
        "promote",
        help="make a stopped replica's directory the primary of a new epoch",
        description=(
            "Promote a stopped replica (its primary is gone). A stopped replica reaches no "
            "other member, so by the rule a live promotion follows it must alone hold every "
            "acknowledged sync write and be a majority of the members: only a primary's one "
            "replica can (as the last heartbeats said). With more, start them with --listen "
            "and promote one that reaches the others (Replica.promote). Then serve it with "
            "`replikv primary --data DIR` and the options it prints: its old primary's "
            "quorum, sync tables and timeouts, as the last heartbeats said."
        ),
    )
    promote.add_argument("dir", type=Path, metavar="DIR", help="the stopped replica's directory")
    promote.add_argument(
        "--force",
        action="store_true",
        help="promote even when the rule is not met (acknowledged sync writes may be lost)",
    )
    promote.set_defaults(run=_run_promote)

    status = commands.add_parser(
        "status",
        help="show a primary's replicas and their lag, or a cache node's stats",
        description=(
            "Ask a running primary for its replicas' state and lag, or a cache node for "
            "its hit ratio, evictions, invalidations and log position."
        ),
    )
    status.add_argument(
        "address", metavar="ADDR", type=address, help="the primary's or cache node's host:port"
    )
    status.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=token_help)
    status.add_argument(
        "--timeout", type=seconds, default=5.0, metavar="S", help="seconds to wait for an answer"
    )
    status.set_defaults(run=_run_status)


@stops_on_sigterm
def _run_primary(args: argparse.Namespace) -> int:
    undo_creating = _undo_creating(args.data)
    try:
        store = Store(args.data)
    except (ReplikvError, OSError) as problem:
        # Nothing to undo: what is there may be another process's (a store it holds).
        print(f"replikv primary: error: {describe(problem)}", file=sys.stderr)
        return 1
    sync_tables = [table.strip() for table in args.sync_tables.split(",") if table.strip()]
    started = False
    try:
        with Primary(
            store,
            listen=args.listen,
            token=args.token,
            ship_interval=args.ship_interval,
            quorum=args.quorum,
            sync_timeout=args.sync_timeout,
            on_timeout=args.on_timeout,
            table_modes=dict.fromkeys(sync_tables, "sync"),
            ship_ahead=args.ship_ahead,
        ) as primary:
            started = True
            sync = f"sync tables {', '.join(sync_tables)}" if sync_tables else "no sync tables"
            if primary.ship_ahead:
                sync += ", shipping ahead"
            print(
                f"primary serving {store.path} on {primary.address} "
                f"(last LSN {store.last_lsn}, epoch {store.epoch}; quorum {args.quorum}, {sync})",
                flush=True,
            )
            header_shown = [False]
            failure = run_roles(
                primary,
                args.status_every,
                lambda serving: _print_replicas(
                    serving.status().replicas, header_shown=header_shown
                ),
                _replica_progress,
            )
    except BrokenPipeError:  # stdout's reader left: main() ends the command quietly
        raise
    except (ReplikvError, OSError, ValueError) as problem:
        print(f"replikv primary: error: {describe(problem)}", file=sys.stderr)
        return 1
    finally:
        store.close()
        if not started:  # a bad option or a port in use: it never served the store
            undo_creating()  # what this process created while it held the store's lock
    if failure is not None:
        print(f"replikv primary: error: {failure}", file=sys.stderr)
        return 1
    return 0


def _undo_creating(data: Path) -> Callable[[], None]:
    """Called before a store is opened at ``data``: a function that removes what opening it
    created, and only that, so that a start that fails leaves no stray store behind a
    mistyped ``--data``."""
    if (data / "tables.redb").is_file() or (data.exists() and not data.is_dir()):
        return lambda: None  # a store that was there stays; a file never becomes one
    if data.is_dir():  # empty, or Store() refuses it and creates nothing
        there = set(os.listdir(data))

        def remove_new_entries() -> None:
            for name in set(os.listdir(data)) - there:
                entry = data / name
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

        return remove_new_entries
    # Store() creates the missing parents too: remove from the outermost of them.
    outermost = data.absolute()
    while not outermost.parent.exists():
        outermost = outermost.parent
    return lambda: shutil.rmtree(outermost, ignore_errors=True)


def _replica_progress(replica: Replica) -> None:
    s = replica.status()
    print(
        f"{s.state:<12} applied LSN {s.applied_lsn:>10,}  "
        f"lag {s.lag_lsn:,} entries / {s.lag_seconds:.3f} s"
        + (f"  ({s.last_error})" if s.last_error else ""),
        flush=True,
    )


@stops_on_sigterm
def _run_replica(args: argparse.Namespace) -> int:
    undo_creating = _undo_creating(args.data)
    try:
        replica = Replica(
            args.data,
            primary=args.primary,
            token=args.token,
            name=args.name,
            on_diverge="resync" if args.resync else "stop",
            listen=args.listen,
        )
    except (ReplikvError, OSError, ValueError) as problem:
        # A store another process holds is that process's; any other failed start (a bad
        # option, a port in use) closed the store it opened: what it created goes.
        if not isinstance(problem, StoreLockedError):
            undo_creating()
        print(f"replikv replica: error: {describe(problem)}", file=sys.stderr)
        return 1
    try:
        with replica:
            print(f"replica {replica.name!r} following {args.primary} into {args.data}", flush=True)
            if replica.listen_address is not None:
                print(f"answering other members at {replica.listen_address}", flush=True)

            resyncs = [0]

            def progress(following: Replica) -> None:
                _replica_progress(following)
                s = following.status()
                last = s.last_resync
                if s.resyncs > resyncs[0] and last is not None:
                    resyncs[0] = s.resyncs
                    print(
                        f"resynced: {last['entries']:,} local-only entries from LSN "
                        f"{last['fork_lsn']:,} kept in {last['report']}",
                        flush=True,
                    )

            header_shown = [False]
            failure = run_roles(
                replica,
                args.status_every,
                lambda serving: _print_replicas(
                    serving.status().replicas, header_shown=header_shown
                ),
                progress,
            )
    except BrokenPipeError:  # stdout's reader left: main() ends the command quietly
        raise
    except (ReplikvError, OSError, ValueError) as problem:
        print(f"replikv replica: error: {describe(problem)}", file=sys.stderr)
        return 1
    if failure is not None:
        print(f"replikv replica: error: {failure}", file=sys.stderr)
        print(_recovery(failure, args.data), file=sys.stderr)
        return 1
    return 0


def _recovery(failure: str, data: Path) -> str:
    """What to do about a replica that stopped following for good."""
    if failure.startswith("diverged"):
        return (
            f"{data} holds a history that is not the primary's, so it can never follow it. "
            "To recover, start the replica again with --resync: it keeps the entries only "
            f"it holds in a report file under {data}/diverged/ (replikv.read_diverged(path) "
            "reads it) and re-seeds from the primary:\n"
            f"  replikv replica --data {data} --resync ..."
        )
    if failure.startswith("authentication"):
        return "Check that the replica's --token (or $REPLIKV_TOKEN) is the primary's."
    return "The replica cannot follow this primary; see the error above."


def _run_promote(args: argparse.Namespace) -> int:
    if not (args.dir / "tables.redb").is_file():
        print(f"replikv promote: error: no replikv store at {args.dir}", file=sys.stderr)
        return 1
    try:
        promotion = promote_stopped(args.dir, force=args.force)
    except (ReplikvError, OSError) as failure:
        print(f"replikv promote: error: {describe(failure)}", file=sys.stderr)
        return 1
    print(f"{args.dir} promoted: {promotion!r}")
    flags, unsaid = _primary_flags(promotion.settings)
    print(f"serve it as its old primary was served: replikv primary --data {args.dir}{flags}")
    if unsaid:
        print(
            f"  (no option says {unsaid}: serve it from Python, "
            "Primary(Store(DIR), **promotion.settings), to keep them)"
        )
    return 0


def _primary_flags(settings: dict[str, Any] | None) -> tuple[str, str]:
    """The ``replikv primary`` options that serve with ``settings`` (the old primary's, as
    a promotion reports them; none when unknown), and the settings no option says."""
    if settings is None:
        return "", ""
    defaults: dict[str, Any] = {
        "quorum": 1,
        "sync_timeout": 5.0,
        "on_timeout": "raise",
        "ship_interval": 0.05,
    }
    # repr() of a float keeps every digit (":g" would round 1234.567 to 1234.57).
    flags = [
        f"--{name.replace('_', '-')} {value if isinstance(value, str) else repr(value)}"
        for name, default in defaults.items()
        if (value := settings[name]) != default
    ]
    sync_tables = sorted(t for t, mode in settings["table_modes"].items() if mode == "sync")
    if sync_tables:
        flags.append(f"--sync-tables {','.join(sync_tables)}")
    if settings["ship_ahead"]:
        flags.append("--ship-ahead")
    # What no option of `replikv primary` says, but a differing setting.
    unsaid_defaults: dict[str, Any] = {
        "default_durability": "async",
        "max_batch_bytes": 4 << 20,
        "heartbeat_interval": 0.5,
        "retain_bytes": None,
        "retain_seconds": None,
    }
    unsaid = [
        f"{name}={settings[name]!r}"
        for name, default in unsaid_defaults.items()
        if settings[name] != default
    ]
    return "".join(f" {flag}" for flag in flags), ", ".join(unsaid)


def _run_status(args: argparse.Namespace) -> int:
    try:
        if not speaks_first(args.address, args.timeout):
            print_node_status(args.address, node_info(args.address, args.token, args.timeout))
            return 0
        report = fetch_status(args.address, token=args.token, timeout=args.timeout)
    except BrokenPipeError:  # stdout's reader left: main() ends the command quietly
        raise
    except (ReplikvError, OSError) as problem:
        print(f"replikv status: error: {describe(problem)}", file=sys.stderr)
        return 1
    print(
        f"primary {args.address}: last LSN {report.last_lsn:,}, epoch {report.epoch}, "
        f"{report.rejected} refused connection(s), sync writes {report.sync_state}"
    )
    _print_replicas(report.replicas)
    return 0


def _print_replicas(replicas: list[ReplicaInfo], *, header_shown: list[bool] | None = None) -> None:
    """Prints the replicas as a table. With ``header_shown`` (one flag shared by the periodic
    reports of ``--status-every``), the header is printed once and the columns keep fixed
    widths so that later reports line up under it."""
    if not replicas:
        print("  no replica has connected")
        return
    header = (
        "name",
        "kind",
        "address",
        "state",
        "sync",
        "sent",
        "acked",
        "lag",
        "lag s",
        "lag bytes",
        "last seen",
    )
    rows = [header]
    now = dt.datetime.now(dt.timezone.utc)
    for r in replicas:
        if r.last_seen is None:  # not heard from since the primary started (or no valid time)
            seen = "unknown"
        else:
            seen = f"{(now - r.last_seen).total_seconds():.1f} s ago"
        rows.append(
            (
                r.name,
                r.kind,
                r.address,
                r.state,
                r.sync_state,
                f"{r.sent_lsn:,}",
                f"{r.acked_lsn:,}",
                f"{r.lag_lsn:,}",
                f"{r.lag_seconds:.3f}",
                f"{r.lag_bytes:,}",
                seen,
            )
        )
    if header_shown is None:
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    else:
        widths = [max(len(name), minimum) for name, minimum in zip(header, WIDTHS, strict=True)]
        if header_shown[0]:
            rows = rows[1:]
        header_shown[0] = True
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
