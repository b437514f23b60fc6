"""A cache node against the clients people already use: redis-py with both protocols,
raw sockets sending garbage, redis-benchmark; and its invalidation from a primary's log."""

from __future__ import annotations

import contextlib
import math
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import replikv
from polling import eventually
from proxy import Proxy

# redis-py 8 sends HELLO 3 by default (None); 2 and 3 ask for a protocol explicitly.
PROTOCOLS = [None, 2, 3]


@pytest.fixture
def node() -> Iterator[replikv.CacheNode]:
    with replikv.CacheNode(capacity=1000) as started:
        yield started


def client(node: replikv.CacheNode, protocol: int | None, **options: Any) -> redis.Redis:
    host, port = node.address.rsplit(":", 1)
    if protocol is not None:
        options["protocol"] = protocol
    return redis.Redis(host=host, port=int(port), socket_timeout=5, **options)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_redis_py_runs_every_listed_command(node: replikv.CacheNode, protocol: int | None) -> None:
    r = client(node, protocol)
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    assert r.set("k", "v") is True
    assert r.get("k") == b"v"
    assert r.set("k", "w", nx=True) is None
    assert r.set("k", "w", xx=True) is True
    assert r.set("other", "x", xx=True) is None
    # Bounds that allow for the time the round trips took (TTL rounds to a second).
    started = time.monotonic()
    assert r.set("t", "1", ex=100) is True
    ttl = r.ttl("t")
    assert 100 - math.ceil(time.monotonic() - started + 0.5) <= ttl <= 100
    started = time.monotonic()
    assert r.set("p", "1", px=5000) is True
    pttl = r.pttl("p")
    assert 5000 - math.ceil((time.monotonic() - started) * 1000) - 1 <= pttl <= 5000
    assert r.ttl("k") == -1
    assert r.ttl("missing") == -2
    assert r.expire("k", 50) is True
    assert r.pexpire("k", 50_000) is True
    assert r.expire("missing", 5) is False
    assert r.exists("k", "t", "missing") == 2
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.mget(["a", "missing", "b"]) == [b"1", None, b"2"]
    assert r.delete("a", "missing") == 1
    assert r.dbsize() == 4  # k, t, p, b
    info = r.info()
    assert info["keyspace_hits"] >= 2
    assert "stale_fills_refused" in info
    assert r.config_get("save") == {"save": ""}
    r.client_setname("analytics")
    # redis-py decodes the name under RESP2 only (against Redis too).
    assert r.client_getname() in ("analytics", b"analytics")
    assert r.flushall() is True
    assert r.dbsize() == 0
    r.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_errors_are_redis_errors_and_the_connection_goes_on(
    node: replikv.CacheNode, protocol: int | None
) -> None:
    r = client(node, protocol)
    with pytest.raises(redis.ResponseError, match="unknown command"):
        command(r, "NOPE", "x")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        command(r, "GET")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        command(r, "SET", "k", "v", "BOGUS")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        command(r, "FLUSHALL", "ASYNC", "extra")
    # A TTL ending past the largest signed 64-bit count of Unix milliseconds, as Redis
    # counts it (the node counted from its own start, and took it).
    command(r, "SET", "k", "v")
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'pexpire'"):
        command(r, "PEXPIRE", "k", 9_223_372_036_854_700_000)
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'set'"):
        command(r, "SET", "k2", "v", "PX", 9_223_372_036_854_000_000)
    assert command(r, "TTL", "k") == -1
    assert r.ping() is True
    r.close()


def command(r: redis.Redis, *args: str | int | bytes) -> Any:
    """Runs any command (redis-py leaves `execute_command` untyped)."""
    return r.execute_command(*args)  # type: ignore[no-untyped-call]


