"""The in-process cache: read-through, invalidation by the store's own writes, the
stale-set race, singleflight, TTL, bounds and the conveniences (memoize, defaults)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import replikv
from polling import eventually
from stale_race import race


@pytest.fixture
def cache(store: replikv.Store) -> Iterator[replikv.Cache]:
    with replikv.Cache(capacity=1000, source=store) as opened:
        yield opened


def test_a_miss_reads_through_and_the_next_read_hits(
    store: replikv.Store, cache: replikv.Cache
) -> None:
    store.put("subscribers", "ana@example.com", {"name": "Ana"})
    assert cache.get("subscribers", "ana@example.com") == {"name": "Ana"}
    first = cache.get("subscribers", "ana@example.com")
    assert cache.get("subscribers", "ana@example.com") is first
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads) == (2, 1, 1)
    assert stats.hit_ratio == pytest.approx(2 / 3)
    assert cache.get("subscribers", "nobody", default="?") == "?"
    assert cache.get("subscribers", "ana@example.com", read_through=False) is first


def test_a_write_to_the_store_drops_the_cached_value_before_it_returns(
    store: replikv.Store, cache: replikv.Cache
) -> None:
    store.put("subscribers", 42, {"opted_in": True})
    assert cache.get("subscribers", 42) == {"opted_in": True}
    store.put("subscribers", 42, {"opted_in": False})
    assert cache.get("subscribers", 42) == {"opted_in": False}
    store.delete("subscribers", 42)
    assert cache.get("subscribers", 42) is None
    assert cache.stats().invalidations == 2


def test_a_cache_whose_source_closed_never_serves_what_it_held(tmp_path: Path) -> None:
    """A notebook cell run again: the store closes and opens at the same path, then takes
    writes the old cache never hears of; nothing it held may be served."""
    store = replikv.Store(tmp_path / "db")
    store.put("subscribers", "ana@example.com", "v1")
    cache = replikv.Cache(capacity=100, source=store)
    assert cache.get("subscribers", "ana@example.com") == "v1"
    store.close()
    with replikv.Store(tmp_path / "db") as reopened:
        reopened.put("subscribers", "ana@example.com", "v2")
        for _ in range(2):
            with pytest.raises(replikv.StoreClosed):
                cache.get("subscribers", "ana@example.com")
        with pytest.raises(replikv.StoreClosed):
            cache.set("subscribers", "bob@example.com", "b")
        assert cache.stats().keys == 0, "what it held is dropped"
        with replikv.Cache(capacity=100, source=reopened) as fresh:
            assert fresh.get("subscribers", "ana@example.com") == "v2"
    cache.close()


def test_keys_of_different_types_never_collide(store: replikv.Store, cache: replikv.Cache) -> None:
    store.put("t", 42, "int")
    store.put("t", "42", "str")
    store.put("t", b"42", "bytes")
    assert [cache.get("t", k) for k in (42, "42", b"42")] == ["int", "str", "bytes"]


def test_no_read_returns_a_value_older_than_a_write_that_returned(
    store: replikv.Store, cache: replikv.Cache
) -> None:
    """The stale-set race: readers fill while writers write the same keys. Each writer
    owns its keys, so after its put returns the cache must give exactly what it wrote;
    after everyone stops, every cached value equals the store's."""
    owned = [[f"w{w}-{k}" for k in range(5)] for w in range(3)]
    # In-process, a write's entry is processed before its put returns.
    race(store, cache, "profiles", owned, settle=lambda lsn: None, seconds=2.0)


def test_concurrent_misses_of_one_key_make_one_load() -> None:
    loads: list[str] = []
    release = threading.Event()

    def slow_source(table: str, key: object) -> str:
        loads.append(f"{table}/{key}")
        release.wait(60)
        return "loaded"

    with replikv.Cache(capacity=10, source=slow_source) as cache:
        results: list[Any] = []
        threads = [
            threading.Thread(target=lambda: results.append(cache.get("templates", "welcome")))
            for _ in range(32)
        ]
        for thread in threads:
            thread.start()
        # Every other caller joins the load while it is still in flight.
        try:
            eventually("31 callers joining the load", lambda: cache.stats().loads_coalesced == 31)
        finally:
            release.set()
        for thread in threads:
            thread.join(timeout=30)
        assert results == ["loaded"] * 32
        assert loads == ["templates/welcome"]
        assert cache.stats().loads == 1
        assert cache.stats().loads_coalesced == 31


