"""The directory a ``replikv bench`` run writes into, and its removal whatever happens."""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .opening import USAGE, CommandError

#: Marks a directory as a bench run's, so that a later run may reuse what --keep left.
MARKER = ".replikv-bench"
#: Everything a run writes into its directory.
OURS = frozenset({MARKER, "put", "loaded", "replication"})


@dataclass
class Workspace:
    """The run's directory, and whether the directory itself is the run's to remove."""

    path: Path
    created: bool
    keep: bool

    @classmethod
    def prepare(cls, requested: Path | None, *, keep: bool) -> Workspace:
        """A new directory in the current one, or ``requested`` checked, made or emptied of
        an earlier run's files; refuses (exit code 2) a directory holding anything else."""
        if requested is None:
            try:
                made = tempfile.mkdtemp(prefix="replikv-bench-", dir=Path.cwd())
            except OSError as failure:
                raise CommandError(
                    f"cannot create a directory in the current directory ({failure.strerror}): "
                    "run it where you may write, or give --dir",
                    USAGE,
                ) from None
            workspace = cls(Path(made), created=True, keep=keep)
        elif requested.exists():
            workspace = cls(requested, created=False, keep=keep)
            workspace._clear_earlier_run()
        else:
            try:
                requested.mkdir()  # not its parents: a run removes only what it created
            except OSError as failure:
                raise CommandError(
                    f"cannot create --dir {requested}: {failure.strerror}", USAGE
                ) from None
            workspace = cls(requested, created=True, keep=keep)
        try:
            (workspace.path / MARKER).write_text("made by replikv bench: safe to delete\n")
        except OSError as failure:
            workspace.finish()
            raise CommandError(
                f"cannot write into {workspace.path}: {failure.strerror}", USAGE
            ) from None
        return workspace

    def _clear_earlier_run(self) -> None:
        """Empties a directory an earlier run kept; refuses one holding anything else."""
        if not self.path.is_dir():
            raise CommandError(f"--dir {self.path} exists and is not a directory", USAGE)
        try:
            names = sorted(entry.name for entry in self.path.iterdir())
        except OSError as failure:
            raise CommandError(
                f"cannot read --dir {self.path}: {failure.strerror}", USAGE
            ) from None
        foreign = [name for name in names if name not in OURS]
        if foreign or (names and MARKER not in names):
            listed = foreign or names
            shown = ", ".join(listed[:3]) + (", ..." if len(listed) > 3 else "")
            raise CommandError(
                f"--dir {self.path} holds files that are not replikv bench's ({shown}); "
                "give a new or empty directory",
                USAGE,
            )
        self._remove_ours()

    def _remove_ours(self) -> None:
        for name in OURS:
            path = self.path / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def finish(self) -> None:
        """Removes what the run created, unless it is to be kept."""
        if self.keep:
            return
        with _ctrl_c_ignored():
            if self.created:
                shutil.rmtree(self.path, ignore_errors=True)
            else:
                self._remove_ours()
        if self.created and self.path.exists():
            print(f"replikv bench: could not remove all of {self.path}", file=sys.stderr)


@contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    # A second Ctrl-C must not leave half the stores behind.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