def raw_exchange(node: replikv.CacheNode, payload: bytes) -> list[bytes]:
    """Sends `payload` on a fresh socket and reads the reply lines until the node closes
    the connection (a payload that leaves it open ends with QUIT)."""
    host, port = node.address.rsplit(":", 1)
    data = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(payload)
        while chunk := sock.recv(65536):
            data += chunk
    return data.split(b"\r\n")[:-1]


def over_long_request(node: replikv.CacheNode) -> bytes:
    """Sends a 20-argument request of 8 MiB arguments (160 MiB) from a thread, and returns
    the first line the node answered before it closed the connection (b"" if it reset it
    with bytes unread). Fails with a timeout if the node keeps reading."""
    host, port = node.address.rsplit(":", 1)
    header = b"*21\r\n$3\r\nDEL\r\n"
    bulk = b"$8388608\r\n" + b"x" * (8 << 20) + b"\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as sock:

        def send() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(header + bulk * 20)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        sender.join(timeout=30)
    return data.split(b"\r\n")[0]


def test_malformed_input_gets_errors_and_the_node_serves_on(
    node: replikv.CacheNode,
) -> None:
    assert raw_exchange(node, b"PING\r\nQUIT\r\n") == [b"+PONG", b"+OK"]
    # QUIT answers, then closes (nothing after it runs).
    assert raw_exchange(node, b"QUIT\r\nSET after quit\r\n") == [b"+OK"]
    assert client(node, 2).exists("after") == 0
    # Inline garbage is one bad line: the connection goes on.
    lines = raw_exchange(node, b"\x00\xff garbage\r\nPING\r\nQUIT\r\n")
    assert len(lines) == 3 and lines[0].startswith(b"-ERR unknown command"), lines
    assert lines[1:] == [b"+PONG", b"+OK"]
    # A malformed multibulk (a huge bulk length, a bad count) is answered, then closed
    # as Redis does: the announced data must never run as commands.
    for request in (b"*1\r\n$99999999999\r\nFLUSHALL\r\n", b"*x\r\nFLUSHALL\r\n"):
        client(node, 2).set("kept", "1")
        lines = raw_exchange(node, request)
        assert len(lines) == 1 and lines[0].startswith(b"-ERR Protocol error"), lines
        assert client(node, 2).get("kept") == b"1"
    # An inline line too long to read whole is answered, then closed: its tail never runs.
    lines = raw_exchange(node, b"ECHO " + b"a" * (80 << 10) + b"SET smuggled yes\r\nQUIT\r\n")
    assert lines == [b"-ERR Protocol error: too big inline request"], lines[:3]
    assert client(node, 2).exists("smuggled") == 0
    # So is a line with unbalanced quotes, as in Redis: what follows it never runs.
    lines = raw_exchange(node, b'SET "k v\r\nSET smuggled yes\r\nQUIT\r\n')
    assert lines == [b"-ERR Protocol error: unbalanced quotes in request"], lines
    assert client(node, 2).exists("smuggled") == 0
    # A request that adds up past 96 MiB (each argument within bounds) is answered and
    # closed while it is still coming, not buffered whole: without the bound the node
    # waits for the rest of it and this read times out.
    assert over_long_request(node) in (b"-ERR Protocol error: a request of more than 96 MiB", b"")
    assert client(node, 3).ping() is True


def test_a_token_admits_only_auth_hello_ping_and_quit_until_given() -> None:
    with replikv.CacheNode(token="s3cret") as guarded:
        assert raw_exchange(guarded, b"PING\r\nGET k\r\nQUIT\r\n") == [
            b"+PONG",
            b"-NOAUTH Authentication required.",
            b"+OK",
        ]
        with pytest.raises(redis.AuthenticationError):
            client(guarded, 2, password="wrong").ping()
        # Before the token, a request may only be small: nothing large is buffered.
        lines = raw_exchange(guarded, b"*2\r\n$3\r\nGET\r\n$100000\r\n" + b"x" * 1000)
        assert len(lines) == 1 and lines[0].startswith(b"-ERR Protocol error"), lines
        for protocol in PROTOCOLS:
            r = client(guarded, protocol, password="s3cret")
            assert r.set("k", "v") is True
            assert r.get("k") == b"v"
            r.close()


