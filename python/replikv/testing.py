"""pytest fixtures for testing code that uses replikv.

Installed with replikv and registered through the ``pytest11`` entry point, so pytest
loads it by itself: a test asks for ``replikv_store`` and gets an open store in its own
temporary directory, closed after the test::

    def count_opens(store, events):
        for key, event in events:
            store.put("events", key, event)
        return sum(1 for _, e in store.scan("events") if e["kind"] == "open")

    def test_count_opens(replikv_store):
        assert count_opens(replikv_store, [("e1", {"kind": "open"})]) == 1

Only pytest imports this module (``import replikv`` never does), so replikv works
without pytest installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._core import Store

__all__ = ["replikv_store"]


@pytest.fixture
def replikv_store(tmp_path: Path) -> Iterator[Store]:
    """An open, empty ``replikv.Store`` in the test's ``tmp_path`` (``<tmp_path>/replikv``),
    closed after the test.

    It is opened with ``fsync=False``: the directory is thrown away after the test, so
    flushing each write to disk would only slow the test down. Code under test that opens
    the same path itself must pass ``fsync=False`` too (``Store(path)`` shares an open
    store only with the same options); better, hand it the fixture's store.
    """
    store = Store(tmp_path / "replikv", fsync=False)
    try:
        yield store
    finally:
        store.close()
