"""An operator's instructions to running processes: ``replikv switchover`` (hand a
primary's log to one of its replicas), ``replikv follow`` (re-point a replica or a
cache node) and ``replikv drop-slot`` (forget a replica that is gone for good)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ._args import seconds
from ._cache_cli import node_follow, speaks_first
from ._core import request_drop_slot, request_follow, request_switchover
from ._serve import TOKEN_ENV
from .cli.opening import run_command


def add_operator_commands(commands: Any) -> None:
    """Adds ``switchover``, ``follow`` and ``drop-slot`` to the ``replikv`` parser."""
    switchover = commands.add_parser(
        "switchover",
        help="hand a running primary's log to one of its replicas, with no loss",
        description=(
            "Ask the primary at ADDR (a `replikv primary` process) to hand over to its "
            "replica NAME (one started with --listen): writes pause at an exact LSN, NAME "
            "takes over as the primary of the next epoch on its --listen address, the "
            "other replicas follow it, and the old primary's process goes on as its "
            "replica. Prints the new primary's address; exits 1 if the switchover failed "
            "(the reason says whether anything changed)."
        ),
    )
    switchover.add_argument("address", metavar="ADDR", help="the primary's host:port")
    switchover.add_argument("--to", required=True, metavar="NAME", help="the replica's name")
    _asking(switchover, 40.0, "how long to wait in all")
    switchover.set_defaults(run=run_command("switchover", _run_switchover))

    follow = commands.add_parser(
        "follow",
        help="re-point a running replica or cache node at another primary",
        description=(
            "Tell the replica whose --listen address is ADDR (a `replikv replica` process), "
            "or the cache node listening at ADDR (a `replikv cache-node --follow` process), "
            "to follow the primary at PRIMARY from now on, continuing from its own "
            "position when their histories match (a replica handles a fork as its --resync "
            "says; a cache node flushes)."
        ),
    )
    follow.add_argument(
        "address", metavar="ADDR", help="the replica's --listen host:port, or the cache node's"
    )
    follow.add_argument("--primary", required=True, metavar="PRIMARY", help="host:port")
    _asking(follow, 5.0, "seconds to wait for an answer")
    follow.set_defaults(run=run_command("follow", _run_follow))

    drop = commands.add_parser(
        "drop-slot",
        help="make a running primary forget a replica that is gone for good",
        description=(
            "Ask the primary at ADDR to drop the slot of its replica NAME. The primary then "
            "no longer keeps its log for NAME (a slot holds back retention), and no longer "
            "counts NAME among the members that a sync write's quorum and a promotion are "
            "counted from: replicas that joined while NAME was away count from now on. Sync "
            "writes that only NAME acknowledged lose that guarantee. The replica must be "
            "stopped; if it connects again, it registers as a new member. `replikv status "
            "ADDR` lists the replicas a primary knows."
        ),
    )
    drop.add_argument("address", metavar="ADDR", help="the primary's host:port")
    drop.add_argument("name", metavar="NAME", help="the replica's name")
    _asking(drop, 5.0, "seconds to wait for an answer")
    drop.set_defaults(run=run_command("drop-slot", _run_drop_slot))


def _asking(command: argparse.ArgumentParser, timeout: float, timeout_help: str) -> None:
    """Adds what every request to a running process takes: the token, and a timeout."""
    token_help = f"shared token (default: ${TOKEN_ENV})"
    command.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=token_help)
    command.add_argument("--timeout", type=seconds, default=timeout, metavar="S", help=timeout_help)


def _run_switchover(args: argparse.Namespace) -> int:
    address = request_switchover(args.address, args.to, token=args.token, timeout=args.timeout)
    print(f"{args.to} is the primary now, at {address}")
    return 0


def _run_follow(args: argparse.Namespace) -> int:
    # A replica's member port speaks first (a challenge); a cache node waits.
    if speaks_first(args.address, args.timeout):
        request_follow(args.address, args.primary, token=args.token, timeout=args.timeout)
        what = "replica"
    else:
        node_follow(args.address, args.primary, args.token, args.timeout)
        what = "cache node"
    print(f"the {what} at {args.address} follows {args.primary} now")
    return 0


def _run_drop_slot(args: argparse.Namespace) -> int:
    status = request_drop_slot(args.address, args.name, token=args.token, timeout=args.timeout)
    left = ", ".join(info.name for info in status.replicas if info.kind == "replica") or "none"
    print(f"dropped the slot of {args.name}; the primary's replicas now: {left}")
    return 0