def test_a_request_pipelined_after_auth_is_read_with_the_limits_auth_earned() -> None:
    with replikv.CacheNode(token="s3cret") as guarded:
        value = b"v" * 5000
        set_k = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5000\r\n" + value + b"\r\n"
        # One write, so that one read of the node's gets all of it.
        lines = raw_exchange(guarded, b"AUTH s3cret\r\n" + set_k + b"GET k\r\nQUIT\r\n")
        assert lines == [b"+OK", b"+OK", b"$5000", value, b"+OK"]


def test_rejected_commands_never_exceed_the_commands_processed() -> None:
    with replikv.CacheNode() as fresh:
        lines = raw_exchange(fresh, b"*x\r\n")
        assert len(lines) == 1 and lines[0].startswith(b"-ERR Protocol error"), lines
        # Counted once it has run: INFO is not in its own figures.
        lines = raw_exchange(fresh, b"INFO stats\r\nQUIT\r\n")
        stats = dict(line.split(b":", 1) for line in lines if b"_commands" in line)
        assert stats == {b"total_commands_processed": b"1", b"rejected_commands": b"1"}


@pytest.mark.parametrize("in_multi", [False, True], ids=["plain", "inside MULTI/EXEC"])
def test_an_mget_naming_one_value_many_times_holds_a_bounded_reply_while_unread(
    in_multi: bool,
) -> None:
    with replikv.CacheNode(max_bytes=100_000) as bounded:
        r = client(bounded, 2)
        value = b"v" * 16_000  # under the size a reply holds by reference: copied
        assert r.set("k", value) is True
        names = 2_000  # 32 MB of reply, eight times the 4 MiB output bound
        mget = b"*%d\r\n$4\r\nMGET\r\n" % (names + 1) + b"$1\r\nk\r\n" * names
        # EXEC answers the MGET's reply as an item of its own array.
        multi, exec_ = b"*1\r\n$5\r\nMULTI\r\n", b"*1\r\n$4\r\nEXEC\r\n"
        request = multi + mget + exec_ if in_multi else mget
        host, port = bounded.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(request)

            def stats() -> dict[str, Any]:
                info: dict[str, Any] = r.info("stats")
                return info

            eventually("the MGET's reply to wait unread", lambda: stats()["unsent_reply_bytes"] > 0)
            held = stats()["max_unsent_reply_bytes"]
            assert held <= (4 << 20) + 16_100, f"{held} bytes of one reply held at once"
            expected = b"*%d\r\n" % names + (b"$16000\r\n" + value + b"\r\n") * names
            if in_multi:
                expected = b"+OK\r\n+QUEUED\r\n*1\r\n" + expected
            received = b""
            while len(received) < len(expected):
                chunk = sock.recv(1 << 20)
                assert chunk, "the node closed the connection"
                received += chunk
            assert received == expected
        assert r.ping() is True


def test_capacity_by_entries_is_never_exceeded() -> None:
    with replikv.CacheNode(capacity=10, max_bytes=4096) as small:
        r = client(small, 3)
        for i in range(100):
            r.set(f"k{i}", "x" * 50)
            assert r.dbsize() <= 10
        assert small.stats().evictions == 90
        assert small.stats().bytes <= 4096
        r.close()


