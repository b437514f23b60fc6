"""Child processes of the tests: a replica in a process of its own that a test kills or
freezes, reading what a child wrote after the test has read its first lines, and children
that take Ctrl-C as from a terminal, and ``replikv`` commands whose reader has gone away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPLICA_CHILD = Path(__file__).with_name("replica_child.py")


@contextmanager
def replica_child(directory: Path, primary: str) -> Iterator[subprocess.Popen[str]]:
    """A replica of ``primary`` in ``directory``, in a child process (``replica_child.py``),
    once it says it is ready; killed with SIGKILL (and waited for) when the block ends."""
    with subprocess.Popen(
        [sys.executable, str(REPLICA_CHILD), str(directory), primary],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().startswith("ready")
            yield child
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)


def ctrl_c_as_from_a_terminal() -> None:
    """A ``preexec_fn`` for a child a test sends SIGINT: it takes it as from a terminal. A
    suite run as a background job (as CI may run it) has SIGINT ignored, which a child
    inherits; Python then installs no handler, and the child would never see Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def rest_of_output(child: subprocess.Popen[str], timeout: float = 30.0) -> tuple[str, str]:
    """Waits for ``child`` to end, then returns the rest of its stdout and its stderr, and
    closes them (as ``communicate()`` does). For a child killed or told to stop that writes
    little more: one that fills a pipe (64 KiB) after the last read would never end.

    Read through the same file objects as the ``readline()`` calls before: those read ahead
    (8 KiB at a time) and keep what follows the line they return. ``communicate()`` reads
    the pipes themselves and misses it: the lines kept are lost, and the first line it
    reads starts mid-line (the tail of ``"2233 2232"`` parses as LSN 233, write 2232).
    """
    child.wait(timeout=timeout)
    assert child.stdout is not None
    with child.stdout:
        out = child.stdout.read()
    if child.stderr is None:
        return out, ""
    with child.stderr:
        return out, child.stderr.read()


def into_a_closed_pipe(
    *args: str, buffered: bool, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m replikv ARGS`` with its stdout a pipe nobody reads any more, as in
    ``replikv ... | head -1`` once ``head`` has its line; returns its exit code and stderr.
    ``buffered`` is stdout's usual buffering into a pipe; otherwise every write is
    flushed at once (``PYTHONUNBUFFERED``), and fails then."""
    environment = dict(os.environ if env is None else env)
    environment.pop("PYTHONUNBUFFERED", None)
    if not buffered:
        environment["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "replikv", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
            timeout=timeout,
            check=False,
        )
    finally:
        os.close(write_end)
