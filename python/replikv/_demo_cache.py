"""The cache act of ``replikv demo``: three cache nodes follow the store's change log, a
``Cache`` reads subscriber profiles through them, and a write to a cached profile shows
that the next read sees it."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from ._core import Cache, CacheNode, Primary, Store
from .exceptions import ReplikvError

#: Profile reads in the campaign-send workload, and how skewed they are (Zipf exponent).
READS = 20_000
SKEW = 1.1
#: Each node holds this many profiles.
NODE_CAPACITY = 2_000


def act(
    store: Store,
    featured: str,
    say: Callable[[str], None],
    code: Callable[[str], None],
) -> None:
    """Runs the act on `store`, whose `featured` subscriber exists."""
    with Primary(store, ship_interval=0.0) as primary:
        nodes = [
            CacheNode(capacity=NODE_CAPACITY, follow=primary.address, name=f"cache-{i}")
            for i in range(3)
        ]
        try:
            code("primary = replikv.Primary(store)  # serves the log the cache nodes follow")
            code("node = replikv.CacheNode(capacity=2000, follow=primary.address)  # three")
            _wait(lambda: all(n.stats().follow_state == "streaming" for n in nodes))
            for node in nodes:
                say(f"  {node!r}")
            with Cache([n.address for n in nodes], source=store) as cache:
                code("cache = replikv.Cache([n.address for n in nodes], source=store)")
                _campaign(store, cache, say)
                _write_through(store, cache, nodes, featured, say, code)
        finally:
            for node in nodes:
                node.close()


def _campaign(store: Store, cache: Cache, say: Callable[[str], None]) -> None:
    """A campaign send: profile reads skewed toward the most active subscribers."""
    emails = [key for key, _ in store.table("subscribers").items(limit=20_000)]
    rng = random.Random(7)
    weights = [1.0 / (rank + 1) ** SKEW for rank in range(len(emails))]
    picks = rng.choices(emails, weights=weights, k=READS)
    started = time.perf_counter()
    for email in picks:
        cache.get("subscribers", email)
    seconds = time.perf_counter() - started
    stats = cache.stats()
    say(
        f"\n  A campaign send to {len(emails):,} of the {store.count('subscribers'):,} "
        f"subscribers reads {READS:,} profiles "
        f"(the active ones far more often) in {seconds:.2f} s: "
        f"{READS / seconds:,.0f} reads/s"
    )
    say(
        f"  hit ratio {stats.hit_ratio:.1%} ({stats.hits:,} hits, "
        f"{stats.misses:,} misses read through from the store, "
        f"{stats.evictions:,} evicted)"
    )


def _write_through(
    store: Store,
    cache: Cache,
    nodes: list[CacheNode],
    featured: str,
    say: Callable[[str], None],
    code: Callable[[str], None],
) -> None:
    """What a write does to a cached profile."""
    say("\n  A write to a cached profile (its newsletter consent changes):")
    code(f"cache.get('subscribers', {featured!r})['consent']")
    before = cache.get("subscribers", featured)
    say(f"  {before['consent']!r}")
    newsletter = not before["consent"]["newsletter"]
    profile = dict(before, consent=dict(before["consent"], newsletter=newsletter))
    code(f"receipt = store.put('subscribers', {featured!r}, changed_profile)")
    receipt = store.put("subscribers", featured, profile)
    _wait(lambda: all(n.stats().processed_lsn >= receipt.lsn for n in nodes))
    dropped = sum(n.stats().invalidations for n in nodes)
    say(f"  # the nodes processed LSN {receipt.lsn:,} from the log: {dropped} value(s) dropped")
    code(f"cache.get('subscribers', {featured!r})['consent']")
    after = cache.get("subscribers", featured)
    say(f"  {after['consent']!r}")
    if after != profile:
        raise ReplikvError(f"the cache returned {after!r} after the write of {profile!r}")


def _wait(done: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise ReplikvError("the cache nodes did not catch up with the log in time")
        time.sleep(0.01)