def test_a_write_in_the_log_drops_the_cached_key(store: replikv.Store) -> None:
    with replikv.Primary(store, listen="127.0.0.1:0") as primary:
        store.put("subscribers", "ana@example.com", {"opted_in": True})
        with replikv.CacheNode(follow=primary.address) as cache:
            eventually(
                "the node follows the log",
                lambda: cache.stats().follow_state == "streaming",
            )
            # A fresh node starts at the primary's position, not at the log's beginning.
            assert cache.stats().processed_lsn == store.last_lsn
            r = client(cache, 3)
            key = "subscribers:s:ana@example.com"
            value = replikv.encode_value({"opted_in": True})
            lsn = store.last_lsn
            assert command(r, "RKV.FILL", key, 1, lsn, value) == 1
            assert r.get(key) == value
            receipt = store.put("subscribers", "ana@example.com", {"opted_in": False})
            eventually(
                "the node processes the write",
                lambda: cache.stats().processed_lsn >= receipt.lsn,
            )
            assert r.get(key) is None
            # A slow reader's value from before the write is refused.
            assert command(r, "RKV.FILL", key, 1, lsn, value) == 0
            assert cache.stats().stale_fills_refused == 1
            assert cache.stats().invalidations == 1
            # A version of an epoch the node has not seen would outrank every write of the
            # key it processes (versions compare by epoch first): refused, however near.
            assert command(r, "RKV.FILL", key, 2, receipt.lsn, value) == 0
            assert cache.stats().stale_fills_refused == 2
            later = store.put("subscribers", "ana@example.com", {"opted_in": True})
            eventually("the node processes it", lambda: cache.stats().processed_lsn >= later.lsn)
            assert command(r, "RKV.FILL", key, 1, later.lsn, value) == 1
            r.close()


def test_a_refresh_node_serves_each_entrys_last_write_of_a_key(store: replikv.Store) -> None:
    with (
        replikv.Primary(store, listen="127.0.0.1:0", ship_interval=0.005) as primary,
        replikv.CacheNode(follow=primary.address, on_write="refresh") as node,
        replikv.Cache([node.address], source=store) as cache,
    ):
        store.put("t", "a", "a0")
        store.put("t", "b", "b0")
        eventually("the node to process them", lambda: node.stats().processed_lsn == 2)
        assert (cache.get("t", "a"), cache.get("t", "b")) == ("a0", "b0")
        assert node.stats().keys == 2, "both filled"
        store.put("t", "a", "a1")
        eventually("the node to refresh a", lambda: node.stats().processed_lsn == 3)
        hits = node.stats().hits
        assert cache.get("t", "a") == "a1" and node.stats().hits == hits + 1, "refreshed"
        # One entry writing a key twice: a put_many's later row wins, and so does a delete
        # after a put in one transaction.
        store.put_many("t", [("a", "a2"), ("a", "a3")])
        with store.transaction() as tx:
            tx.put("t", "b", "b1")
            tx.delete("t", "b")
        eventually("the node to process both", lambda: node.stats().processed_lsn == 5)
        assert (store.get("t", "a"), store.get("t", "b")) == ("a3", None)
        assert (cache.get("t", "a"), cache.get("t", "b")) == ("a3", None)


def test_a_new_node_counts_no_flush_until_one_happens_and_bytes_counts_its_overhead(
    store: replikv.Store,
) -> None:
    with replikv.Primary(store, listen="127.0.0.1:0") as primary:
        store.put("subscribers", "ana@example.com", {"opted_in": True})
        with replikv.CacheNode(follow=primary.address) as cache:
            eventually(
                "the node follows the log",
                lambda: cache.stats().processed_lsn == store.last_lsn,
            )
            # It started at the primary's position: nothing was dropped.
            assert cache.stats().flushes == 0
            r = client(cache, 3)
            r.set("t:s:abcdef", "0123456789")
            assert cache.stats().bytes == len("t:s:abcdef") + len("0123456789") + 96
            r.flushall()
            assert cache.stats().flushes == 1
            r.close()


def test_a_following_node_is_listed_by_the_primary_as_a_consumer_under_its_name(
    store: replikv.Store,
) -> None:
    with (
        replikv.Primary(store, listen="127.0.0.1:0") as primary,
        replikv.CacheNode(follow=primary.address, name="edge-1") as cache,
    ):
        eventually("the node follows", lambda: cache.stats().follow_state == "streaming")
        [info] = primary.status().replicas
        assert (info.name, info.kind, info.sync_state) == ("edge-1", "consumer", "async")
        assert "ReplicaInfo(name='edge-1', kind='consumer'" in repr(info)
        assert info.to_dict()["kind"] == "consumer"