def test_a_failed_load_reaches_every_caller_waiting_for_it() -> None:
    def broken(table: str, key: object) -> str:
        time.sleep(0.2)
        raise RuntimeError("source down")

    with replikv.Cache(capacity=10, source=broken) as cache:
        failures: list[BaseException] = []

        def call() -> None:
            try:
                cache.get("t", "k")
            except RuntimeError as failure:
                failures.append(failure)

        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(failures) == 8


def test_ttl_expires_entries(store: replikv.Store) -> None:
    with replikv.Cache(capacity=10, source=store, ttl=1.0) as cache:
        store.put("t", "k", 1)
        filled = time.monotonic()
        cache.get("t", "k")
        cached = cache.get("t", "k", read_through=False)
        if time.monotonic() - filled < 1.0:  # a stall longer than the ttl proves nothing
            assert cached == 1
        eventually("the entry to expire", lambda: cache.get("t", "k", read_through=False) is None)
        # Never early: `filled` was read just before the fill.
        assert time.monotonic() - filled >= 1.0
        assert cache.stats().expirations == 1


def test_capacity_is_never_exceeded(store: replikv.Store) -> None:
    with replikv.Cache(capacity=5, source=store) as cache:
        for i in range(50):
            store.put("t", i, i)
            cache.get("t", i)
            assert cache.stats().keys <= 5
        assert cache.stats().evictions == 45


def test_get_many_set_and_invalidations(store: replikv.Store, cache: replikv.Cache) -> None:
    store.put_many("t", [("a", 1), ("b", 2)])
    assert cache.get_many("t", ["a", "b", "missing"]) == {"a": 1, "b": 2}
    cache.set("t", "c", {"by": "hand"})
    assert cache.get("t", "c", read_through=False) == {"by": "hand"}
    assert cache.invalidate("t", "a") is True
    assert cache.invalidate("t", "a") is False
    assert cache.invalidate_prefix("t", "b") == 1
    assert cache.invalidate_prefix("t") == 1
    with pytest.raises(TypeError):
        cache.invalidate_prefix("t", 1)  # type: ignore[arg-type]


def test_memoize_caches_by_arguments_until_invalidated() -> None:
    calls: list[tuple[int, int]] = []
    with replikv.Cache(capacity=100) as cache:

        @cache.memoize(ttl=60)
        def score(a: int, b: int = 0) -> int:
            calls.append((a, b))
            return a * 10 + b

        assert score(1, b=2) == 12
        assert score(1, b=2) == 12
        assert score(2) == 20
        assert calls == [(1, 2), (2, 0)]
        assert score.invalidate(1, b=2) is True  # type: ignore[attr-defined]
        assert score(1, b=2) == 12
        assert calls == [(1, 2), (2, 0), (1, 2)]


def test_a_value_a_store_cannot_hold_counts_against_max_bytes_by_its_size() -> None:
    # Counted as 0 bytes, 50 sets of 100k ints were kept under max_bytes=100_000.
    with replikv.Cache(capacity=1000, max_bytes=100_000) as cache:
        with pytest.raises(replikv.ValueTooLarge):
            cache.set("t", "big", set(range(100_000)))
        for i in range(200):
            cache.set("t", i, set(range(i, i + 1000)))  # about 32 KiB each by getsizeof
        stats = cache.stats()
        assert stats.keys <= 3 and stats.evictions >= 197, stats
        assert cache.get("t", 199, read_through=False) == set(range(199, 1199))


def test_memoize_returns_a_result_the_cache_cannot_hold_uncached() -> None:
    calls: list[int] = []
    with replikv.Cache(capacity=100, max_bytes=100_000) as cache:

        @cache.memoize(ttl=60)
        def members(n: int) -> set[int]:
            calls.append(n)
            return set(range(n))

        assert members(100_000) == set(range(100_000))  # too large: returned, not cached
        assert members(100_000) == set(range(100_000))
        assert members(3) == {0, 1, 2}
        assert members(3) == {0, 1, 2}
        assert calls == [100_000, 100_000, 3]


