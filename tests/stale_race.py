"""The stale-set race, shared by the in-process and the node-process cache tests: writers
each own some keys and write increasing versions while readers read the same keys
through the cache; after each write is seen (`settle`), the cache must give exactly it."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import replikv


def race(
    store: replikv.Store,
    cache: replikv.Cache,
    table: str,
    owned: list[list[str]],
    settle: Callable[[int], None],
    seconds: float,
    readers: int = 4,
) -> None:
    """Runs one writer per list of `owned` keys and `readers` readers for `seconds`;
    `settle(lsn)` returns once the cache has processed the write at `lsn`. Fails on any
    stale read or error; then checks every key against the store."""
    keys = [key for group in owned for key in group]
    for key in keys:
        store.put(table, key, 0)
    stop = threading.Event()
    stale: list[str] = []
    errors: list[BaseException] = []

    def write(group: list[str]) -> None:
        try:
            version = 0
            while not stop.is_set():
                version += 1
                key = group[version % len(group)]
                settle(store.put(table, key, version).lsn)
                seen = cache.get(table, key)
                if seen != version:
                    stale.append(f"{key}: wrote {version}, the cache gave {seen}")
        except BaseException as failure:
            errors.append(failure)

    def read() -> None:
        try:
            rng = random.Random()
            while not stop.is_set():
                cache.get(table, rng.choice(keys))
        except BaseException as failure:
            errors.append(failure)

    threads = [threading.Thread(target=write, args=(group,)) for group in owned]
    threads += [threading.Thread(target=read) for _ in range(readers)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert not stale, stale[:5]
    settle(store.last_lsn)
    for key in keys:
        assert cache.get(table, key) == store.get(table, key), key