@pytest.mark.skipif(
    shutil.which("redis-benchmark") is None,
    reason="redis-benchmark is not installed (dev/check installs Debian's redis-tools)",
)
def test_redis_benchmark_completes_without_errors(node: replikv.CacheNode) -> None:
    host, port = node.address.rsplit(":", 1)
    command = ["redis-benchmark", "-h", host, "-p", port, "-t", "ping,set,get"]
    command.extend(["-n", "2000", "-c", "10", "-q"])
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "error" not in (done.stdout + done.stderr).lower()
    for test in ("PING_INLINE", "PING_MBULK", "SET", "GET"):
        assert f"{test}:" in done.stdout, done.stdout


def test_a_cache_whose_nodes_are_down_reads_the_source_and_counts_no_stale_fill(
    store: replikv.Store,
) -> None:
    node = replikv.CacheNode()
    address = node.address
    node.close()
    store.put("subscribers", "ana", {"opted_in": True})
    with replikv.Cache([address], source=store, timeout=0.2) as cache:
        assert cache.get("subscribers", "ana") == {"opted_in": True}
        stats = cache.stats()
        assert stats.misses == 1
        assert stats.stale_fills_refused == 0
        assert stats.nodes[address]["state"] == "down"


def test_a_lagging_replica_as_source_never_hands_back_a_value_older_than_the_node_saw(
    store: replikv.Store, tmp_path: Path
) -> None:
    # DESIGN 3.7: the node has processed the second write, the replica has not; the value
    # the replica holds is older than one the cache returned, and must not come back.
    with (
        replikv.Primary(store, listen="127.0.0.1:0", ship_interval=0.0) as primary,
        Proxy(primary.address) as proxy,
        replikv.Replica(tmp_path / "replica", primary=proxy.address, name="r1") as replica,
        replikv.CacheNode(follow=primary.address) as node,
    ):
        eventually("the node follows", lambda: node.stats().follow_state == "streaming")
        with replikv.Cache([node.address], source=replica, timeout=0.5) as cache:
            first = store.put("t", "k", "v1")
            assert replica.wait_for(first.lsn, timeout=30)
            eventually("the node processes it", lambda: node.stats().processed_lsn >= first.lsn)
            assert cache.get("t", "k") == "v1"
            proxy.stalled = True
            second = store.put("t", "k", "v2")
            eventually("the node processes it", lambda: node.stats().processed_lsn >= second.lsn)
            with pytest.raises(replikv.ReplicationTimeout) as info:
                cache.get("t", "k")
            assert info.value.lsn == second.lsn
            proxy.stalled = False
            assert replica.wait_for(second.lsn, timeout=30)
            assert cache.get("t", "k") == "v2"


def test_a_node_re_pointed_at_the_promoted_replica_drops_what_the_new_primary_writes(
    tmp_path: Path,
) -> None:
    store = replikv.Store(tmp_path / "primary")
    primary = replikv.Primary(store, listen="127.0.0.1:0", ship_interval=0.0)
    replica = replikv.Replica(tmp_path / "eu-1", primary=primary.address, listen="127.0.0.1:0")
    node = replikv.CacheNode(follow=primary.address)
    try:
        eventually("the node follows", lambda: node.stats().follow_state == "streaming")
        first = store.put("t", "k", "v1", durability="sync")
        eventually("the node processes it", lambda: node.stats().processed_lsn >= first.lsn)
        with replikv.Cache([node.address], source=replica) as cache:
            assert cache.get("t", "k") == "v1"
            primary.close()
            store.close()
            new = replica.promote()
            try:
                node.follow(new.address)
                assert f"follows {new.address}" in repr(node)
                second = new.store.put("t", "k", "v2")
                eventually(
                    "the node processes the new primary's write",
                    lambda: node.stats().processed_lsn >= second.lsn,
                )
                # INFO samples the link's state every 100 ms: it may still say how the link
                # to the old primary ended.
                eventually("the node to say so", lambda: node.stats().follow_state == "streaming")
                assert cache.get("t", "k") == "v2"
            finally:
                new.close()
    finally:
        node.close()
        replica.close()


