"""The ``replikv`` command: one module per family of subcommands.

``demo`` tours the API; ``bench`` measures it on this machine's disk next to sqlite3;
``primary``, ``replica``, ``promote`` and friends run and operate a replicated deployment;
``ls``, ``get``, ``scan``, ``changes``, ``export`` and ``import`` look into a store and move
data in and out; ``scrub`` and ``detach`` check and free a store's directory.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from collections.abc import Callable

from .. import __version__
from .._cache_cli import add_command as add_cache_command
from .._operator import add_operator_commands
from .._output import reader_may_leave
from .._serve import add_commands
from .._verify import add_command as add_verify_command
from . import bench, data, demo, maintenance, transfer

#: The servers' operators want to see peers come and go; the demo narrates its own
#: failover, fork included (the rest show what may be wrong).
LOG_DEFAULTS = {"primary": "info", "replica": "info", "cache-node": "info", "demo": "off"}
LOG_LEVELS = ("info", "warning", "error", "off")


def main(argv: list[str] | None = None) -> int:
    """Runs the ``replikv`` command line; returns the process exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error argparse already reported
        return stop.code if isinstance(stop.code, int) else 2
    _tolerate_unencodable_output()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.CRITICAL + 1 if args.log_level == "off" else args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    command: Callable[[argparse.Namespace], int] = args.run
    with reader_may_leave():
        return command(args)
    return 0  # its reader went away (`| head`): what it read is all it asked for


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replikv",
        description="Replicated key-value stores for marketing data, on one durable change log.",
    )
    parser.add_argument("--version", action="version", version=f"replikv {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    demo.add_command(commands)
    bench.add_command(commands)
    add_commands(commands)
    add_operator_commands(commands)
    add_verify_command(commands)
    add_cache_command(commands)
    data.add_commands(commands)
    transfer.add_commands(commands)
    maintenance.add_commands(commands)
    for name, command in commands.choices.items():
        command.formatter_class = _DefaultsFormatter
        command.add_argument(
            "--log-level",
            choices=LOG_LEVELS,
            default=LOG_DEFAULTS.get(name, "warning"),
            help="the least severe of the core's events to print on stderr",
        )
    return parser


class _DefaultsFormatter(argparse.HelpFormatter):
    """Ends each option's help with its default, unless the help already names it, and
    keeps a description's paragraphs (split by a blank line) apart."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        fill = super()._fill_text
        return "\n\n".join(fill(paragraph, width, indent) for paragraph in text.split("\n\n"))

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default: " in text or not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        if action.required:
            return f"{text} (required)"
        if action.nargs == 0:  # a flag: off unless given
            return f"{text} (default: off)"
        if action.default is None:
            return text  # such options say in words what their absence means
        return f"{text} (default: %(default)s)"


def _tolerate_unencodable_output() -> None:
    # Names such as "Jürgen" must not crash the demo on a terminal that is not UTF-8.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
