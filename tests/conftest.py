from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import replikv


@pytest.fixture
def ctrl_c() -> Iterator[None]:
    """Ctrl-C (SIGINT) raises KeyboardInterrupt during the test, as in an interactive
    Python: a process started as a background job inherits SIGINT ignored, and Python then
    installs no handler for it (CI may run the suite so)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[replikv.Store]:
    with replikv.Store(tmp_path / "db") as opened:
        yield opened


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[..., replikv.Store]]:
    """Opens stores under tmp_path by name; closes whatever is still open at the end."""
    opened: list[replikv.Store] = []

    def factory(name: str = "db", **options: Any) -> replikv.Store:
        s = replikv.Store(tmp_path / name, **options)
        opened.append(s)
        return s

    yield factory
    for s in opened:
        s.close()
