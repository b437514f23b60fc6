"""``replikv cache-node``, and what ``replikv status`` shows for a cache node's address."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from typing import Any

from ._args import positive
from ._core import CacheNode, CacheNodeStats
from ._failure import describe as describe_failure
from ._roles import Stop, stops_on_sigterm
from .exceptions import ReplikvError

TOKEN_ENV = "REPLIKV_TOKEN"


def add_command(commands: Any) -> None:
    """Adds ``cache-node`` to the ``replikv`` parser."""
    node = commands.add_parser(
        "cache-node",
        help="serve an LRU cache over the Redis protocol, invalidated by a primary's log",
        description=(
            "Serve an LRU cache node that redis-cli, redis-py and redis-benchmark can use. "
            "With --follow it consumes that primary's change log: every write drops (or "
            "refreshes) the keys it holds. Keys are table:tag:key (tag i, s or b)."
        ),
    )
    node.add_argument("--listen", default="127.0.0.1:7500", metavar="ADDR", help="host:port")
    node.add_argument("--capacity", type=positive, default=100_000, metavar="N", help="entries")
    node.add_argument(
        "--max-bytes", type=positive, default=None, metavar="N", help="bytes (default: no limit)"
    )
    node.add_argument(
        "--ttl",
        type=float,
        default=None,
        metavar="S",
        help="entries' TTL in seconds (default: none)",
    )
    node.add_argument(
        "--follow", metavar="ADDR", help="the primary whose log it follows (default: none)"
    )
    node.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"what clients give with AUTH, and the primary's token (default: ${TOKEN_ENV})",
    )
    node.add_argument("--name", help="its name on the primary (default: cache-PORT; one per node)")
    node.add_argument(
        "--on-write",
        choices=("drop", "refresh"),
        default="drop",
        help="what a write in the log does to a key the node holds",
    )
    node.add_argument(
        "--status-every",
        type=float,
        default=0.0,
        metavar="S",
        help="print the stats every S s (default: 0, never)",
    )
    node.set_defaults(run=_run_cache_node)


@stops_on_sigterm
def _run_cache_node(args: argparse.Namespace) -> int:
    try:
        with CacheNode(
            args.listen,
            capacity=args.capacity,
            max_bytes=args.max_bytes,
            ttl=args.ttl,
            follow=args.follow,
            token=args.token,
            name=args.name,
            on_write=args.on_write,
        ) as node:
            following = f", following {args.follow}" if args.follow else ""
            print(f"cache node listening on {node.address}{following}", flush=True)
            last = time.monotonic()
            try:
                while True:
                    time.sleep(0.1)
                    if args.status_every > 0 and time.monotonic() - last >= args.status_every:
                        last = time.monotonic()
                        print(describe(node.stats()), flush=True)
            except (KeyboardInterrupt, Stop):
                print("stopping", flush=True)
    except BrokenPipeError:  # stdout's reader left: main() ends the command quietly
        raise
    except (ReplikvError, OSError, ValueError, OverflowError) as problem:
        print(f"replikv cache-node: error: {describe_failure(problem)}", file=sys.stderr)
        return 1
    return 0


def describe(stats: CacheNodeStats) -> str:
    """One line of a node's stats, as people read them."""
    return (
        f"keys {stats.keys:,}, hit ratio {stats.hit_ratio:.1%} "
        f"({stats.hits:,} hits, {stats.misses:,} misses), "
        f"{stats.evictions:,} evicted, {stats.expirations:,} expired, "
        f"{stats.invalidations:,} invalidated, "
        f"{stats.stale_fills_refused:,} stale fills refused, "
        f"log at LSN {stats.processed_lsn:,} ({stats.follow_state})"
    )


def speaks_first(address: str, timeout: float) -> bool:
    """Whether the server at `address` talks before it is asked: a primary sends its
    challenge at once, a Redis-protocol cache node waits for a command."""
    host, port = address.rsplit(":", 1)
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as failure:
        # As the Rust side words it: the address the connection was for, then why.
        raise type(failure)(
            failure.errno, f"cannot connect to {address}: {failure.strerror}"
        ) from None
    with sock:
        sock.settimeout(min(timeout, 0.3))
        try:
            return bool(sock.recv(1))
        except TimeoutError:
            return False


def node_info(address: str, token: str | None, timeout: float) -> dict[str, str]:
    """A cache node's INFO fields (AUTH first when a token is given)."""
    reply = _ask(address, token, timeout, b"INFO")
    body = reply.split(b"\r\n", 1)[1]
    fields = {}
    for line in body.decode(errors="replace").splitlines():
        name, sep, value = line.partition(":")
        if sep and not name.startswith("#"):
            fields[name] = value
    return fields


def node_follow(address: str, primary: str, token: str | None, timeout: float) -> None:
    """Tells the cache node at `address` to follow `primary` (``RKV.FOLLOW``)."""
    _ask(address, token, timeout, b"RKV.FOLLOW", primary.encode())


def _ask(address: str, token: str | None, timeout: float, *command: bytes) -> bytes:
    """The reply of a cache node to one command (AUTH first when a token is given)."""
    host, port = address.rsplit(":", 1)
    request = b""
    if token is not None:
        request += _command(b"AUTH", token.encode())
    request += _command(*command)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        reply = _read_replies(sock, 2 if token is not None else 1)
    if reply.startswith(b"-"):
        raise ReplikvError(f"{address} refused: {reply[1:].decode(errors='replace').strip()}")
    return reply


def _command(*args: bytes) -> bytes:
    out = b"*%d\r\n" % len(args)
    for arg in args:
        out += b"$%d\r\n%s\r\n" % (len(arg), arg)
    return out


def _read_replies(sock: socket.socket, count: int) -> bytes:
    """Reads `count` replies (simple lines or one bulk string last); returns the last."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ReplikvError("the cache node closed the connection")
        data += chunk
        replies = _split_replies(data)
        if replies is not None and len(replies) >= count:
            return replies[count - 1]


def _split_replies(data: bytes) -> list[bytes] | None:
    replies = []
    rest = data
    while rest:
        line, sep, after = rest.partition(b"\r\n")
        if not sep:
            return None
        if line.startswith(b"$"):
            size = int(line[1:])
            if len(after) < size + 2:
                return None
            replies.append(line + b"\r\n" + after[:size])
            rest = after[size + 2 :]
        else:
            replies.append(line)
            rest = after
    return replies


def print_node_status(address: str, fields: dict[str, str]) -> None:
    """What ``replikv status`` prints for a cache node."""
    hits, misses = int(fields.get("keyspace_hits", 0)), int(fields.get("keyspace_misses", 0))
    ratio = hits / (hits + misses) if hits + misses else 0.0
    print(
        f"cache node {address}: {int(fields.get('keys', 0)):,} keys, "
        f"{int(fields.get('used_memory', 0)):,} bytes, hit ratio {ratio:.1%}"
    )
    following = fields.get("follow_primary") or "nothing"
    print(
        f"  follows {following} ({fields.get('follow_state', 'none')}), "
        f"log at LSN {int(fields.get('processed_lsn', 0)):,}"
    )
    for name in (
        "keyspace_hits",
        "keyspace_misses",
        "evicted_keys",
        "expired_keys",
        "invalidations",
        "stale_fills_refused",
        "flushes",
        "log_lost",
        "forks",
        "connected_clients",
    ):
        print(f"  {name}: {int(fields.get(name, 0)):,}")