def test_a_node_drops_a_value_read_through_the_old_primary_from_writes_a_failover_lost(
    tmp_path: Path,
) -> None:
    store = replikv.Store(tmp_path / "a")
    primary = replikv.Primary(store, listen="127.0.0.1:0", ship_interval=0.0)
    to_replica, to_node = Proxy(primary.address), Proxy(primary.address)
    replica = replikv.Replica(tmp_path / "b", primary=to_replica.address)
    node = replikv.CacheNode(follow=to_node.address)
    try:
        first = store.put("t", "k", "v1")
        assert replica.wait_for(first.lsn, timeout=30)
        eventually("the node processes it", lambda: node.stats().processed_lsn >= first.lsn)
        # The node lags the old primary, whose replica never gets its next write.
        to_node.cut()
        to_replica.cut()
        lost = store.put("t", "k", "v2-lost")
        assert lost.lsn == 2 and replica.applied_lsn == 1
        # A reader filled what it read through the old primary (ahead of the node, as
        # fills may be): the version is (epoch 1, LSN 2), and the value MessagePack's.
        r = client(node, 2)
        assert command(r, "RKV.FILL", "t:s:k", 1, 2, b"\xa7v2-lost") == 1
        primary.close()
        store.close()
        # Forced: the loss of LSN 2 is the point (the replica never heard how many
        # members a promotion must reach).
        new = replica.promote(force=True)
        try:
            node.follow(new.address)
            # Welcomed by the new primary, whose log ends at LSN 1, before it writes: LSN 2
            # of epoch 1 is of the lost history, held or read through the old primary.
            eventually(
                "the node streams from the new primary",
                lambda: (
                    f"follows {new.address}" in repr(node)
                    and node.stats().follow_state == "streaming"
                ),
            )
            assert command(r, "RKV.GET", "t:s:k")[0] is None, "held before the new primary wrote"
            assert command(r, "RKV.FILL", "t:s:k", 1, 2, b"\xa7v2-lost") == 0
            # Epoch 2 starts at LSN 2, with a write of another key.
            other = new.store.put("t", "other", 1)
            assert (other.lsn, new.epoch) == (2, 2)
            eventually("the node processes it", lambda: node.stats().processed_lsn >= 2)
            assert node.stats().forks == 0, "the node resumed: its history matched"
            assert command(r, "RKV.GET", "t:s:k")[0] is None, "a value of the lost history"
            with replikv.Cache([node.address], source=new.store) as cache:
                assert cache.get("t", "k") == "v1"
                third = new.store.put("t", "k", "v3")
                eventually("the node processes it", lambda: node.stats().processed_lsn >= third.lsn)
                assert cache.get("t", "k") == "v3"
        finally:
            new.close()
    finally:
        node.close()
        replica.close()
        to_node.close()
        to_replica.close()


def test_a_node_refuses_to_follow_itself(store: replikv.Store) -> None:
    with (
        replikv.Primary(store, listen="127.0.0.1:0") as primary,
        replikv.CacheNode(follow=primary.address) as node,
    ):
        with pytest.raises(ValueError, match="own address"):
            node.follow(node.address)
        with (
            redis.Redis.from_url(f"redis://{node.address}") as r,
            pytest.raises(redis.ResponseError, match="own address"),
        ):
            r.execute_command("RKV.FOLLOW", node.address)
        assert f"follows {primary.address}" in repr(node)


