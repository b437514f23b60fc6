"""``replikv verify``: are a primary's replicas equal to it, table by table?"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from . import _core
from ._args import seconds
from ._failure import describe
from ._output import reader_may_leave
from ._serve import TOKEN_ENV
from .exceptions import ReplikvError

EXIT_EQUAL = 0
EXIT_DIFFERENT = 1
EXIT_ERROR = 2
EXIT_INCONCLUSIVE = 3


def add_command(commands: Any) -> None:
    """Adds ``replikv verify`` to the ``replikv`` parser."""
    verify = commands.add_parser(
        "verify",
        help="compare a primary's replicas with it, table by table; exits 1 on a difference",
        description=(
            "Ask a running primary to compare each replica's per-table row counts and "
            "checksums with its own at an LSN both recorded (it gives the replicas 5 s to "
            "answer). Exits 0 if every replica that could be compared is equal, 1 if any "
            "differs, 2 if the primary cannot be asked, and 3 if no replica could be compared "
            "(none registered, none connected, or none caught up with what the primary still "
            "remembers): nothing was proved."
        ),
    )
    verify.add_argument("address", metavar="ADDR", help="the primary's host:port")
    verify.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"shared token (default: ${TOKEN_ENV}; without one, loopback peers only)",
    )
    verify.add_argument(
        "--timeout",
        type=seconds,
        default=10.0,
        metavar="S",
        help="seconds to wait for the report (default: 10)",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(run=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    try:
        report = _core.fetch_verify(args.address, token=args.token, timeout=args.timeout)
    except (ReplikvError, OSError) as problem:
        print(f"replikv verify: error: {describe(problem)}", file=sys.stderr)
        return EXIT_ERROR
    outcome = _outcome(report)
    # A reader that leaves (`| head -1`) changes nothing of what was found: the exit code
    # still says it, as scripts that test it under `set -o pipefail` expect.
    with reader_may_leave():
        print(json.dumps(report.to_dict(), indent=2) if args.json else report)
        if outcome == EXIT_INCONCLUSIVE and not args.json:
            print("nothing was compared: no replica is connected and caught up")
    return outcome


def _outcome(report: _core.VerifyReport) -> int:
    if not report.ok:
        return EXIT_DIFFERENT
    if report.compared == 0:
        return EXIT_INCONCLUSIVE
    return EXIT_EQUAL