def test_memoize_returns_an_int_past_64_bits_uncached(any_cache: replikv.Cache) -> None:
    """A store holds no int past 64 bits (an OverflowError): the call returns it all the
    same, as it returns any result the cache cannot hold."""

    @any_cache.memoize()
    def big(n: int) -> Any:
        return [1, 2**n] if n > 64 else 2**n

    assert big(64) == 2**64
    assert big(70) == [1, 2**70]
    assert big(10) == 1024


def test_memoize_keeps_each_functions_results_its_own() -> None:
    with replikv.Cache(capacity=100) as cache:
        double = cache.memoize(ttl=60)(lambda x: x * 2)
        square = cache.memoize(ttl=60)(lambda x: x * x)
        assert (double(3), square(3)) == (6, 9)

        def scorer(weight: int) -> Any:
            @cache.memoize(ttl=60)
            def score(subscriber_id: int) -> int:
                return subscriber_id * weight

            return score

        assert (scorer(1)(5), scorer(10)(5), scorer(1)(5)) == (5, 50, 5)

        class Weights:  # a repr that tells two of them apart no more than a frame's does
            def __init__(self, weight: int) -> None:
                self.weight = weight

            def __repr__(self) -> str:
                return "Weights()"

        def scorer_over(weights: Weights) -> Any:
            @cache.memoize(ttl=60)
            def score(subscriber_id: int) -> int:
                return subscriber_id * weights.weight

            return score

        assert (scorer_over(Weights(1))(5), scorer_over(Weights(10))(5)) == (5, 50)

        def opted_in_to_the_newsletter_by_country_and_by_year_2025(country: str) -> int:
            return 2025

        def opted_in_to_the_newsletter_by_country_and_by_year_2024(country: str) -> int:
            return 2024

        first = cache.memoize(ttl=60)(opted_in_to_the_newsletter_by_country_and_by_year_2025)
        second = cache.memoize(ttl=60)(opted_in_to_the_newsletter_by_country_and_by_year_2024)
        assert (first("DE"), second("DE")) == (2025, 2024)
        second.invalidate_all()  # type: ignore[attr-defined]
        assert cache.stats().keys >= 5, "the other functions' results stay"


def test_memoize_never_caches_a_result_computed_across_an_invalidation() -> None:
    data = {"vip": 1}
    computing, finish = threading.Event(), threading.Event()
    with replikv.Cache(capacity=100) as cache:

        @cache.memoize(ttl=60)
        def segment_size(name: str) -> int:
            size = data[name]
            computing.set()
            assert finish.wait(10)
            return size

        slow = threading.Thread(target=segment_size, args=("vip",))
        slow.start()
        assert computing.wait(10)
        data["vip"] = 2
        segment_size.invalidate("vip")  # type: ignore[attr-defined]
        finish.set()
        slow.join(10)
        assert segment_size("vip") == 2, "the result from before the invalidation was kept"


def test_memoize_tells_apart_arguments_whose_reprs_agree() -> None:
    pandas = pytest.importorskip("pandas")
    numpy = pytest.importorskip("numpy")
    with replikv.Cache(capacity=100) as cache:
        total = cache.memoize(ttl=60)(lambda frame: int(frame["opens"].sum()))
        before = pandas.DataFrame({"opens": [1] * 1000})
        after = before.copy()
        after.loc[500, "opens"] = 1000  # past the rows a frame's repr shows
        assert repr(before) == repr(after)
        assert (total(before), total(after), total(before)) == (1000, 1999, 1000)
        mean = cache.memoize(ttl=60)(lambda values, scale=1: float(values.mean()) * scale)
        zeros, spike = numpy.zeros(5000), numpy.zeros(5000)
        spike[2500] = 5000.0
        assert (mean(zeros), mean(spike), mean(spike, scale=2)) == (0.0, 1.0, 2.0)
        # What cannot be pickled cannot be keyed by content: refused, never keyed by a repr.
        with pytest.raises(TypeError, match="cannot be pickled"):
            total(threading.Lock())


