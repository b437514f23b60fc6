"""A cache node's replies next to a real redis-server's (Debian's, which dev/check installs),
command by command, where Redis leaves no room: the expiry commands at the edges of a
signed 64-bit count of milliseconds, times already past, and their options."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import replikv

LIMITS = [-(2**63), -(2**63) // 1000 + 1, -(2**63) // 1000, 2**63 - 1, (2**63 - 1) // 1000, -1, 0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def real_redis() -> Iterator[redis.Redis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (dev/check installs Debian's redis-server)")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield client
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def ours() -> Iterator[redis.Redis]:
    with replikv.CacheNode(capacity=1000) as node:
        host, port = node.address.rsplit(":", 1)
        yield redis.Redis(host=host, port=int(port), socket_timeout=5)


def replies(r: redis.Redis, key: str) -> list[tuple[Any, ...]]:
    """What `r` answers to each probe, with whether the key exists after it."""
    seen: list[tuple[Any, ...]] = []

    def probe(*args: Any) -> None:
        # The reply as it came, without redis-py's per-command callbacks (its SET callback
        # reads any reply but OK, an old value among them, as False).
        connection = r.connection_pool.get_connection()
        try:
            connection.send_command(*args)  # type: ignore[no-untyped-call]
            answer: Any = connection.read_response()
        except redis.ResponseError as error:
            answer = f"error: {error}"
        finally:
            r.connection_pool.release(connection)
        seen.append((*args[:1], *args[2:], answer, r.exists(key)))

    for command in ("EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT"):
        for count in LIMITS:
            r.set(key, b"x")
            probe(command, key, count)
        r.set(key, b"x")
        probe(command, key, 10**10, "NX")
        probe(command, key, 10**10, "NX")
        probe(command, key, 10**11, "GT")
        probe(command, key, 10**9, "GT")
        probe(command, key, 10**9, "LT")
        probe(command, key, 10**9, "XX", "NX")
    for option in ("EX", "PX", "EXAT", "PXAT"):
        for count in LIMITS:
            probe("SET", key, b"y", option, count)
        probe("SET", key, b"y", option, 5, "KEEPTTL")
        probe("SET", key, b"y", "NX", option, 10**10)
    r.set(key, b"x")
    probe("SET", key, b"z", "KEEPTTL")
    probe("SET", key, b"z", "XX", "PXAT", 1)
    r.set(key, b"x")
    probe("SET", key, b"z", "NX", "GET")
    probe("SET", key, b"q", "GET", "XX")
    probe("GET", key)
    # Options repeated, in conflict, or with a count that a later one replaces.
    for options in (
        ("NX", "NX"),
        ("XX", "XX"),
        ("NX", "XX"),
        ("KEEPTTL", "KEEPTTL"),
        ("EX", 0, "EX", 100),
        ("EX", "abc", "EX", 100),
        ("EX", 100, "EX", 0),
        ("EX", "abc", "NOPE"),
        ("PX", 5, "EX", 5),
        ("EXAT", 1, "KEEPTTL"),
        ("KEEPTTL", "PXAT", 1),
        ("PXAT", 1, "PXAT", 10**14),
        ("GET",),
        ("GET", "GET", "EX", 5),
        ("NX", "GET"),
        ("XX", "GET", "KEEPTTL"),
        ("GET", "EX"),
    ):
        probe("SET", key, b"w", *options)
        seen.append(("TTL after", *options, r.ttl(key)))
        r.delete(key)
    for name in ("ok-name", "with space", "new\nline", "caf\u00e9", ""):
        probe("CLIENT", "SETNAME", name)
        seen.append(("CLIENT GETNAME after", name, r.client_getname()))
    return seen


def assert_answered_alike(theirs: list[Any], mine: list[Any]) -> None:
    """Each probe's answer from redis-server next to ours, listed where they differ."""
    differences = [(a, b) for a, b in zip(theirs, mine, strict=True) if a != b]
    assert differences == [], "\n".join(f"redis: {a}\nours:  {b}" for a, b in differences)


def test_expiry_commands_answer_as_redis_7_does(real_redis: redis.Redis, ours: redis.Redis) -> None:
    assert_answered_alike(replies(real_redis, "k"), replies(ours, "t:s:k"))


def transaction_replies(r: redis.Redis, key: str) -> list[Any]:
    """What `r` answers to MULTI/EXEC/DISCARD sequences, raw, on one connection of its own
    (a pooled one would carry the MULTI state into other calls)."""
    connection = redis.Connection(**r.connection_pool.connection_kwargs)  # type: ignore[no-untyped-call]
    seen: list[Any] = []

    def plain(answer: Any) -> Any:
        if isinstance(answer, redis.ResponseError):
            return f"error: {answer}"
        if isinstance(answer, list):
            return [plain(item) for item in answer]
        return answer

    sequences: list[list[tuple[Any, ...]]] = [
        [("MULTI",), ("SET", key, "v"), ("GET", key), ("SET", key, "w", "EX", "abc"), ("EXEC",)],
        [("GET", key)],
        [("MULTI",), ("SET", key), ("GET", key), ("EXEC",)],  # refused while queued
        [("MULTI",), ("NOPE",), ("EXEC",)],
        [("EXEC",)],
        [("DISCARD",)],
        [("MULTI",), ("MULTI",), ("SET", key, "x"), ("DISCARD",), ("GET", key)],
        [("MULTI",), ("SET", key, "y"), ("EXEC", "now"), ("GET", key), ("EXEC",)],
        [("MULTI",), ("DISCARD", "now"), ("DISCARD",)],
        [("COMMAND", "COUNT", "x"), ("CLIENT", "HELP", "x"), ("CLIENT", "ID", "x")],
    ]
    try:
        for sequence in sequences:
            for command in sequence:
                connection.send_command(*command)  # type: ignore[no-untyped-call]
                try:
                    answer = connection.read_response()
                except redis.ResponseError as error:
                    answer = error
                seen.append((command[0], plain(answer)))
    finally:
        connection.disconnect()  # type: ignore[no-untyped-call]
    # redis-py's own pipeline: MULTI/EXEC unless told transaction=False.
    pipe = r.pipeline()
    pipe.set(key, "1")
    pipe.get(key)
    seen.append(("pipeline", pipe.execute()))
    return seen


def test_transactions_answer_as_redis_7_does(real_redis: redis.Redis, ours: redis.Redis) -> None:
    assert_answered_alike(transaction_replies(real_redis, "k"), transaction_replies(ours, "t:s:k"))
