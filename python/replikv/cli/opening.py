"""Opening a store for a data command, and saying why it cannot be opened.

Every data command reports its failures the same way: ``replikv COMMAND: error: ...`` on
stderr, no traceback, and exit code 1 (2 for a usage error). A store that another process
holds is named with that process's pid and command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .._core import Store
from .._failure import describe
from ..exceptions import ReplikvError, StoreLockedError

#: Exit codes of the data commands.
FAILED = 1
USAGE = 2
INTERRUPTED = 130


class CommandError(Exception):
    """A failure a command reports in one line, with the exit code it ends with."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


def is_store(directory: Path) -> bool:
    """Whether ``directory`` holds a replikv store."""
    return (directory / "tables.redb").is_file()


def not_a_store(directory: Path) -> CommandError:
    """The error for ``directory``, which holds no store: missing, a file, or another
    directory."""
    if not directory.exists():
        return CommandError(f"{directory} does not exist")
    if not directory.is_dir():
        return CommandError(f"{directory} is not a directory, so not a replikv store")
    return CommandError(f"{directory} is not a replikv store (it has no tables.redb)")


@contextmanager
def open_store(directory: Path, *, create: bool = False) -> Iterator[Store]:
    """The store in ``directory``, closed afterwards; a missing or held store is a
    ``CommandError`` that says so (``create`` makes a new store where none is)."""
    if not create and not is_store(directory):
        raise not_a_store(directory)
    try:
        store = Store(directory)
    except StoreLockedError as locked:
        who = "another process" if locked.pid is None else f"process {locked.pid}"
        if locked.command is not None:
            who += f" ({locked.command})"
        raise CommandError(
            f"{directory} is open in {who}: stop it, or read the store through that process"
        ) from None
    with store:
        yield store


def run_command(name: str, body: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """``body`` as a command's ``run``: its failures become one line on stderr and an exit
    code, and Ctrl-C exits 130. A closed pipe (``| head``) is left to ``main()``, which
    ends every command quietly on one."""

    def run(args: argparse.Namespace) -> int:
        try:
            return body(args)
        except CommandError as failure:
            print(f"replikv {name}: error: {failure}", file=sys.stderr)
            return failure.code
        except BrokenPipeError:  # stdout's reader left: main() ends the command quietly
            raise
        except (ReplikvError, OSError, ValueError, TypeError, KeyError, OverflowError) as failure:
            print(f"replikv {name}: error: {describe(failure)}", file=sys.stderr)
            return FAILED
        except KeyboardInterrupt:
            print(f"replikv {name}: interrupted", file=sys.stderr)
            return INTERRUPTED

    return run