MEMOIZED_CHILD = """
import sys, replikv
calls = []
with replikv.Cache([sys.argv[1]]) as cache:
    @cache.memoize(ttl=60)
    def segment_size(segment):
        calls.append(segment)
        return len(segment) * 10
    print(segment_size("vip"), len(calls))
"""


@pytest.fixture(params=["in-process", "over a node"])
def any_cache(request: pytest.FixtureRequest) -> Iterator[replikv.Cache]:
    """A cache in this process, or one whose values live on a cache node."""
    if request.param == "in-process":
        with replikv.Cache(capacity=100) as cache:
            yield cache
        return
    with replikv.CacheNode() as node, replikv.Cache(nodes=[node.address]) as cache:
        yield cache


def test_memoize_returns_tuples_as_tuples_from_a_hit(any_cache: replikv.Cache) -> None:
    """A store holds tuples as lists, and so does a cache node: a hit there returned
    `[1, 2]` where the call had returned `(1, 2)`, which compares unequal to it and is no
    dict key."""
    calls: list[int] = []

    @any_cache.memoize(ttl=60)
    def opens_and_clicks(campaign: int) -> Any:
        calls.append(campaign)
        return (campaign, [("opens", 3), ("clicks", (1, [2, (3,)]))], {"by_day": (4, 5)})

    expected = opens_and_clicks(7)
    hit = opens_and_clicks(7)
    assert calls == [7], "the second call was a hit"
    assert hit == expected
    assert type(hit) is tuple and type(hit[1][1][1][1][1]) is tuple
    assert {hit[2]["by_day"]: "a dict key"}[(4, 5)] == "a dict key"


def test_a_memoized_value_of_another_shape_on_a_node_reads_as_a_miss() -> None:
    """Anyone may write to a node (redis-cli): a value memoize did not store there is
    computed again, never a TypeError out of the memoized call."""
    from replikv._memoize import _MISSING, _packed, _unpacked

    stored = _packed((1, [2, (3,)], {"k": (4,)}))
    assert _unpacked(stored) == (1, [2, (3,)], {"k": (4,)})
    for foreign in (42, None, "text", [], [1], [[["nowhere", 9]], [1]], [[[0, 0, 0]], [1]]):
        assert _unpacked(foreign) is _MISSING, foreign


def test_memoize_shares_a_functions_results_between_processes_over_a_node(
    tmp_path: Path,
) -> None:
    script = tmp_path / "memoized.py"
    script.write_text(MEMOIZED_CHILD)
    with replikv.CacheNode() as node:
        runs = [
            subprocess.run(
                [sys.executable, str(script), node.address],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout.split()
            for _ in range(2)
        ]
    assert runs == [["30", "1"], ["30", "0"]], "the second process found the first's result"


def test_bad_arguments_are_clear_errors(store: replikv.Store) -> None:
    with pytest.raises(TypeError, match="source must be"):
        replikv.Cache(source=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="capacity"):
        replikv.Cache(capacity=0)
    # A byte bound that cannot hold one entry is refused, as a CacheNode refuses it.
    for max_bytes in (0, 96):
        with pytest.raises(ValueError, match="max_bytes must exceed the 96 bytes"):
            replikv.Cache(max_bytes=max_bytes)
        with pytest.raises(ValueError, match="max_bytes must exceed the 96 bytes"):
            replikv.CacheNode(max_bytes=max_bytes)
    with replikv.Cache(max_bytes=97, source=store) as smallest:
        assert smallest.get("t", "k") is None
    with replikv.Cache(source=store) as cache:
        with pytest.raises(ValueError):
            cache.get("bad table!", "k")
        with pytest.raises(TypeError):
            cache.get("t", 1.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="ttl"):
            cache.set("t", "k", 1, ttl=-1)
    with pytest.raises(replikv.CacheError, match="closed"):
        cache.get("t", "k")


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", "redis://127.0.0.1:6379", "host/0:6379", ""],
)
def test_a_node_address_that_is_not_host_port_is_refused_by_name(
    store: replikv.Store, address: str
) -> None:
    # The listed address is well-formed: only the bad one is named.
    with pytest.raises(ValueError, match=f'^"{re.escape(address)}" is not an address'):
        replikv.Cache(["127.0.0.1:7400", address], source=store)


