"""Waiting in tests: poll a condition within a bound that catches a hang, never a speed
target (this machine is shared and noisy)."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Polls `check` until it holds; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
