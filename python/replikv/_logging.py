"""The core's events in Python's :mod:`logging`, under the ``replikv`` logger.

The Rust core reports what a script cannot see from its calls: a replica connected or
dropped for silence, a primary deposed by a newer epoch, garbage refused on a port. Its
events at INFO and above reach ``logging.getLogger("replikv.<module>")`` through one
thread of the core's own, so that no writer ever waits for the GIL to log. Python's
defaults show WARNING and above on stderr; ``logging.basicConfig(level=logging.INFO)``
shows the rest, and the ``replikv`` server commands show INFO.
"""

from __future__ import annotations

import atexit

from ._core import _forward_logs, _stop_logs


def forward() -> None:
    """Starts forwarding (once per process) and stops before the interpreter exits."""
    _forward_logs()
    atexit.register(_stop_logs)
