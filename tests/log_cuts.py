"""Helpers for tests of replicas seeded by a snapshot while writes go on and a byte cap
keeps cutting the log behind them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import replikv


def cut_behind_the_bulk(store: replikv.Store, primary: replikv.Primary) -> None:
    """Starts a segment after the bulk entry's (full) one and trims the log: a new replica
    then needs a snapshot."""
    for i in range(3):
        store.put("live", i, i)
    primary.retain()
    assert store.oldest_lsn > 1, "a new replica needs a snapshot"


@contextmanager
def writes_going_on(store: replikv.Store, pause: float = 0.0) -> Iterator[Callable[[], None]]:
    """Puts to the "live" table from a thread (a `pause` apart) until the call it yields is
    made, or the block ends."""
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.wait(pause):
            store.put("live", i % 100, i)
            i += 1

    writer = threading.Thread(target=write)
    writer.start()

    def stopped() -> None:
        stop.set()
        writer.join()

    try:
        yield stopped
    finally:
        stopped()