def test_repr_says_what_it_is(tmp_path: Path, store: replikv.Store) -> None:
    with replikv.Cache(capacity=7, source=store) as cache:
        assert "in-process keys=0/7" in repr(cache)
        assert f"source={store.path}" in repr(cache)


def test_a_replica_as_source_drops_what_the_primary_writes(
    store: replikv.Store, tmp_path: Path
) -> None:
    with (
        replikv.Primary(store, listen="127.0.0.1:0", ship_interval=0.0) as primary,
        replikv.Replica(tmp_path / "replica", primary=primary.address, name="r1") as replica,
        replikv.Cache(capacity=100, source=replica) as cache,
    ):
        receipt = store.put("subscribers", "ana", {"opted_in": True})
        assert replica.wait_for(receipt.lsn, timeout=30)
        assert cache.get("subscribers", "ana") == {"opted_in": True}
        receipt = store.put("subscribers", "ana", {"opted_in": False})
        assert replica.wait_for(receipt.lsn, timeout=30)
        # The replica applied the write: the value cached from it is gone.
        assert cache.get("subscribers", "ana", read_through=False) is None
        assert cache.get("subscribers", "ana") == {"opted_in": False}


def test_a_replica_as_source_re_seeded_by_a_snapshot_never_serves_the_skipped_writes(
    tmp_path: Path,
) -> None:
    from proxy import Proxy

    store = replikv.Store(tmp_path / "primary", segment_bytes=4096)
    with (
        replikv.Primary(store, retain_bytes=8192, ship_interval=0.0) as primary,
        Proxy(primary.address) as proxy,
        replikv.Replica(tmp_path / "replica", primary=proxy.address, max_backoff=0.2) as replica,
        replikv.Cache(capacity=100, source=replica) as cache,
    ):
        assert replica.wait_for(store.put("subscribers", "ana", "v1").lsn, timeout=30)
        assert cache.get("subscribers", "ana") == "v1"
        proxy.cut()
        store.put("subscribers", "ana", "v2")
        # Enough later writes that the one above leaves the retained log.
        for i in range(500):
            store.put("events", i, "x" * 100)
        primary.retain()
        assert store.oldest_lsn > replica.applied_lsn + 1
        proxy.restore()
        # Re-seeded, not streamed (counted just after the new state shows).
        eventually("the snapshot", lambda: replica.status().snapshots >= 1)
        assert replica.wait_for(store.last_lsn, timeout=30)
        assert cache.get("subscribers", "ana") == "v2"
    store.close()


def test_a_replica_as_source_resynced_after_a_fork_never_serves_the_lost_history(
    tmp_path: Path,
) -> None:
    from proxy import Proxy

    store = replikv.Store(tmp_path / "a")
    primary = replikv.Primary(store, ship_interval=0.0)
    to_b = Proxy(primary.address)
    b = replikv.Replica(tmp_path / "b", primary=to_b.address)
    kept = replikv.Replica(tmp_path / "kept", primary=primary.address, on_diverge="resync")
    try:
        with replikv.Cache(capacity=100, source=kept) as cache:
            assert b.wait_for(store.put("t", "k", "v1").lsn, timeout=30)
            to_b.cut()
            lost = store.put("t", "k", "v2-lost")
            assert kept.wait_for(lost.lsn, timeout=30)
            assert cache.get("t", "k") == "v2-lost"
            primary.close()
            store.close()
            new = b.promote(force=True)
            try:
                new.store.put("t", "k", "v2")
                new.store.put("t", "other", 1)
                # The kept replica forks at LSN 2: it discards its state and is re-seeded.
                kept.follow(new.address)
                eventually("the resync", lambda: kept.status().resyncs == 1)
                assert kept.wait_for(new.store.last_lsn, timeout=30)
                assert cache.get("t", "k") == "v2"
            finally:
                new.close()
    finally:
        kept.close()
        b.close()
        to_b.close()
