"""A cache over three cache-node processes following a primary's log, on 127.0.0.1:
the stale-set race across processes, and a node killed and restarted during writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
import redis
import replikv
from polling import eventually
from stale_race import race

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


class NodeProcess:
    """`replikv cache-node` in a child process."""

    def __init__(self, follow: str, listen: str = "127.0.0.1:0") -> None:
        command = [sys.executable, "-m", "replikv", "cache-node", "--listen", listen]
        command.extend(["--follow", follow, "--capacity", "10000"])
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        line = self.process.stdout.readline()
        assert "listening on" in line, line + self.process.stderr.read()
        self.address = line.split("listening on ")[1].split(",")[0].strip()

    def info(self) -> dict[str, Any]:
        host, port = self.address.rsplit(":", 1)
        with redis.Redis(host=host, port=int(port), socket_timeout=5) as r:
            return dict(r.info())

    def processed_lsn(self) -> int:
        return int(self.info()["processed_lsn"])

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def caught_up(nodes: list[NodeProcess], lsn: int) -> None:
    for node in nodes:

        def processed(node: NodeProcess = node) -> bool:
            return node.processed_lsn() >= lsn

        eventually(f"{node.address} processes LSN {lsn}", processed)


@contextmanager
def cluster(store: replikv.Store) -> Iterator[tuple[replikv.Primary, list[NodeProcess]]]:
    """A primary serving `store` and three cache-node processes following it."""
    with ExitStack() as stack:
        primary = stack.enter_context(
            replikv.Primary(store, listen="127.0.0.1:0", ship_interval=0.0)
        )
        nodes = []
        for _ in range(3):
            node = NodeProcess(primary.address)
            stack.callback(node.stop)
            nodes.append(node)
        for node in nodes:

            def streaming(node: NodeProcess = node) -> bool:
                return bool(node.info()["follow_state"] == "streaming")

            eventually(f"{node.address} follows the log", streaming)
        caught_up(nodes, store.last_lsn)
        yield primary, nodes


def test_no_read_through_the_nodes_returns_a_value_older_than_a_processed_write(
    store: replikv.Store,
) -> None:
    keys = [f"user{i}@example.com" for i in range(30)]
    with (
        cluster(store) as (_, nodes),
        replikv.Cache([n.address for n in nodes], source=store) as cache,
    ):
        race(
            store,
            cache,
            "subscribers",
            [keys[0::2], keys[1::2]],
            settle=lambda lsn: caught_up(nodes, lsn),
            seconds=3.0,
        )
        assert cache.stats().hits > 0


def test_a_node_killed_and_restarted_during_writes_serves_no_stale_value(
    store: replikv.Store,
) -> None:
    keys = [f"k{i}" for i in range(60)]
    for key in keys:
        store.put("profiles", key, 0)
    with cluster(store) as (primary, nodes):
        victim = nodes[0]
        with replikv.Cache([n.address for n in nodes], source=store, timeout=0.5) as cache:
            for key in keys:
                assert cache.get("profiles", key) == 0
            victim.kill()
            survivors = nodes[1:]
            for version in (1, 2):
                for key in keys:
                    receipt = store.put("profiles", key, version)
                    caught_up(survivors, receipt.lsn)
                    # Its keys moved to the next node on the ring: still never stale.
                    assert cache.get("profiles", key) == version, key
            # Back on its address: empty, it starts at the primary's position.
            reborn = NodeProcess(primary.address, listen=victim.address)
            try:
                for key in keys:
                    store.put("profiles", key, 3)
                caught_up([reborn, *survivors], store.last_lsn)

                def fresh_and_node_back() -> bool:
                    # Every read is fresh while the client decides when to use the node.
                    assert [cache.get("profiles", k) for k in keys] == [3] * len(keys)
                    return bool(cache.stats().nodes[victim.address]["state"] == "up")

                eventually("the client uses the node again", fresh_and_node_back)
                assert cache.get_many("profiles", keys) == dict.fromkeys(keys, 3)
            finally:
                reborn.stop()


def test_replikv_status_shows_a_nodes_figures(store: replikv.Store) -> None:
    with cluster(store) as (_, nodes):
        node = nodes[0]
        with replikv.Cache([node.address], source=store) as cache:
            store.put("t", "k", 1)
            cache.get("t", "k")
            cache.get("t", "k")
        shown = subprocess.run(
            [sys.executable, "-m", "replikv", "status", node.address],
            capture_output=True,
            text=True,
            timeout=60,
            env=ENV,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        assert f"cache node {node.address}" in shown.stdout
        assert "hit ratio 50.0%" in shown.stdout
        assert "(streaming)" in shown.stdout
        assert "keyspace_hits: 1" in shown.stdout


def test_closing_a_cache_closes_its_connections_though_the_object_lives_on() -> None:
    """A closed cache that something still refers to (a list, a notebook's ``Out``) holds no
    connection to its nodes: the node sees its client leave at ``close()``."""
    with replikv.CacheNode(capacity=100) as node:
        kept: list[replikv.Cache] = []
        for i in range(3):
            cache = replikv.Cache([node.address], source=lambda table, key: key)
            assert cache.get("t", i) == i
            eventually("the node sees the client", lambda: node.stats().clients == 1)
            cache.close()
            kept.append(cache)  # still referred to, as a notebook's Out[] would
            eventually("the client's connection closed", lambda: node.stats().clients == 0)


def test_a_node_that_missed_an_invalidation_is_flushed_before_it_serves_again() -> None:
    """A node the client left out (it stopped answering) got none of the invalidations
    sent meanwhile: once it answered again, the client used it again, and it served a
    memoized result invalidated everywhere else, until its TTL ran out."""
    from proxy import Proxy

    with ExitStack() as stack:
        nodes = [stack.enter_context(replikv.CacheNode()) for _ in range(2)]
        links = [stack.enter_context(Proxy(node.address)) for node in nodes]
        cache = stack.enter_context(replikv.Cache([link.address for link in links], timeout=0.3))
        data = {"x": "v1"}

        @cache.memoize(ttl=600)
        def lookup(key: str) -> str:
            return data[key]

        assert lookup("x") == "v1"
        [owner] = [link for link, node in zip(links, nodes, strict=True) if node.stats().keys == 1]
        owner.stalled = True
        assert lookup("x") == "v1"  # the owner times out: left out, the other answers
        states = {a: n["state"] for a, n in cache.stats().nodes.items()}
        assert states[owner.address] == "down", states
        data["x"] = "v2"
        lookup.invalidate("x")  # type: ignore[attr-defined]
        owner.stalled = False

        def served_fresh_by_the_owner() -> bool:
            fresh = lookup("x") == "v2"  # once due, this call probes the owner
            return fresh and cache.stats().nodes[owner.address]["state"] == "up"

        eventually("the owner to serve the new result", served_fresh_by_the_owner, timeout=30)
        assert lookup("x") == "v2"


def test_a_key_longer_than_a_node_takes_is_left_to_the_source_and_harms_no_node() -> None:
    """A node closes a connection whose argument passes 64 MiB (a malformed request to it):
    sent such a key, the client took every node for down, and an invalidation meanwhile
    made each one flush when it came back."""
    huge = "x" * (65 << 20)
    with ExitStack() as stack:
        nodes = [stack.enter_context(replikv.CacheNode(capacity=1000)) for _ in range(2)]
        cache = stack.enter_context(
            replikv.Cache([n.address for n in nodes], source=lambda table, key: len(str(key)))
        )
        for i in range(50):
            assert cache.get("t", str(i)) == len(str(i))
        assert cache.get("t", huge) == len(huge), "the source answers, uncached"
        assert cache.invalidate("t", huge) is False, "never cached"
        with pytest.raises(ValueError, match="more than a cache node takes"):
            cache.set("t", huge, 1)

        @cache.memoize()
        def length(text: str) -> int:
            return len(text)

        assert length(huge) == len(huge)
        stats = cache.stats()
        assert [node["state"] for node in stats.nodes.values()] == ["up", "up"], stats.nodes
        assert stats.errors == 0, stats.last_error
        hits = stats.hits
        assert all(cache.get("t", str(i)) == len(str(i)) for i in range(50))
        assert cache.stats().hits == hits + 50, "the nodes kept what they held"
        assert all(node.stats().flushes == 0 for node in nodes)


def test_bytes_another_client_put_on_a_node_read_as_a_miss_and_are_replaced() -> None:
    """Any Redis client may write to a node: a value that does not decode is a miss (counted
    as an error the source answered for), never a CorruptionError out of the read."""
    with (
        replikv.CacheNode(capacity=100) as node,
        replikv.Cache([node.address], source=lambda table, key: {"from": "source"}) as cache,
    ):
        host, port = node.address.rsplit(":", 1)
        other = redis.Redis(host=host, port=int(port), socket_timeout=5)
        other.set("t:s:k", b"\xc1 not MessagePack")
        assert cache.get("t", "k") == {"from": "source"}
        assert cache.get_many("t", ["k"]) == {"k": {"from": "source"}}
        stats = cache.stats()
        assert stats.errors >= 1 and "does not decode" in (stats.last_error or ""), stats
        assert cache.get("t", "k") == {"from": "source"}
        assert cache.stats().hits == stats.hits + 1, "the read through's fill replaced them"

        from replikv._memoize import _table

        @cache.memoize()
        def campaign(n: int) -> str:
            return f"campaign {n}"

        assert campaign(21) == "campaign 21"
        # Where memoize keeps the call `campaign(21)` (its table, a str key: its arguments).
        memoized = f"{_table(campaign.__wrapped__)}:s:{((21,), [])!r}"  # type: ignore[attr-defined]
        assert other.exists(memoized)
        other.set(memoized, b"\xc1")
        assert campaign(21) == "campaign 21"


def test_a_node_that_fails_is_counted_in_the_caches_errors() -> None:
    node = replikv.CacheNode(capacity=100)
    with replikv.Cache([node.address], source=lambda table, key: "v", timeout=0.3) as cache:
        assert cache.get("t", 1) == "v"
        node.close()
        assert all(cache.get("t", i) == "v" for i in range(5)), "the source answers"
        stats = cache.stats()
        assert stats.errors >= 1 and stats.last_error, stats
        assert stats.errors >= stats.nodes[node.address]["errors"] >= 1
