"""Standard output whose reader may go away, as ``head`` does in ``replikv verify | head -1``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def reader_may_leave() -> Iterator[None]:
    """Ends the block quietly if stdout's reader has gone away: the rest of the output is
    dropped, with no traceback and no error message.

    Code inside that reports ``OSError``s itself must let ``BrokenPipeError`` through.
    """
    try:
        yield
        # What is still buffered would fail in the interpreter's last flush instead, with
        # "Exception ignored" on stderr and exit code 120: let it fail here.
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_output()


def _drop_output() -> None:
    # Point stdout at nothing, so that the writes still to come and the interpreter's last
    # flush do not fail again on the way out.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