def test_a_node_that_follows_no_log_refuses_to_follow_one(store: replikv.Store) -> None:
    with replikv.CacheNode() as node, pytest.raises(replikv.CacheError, match="follows no log"):
        node.follow("127.0.0.1:7400")


def replikv_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "replikv", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_replikv_follow_re_points_a_cache_node(tmp_path: Path) -> None:
    with (
        replikv.Store(tmp_path / "a") as a,
        replikv.Store(tmp_path / "b") as b,
        replikv.Primary(a, listen="127.0.0.1:0", token="t0k") as first,
        replikv.Primary(b, listen="127.0.0.1:0", token="t0k") as second,
        replikv.CacheNode(follow=first.address, token="t0k") as node,
    ):
        eventually("the node follows", lambda: node.stats().follow_state == "streaming")
        argv = ["follow", node.address, "--primary", second.address, "--token", "t0k"]
        done = replikv_cli(*argv)
        assert done.returncode == 0, done.stderr
        assert f"the cache node at {node.address} follows {second.address} now" in done.stdout
        written = b.put("t", "k", 1)
        # Another store's log: a fork from the node's point of view, so it starts afresh.
        eventually("the node follows the second", lambda: f"follows {second.address}" in repr(node))
        eventually("it processes its write", lambda: node.stats().processed_lsn >= written.lsn)
        refused = replikv_cli(*argv[:-2])
        assert refused.returncode == 1 and "NOAUTH" in refused.stderr


def test_a_replica_left_diverged_by_a_promotion_never_hands_its_lost_writes_to_a_cache(
    tmp_path: Path,
) -> None:
    store = replikv.Store(tmp_path / "primary")
    primary = replikv.Primary(store, listen="127.0.0.1:0", ship_interval=0.0)
    proxy = Proxy(primary.address)
    # us-1 (no fsync: it never counts) gets every entry; eu-1, the only member, is cut off
    # before the second write.
    us1 = replikv.Replica(tmp_path / "us-1", primary=primary.address, fsync=False)
    eu1 = replikv.Replica(tmp_path / "eu-1", primary=proxy.address, listen="127.0.0.1:0")
    node = replikv.CacheNode(follow=primary.address)
    new = None
    try:
        first = store.put("t", "k", "v1")
        assert us1.wait_for(first.lsn, timeout=30) and eu1.wait_for(first.lsn, timeout=30)
        eventually("eu-1 knows its members", lambda: eu1.status().primary_members == 1)
        proxy.stalled = True
        lost = store.put("t", "k", "v2-lost")
        assert us1.wait_for(lost.lsn, timeout=30)
        primary.close()
        store.close()
        new = eu1.promote()
        us1.follow(new.address)  # it holds v2-lost, which the new history does not
        node.follow(new.address)
        # Before the new primary writes anything: the node flushed and stands at the
        # promoted state (epoch 2 at the last LSN of epoch 1), which the new primary
        # serves; the cache reads through it (it once called that state a fork).
        eventually("the node flushes", lambda: node.stats().forks == 1)
        eventually("it starts again", lambda: node.stats().processed_epoch == 2)
        assert node.stats().processed_lsn == first.lsn
        with replikv.Cache([node.address], source=new.store) as cache:
            assert (cache.get("t", "k"), cache.get("t", "k")) == ("v1", "v1")
            assert cache.stats().hits == 1, "the value read from the new primary was cached"
        written = new.store.put("t", "k", "v3")
        # The node had processed v2-lost at that LSN too: it sees the fork, flushes, and
        # starts again in the new history (epoch 2).
        eventually(
            "the node processes v3",
            lambda: (node.stats().processed_epoch, node.stats().processed_lsn) >= (2, written.lsn),
        )
        assert node.stats().forks == 1
        # Its state is copied every 100 ms, and a link lost under load comes back.
        eventually("it streams", lambda: node.stats().follow_state == "streaming")
        eventually("us-1 sees the fork", lambda: us1.status().state != "streaming")
        with replikv.Cache([node.address], source=us1, timeout=0.5) as cache:
            for _ in range(3):
                with pytest.raises(replikv.ReplicationError, match="forks from the log"):
                    cache.get("t", "k")
            assert cache.get("t", "k", read_through=False) is None
    finally:
        if new is not None:
            new.close()
        node.close()
        us1.close()
        eu1.close()
        proxy.close()


def test_a_wrong_or_missing_token_is_an_auth_error_not_a_silent_miss() -> None:
    # Read around, every read would go to the source and the hit ratio stay at 0, with
    # nothing to say why.
    with replikv.CacheNode(token="right") as node:
        for token in ("wrong", None):
            cache = replikv.Cache([node.address], token=token, source=lambda t, k: 1)
            with pytest.raises(replikv.AuthError, match="refused the token"):
                cache.get("t", "k")
            with pytest.raises(replikv.AuthError):
                cache.get_many("t", ["k"])
        cache = replikv.Cache([node.address], token="right", source=lambda t, k: 1)
        assert (cache.get("t", "k"), cache.get("t", "k")) == (1, 1)
        assert cache.stats().hits == 1


def test_unfinished_requests_of_all_clients_are_bounded_together() -> None:
    """Each client may hold one unfinished request of up to 96 MiB; three of them held
    270 MiB of the node's memory, and 10,000 clients could hold 960 GiB. The client whose
    bytes go past 256 MiB in all is answered an error and closed; the others go on."""
    arg = 47 << 20
    # An MSET of two 47 MiB values (one argument holds 64 MiB at most), sent up to 4 MiB
    # before its end: 90 MiB unfinished.
    start = b"*5\r\n$4\r\nMSET\r\n$2\r\nk1\r\n$%d\r\n" % arg
    start += b"x" * arg + b"\r\n$2\r\nk2\r\n$%d\r\n" % arg + b"y" * (43 << 20)
    with replikv.CacheNode(max_bytes=1 << 30) as node:
        host, port = node.address.rsplit(":", 1)
        clients = [socket.create_connection((host, int(port)), timeout=30) for _ in range(3)]
        try:
            for sock in clients[:2]:
                sock.sendall(start)
            refused = b""
            with contextlib.suppress(OSError):  # the node closes it mid-send
                clients[2].sendall(start)
            with contextlib.suppress(OSError):
                while piece := clients[2].recv(4096):
                    refused += piece
            assert refused.startswith(b"-ERR the node holds 256 MiB of unfinished"), refused
            # The first clients' requests were within the bound: they finish.
            clients[0].sendall(b"y" * (4 << 20) + b"\r\n")
            assert clients[0].recv(64) == b"+OK\r\n"
            assert node.stats().keys == 2
        finally:
            for sock in clients:
                sock.close()


def resident_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_a_connection_gives_back_the_memory_of_a_large_request_once_it_ran() -> None:
    """Each connection that once sent a 60 MiB command held its 60 MiB until it closed
    (eight idle ones held 480 MiB of the node's memory); Redis frees such a buffer once the
    command ran. Here the node runs in this process: its resident memory is this one's."""
    size = 60 << 20
    request = b"*2\r\n$6\r\nEXISTS\r\n$%d\r\n" % size + b"x" * size + b"\r\n"
    with replikv.CacheNode(max_bytes=1 << 20) as node:
        host, port = node.address.rsplit(":", 1)
        before = resident_mib()
        clients = [socket.create_connection((host, int(port)), timeout=30) for _ in range(8)]
        try:
            for sock in clients:
                sock.sendall(request)
                assert sock.recv(16) == b":0\r\n"
                sock.sendall(b"PING\r\n")
                assert sock.recv(16) == b"+PONG\r\n"
            grown = resident_mib() - before
            assert grown < 200, f"{grown:.0f} MiB held by 8 idle connections"
        finally:
            for sock in clients:
                sock.close()
