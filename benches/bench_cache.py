"""The cache: what a hit costs in-process and over the network, what one node serves
under redis-benchmark, and the hit ratio of a three-node cluster against one exact LRU.

Run it from the repository with the package installed (``replikv`` importable)::

    python benches/bench_cache.py            # every scenario, a minute or two on 2 cores
    python benches/bench_cache.py --quick    # a fast smoke run

Every ratio compares two figures of this run; the targets come from issue 9 ("Speed").
redis-server and redis-benchmark come from Debian's redis-server and redis-tools
(``dev/check`` installs them); without them those scenarios say so and are skipped.
This script never fails on a timing.

Scenarios:
  local     in-process hit (``Cache.get``) vs ``cachetools.LRUCache`` behind a
            ``threading.Lock``, and vs a plain dict lookup ``d[(table, key)]``
  node      one cache node under ``redis-benchmark`` GET/SET, 50 clients, with and
            without ``-P 16``, vs a real ``redis-server`` on this machine
  network   ``Cache.get`` hit against one node vs a bare loopback round trip from Python,
            and vs redis-py GET against redis-server
  ratio     hit ratio on a Zipf(0.99) trace at 1%, 5% and 20% of the key space: three
            nodes (consistent hashing) vs one exact LRU of the same total capacity
"""

from __future__ import annotations

import bisect
import itertools
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cachetools
import redis
import replikv
from bench_store import Report, bench_parser, fmt_runs, scratch, section, show

SCENARIOS = ("local", "node", "network", "ratio")
LOCAL_HIT_FASTER_TARGET = 1.5  # than cachetools behind a lock
LOCAL_HIT_DICT_TARGET = 3.0  # at most this many times a dict lookup
NODE_TARGET = 0.8  # of redis-server's requests per second
NETWORK_RTT_TARGET = 1.5  # at most this many round trips
NETWORK_REDIS_PY_TARGET = 2.0  # times faster than redis-py GET against redis-server
RATIO_POINTS = 1.0  # hit-ratio points at most below one exact LRU


@dataclass(frozen=True)
class Config:
    """Counts for one run; ``--quick`` shrinks them for a smoke run."""

    local_gets: int = 200_000
    rounds: int = 5
    bench_requests: int = 100_000
    network_gets: int = 20_000
    keys: int = 50_000
    trace: int = 300_000


QUICK = Config(
    local_gets=20_000, rounds=2, bench_requests=5_000, network_gets=1_000, keys=5_000, trace=20_000
)


def per_op_ns(loop: Callable[[int], None], count: int, rounds: int) -> list[float]:
    """Nanoseconds per operation of `loop(count)`, once per round."""
    figures = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        loop(count)
        figures.append((time.perf_counter_ns() - started) / count)
    return figures


def bench_local(base: Path, cfg: Config, report: Report) -> None:
    section("in-process hit: Cache.get vs cachetools.LRUCache behind a Lock vs a dict")
    with scratch(base, "local") as path, replikv.Store(path / "db") as store:
        keys = [f"user{i:06}@example.com" for i in range(1000)]
        store.put_many("subscribers", [(k, {"name": k, "opted_in": True}) for k in keys])
        cache = replikv.Cache(capacity=10_000, source=store)
        lru: cachetools.LRUCache[tuple[str, str], object] = cachetools.LRUCache(10_000)
        lock = threading.Lock()
        plain: dict[tuple[str, str], object] = {}
        for k in keys:
            value = cache.get("subscribers", k)
            lru[("subscribers", k)] = value
            plain[("subscribers", k)] = value
        order = [keys[i % len(keys)] for i in range(cfg.local_gets)]

        def ours(count: int) -> None:
            get = cache.get
            for k in order[:count]:
                get("subscribers", k)

        def theirs(count: int) -> None:
            for k in order[:count]:
                with lock:
                    lru[("subscribers", k)]

        def dict_lookup(count: int) -> None:
            for k in order[:count]:
                plain[("subscribers", k)]

        figures: dict[str, list[float]] = {"ours": [], "cachetools": [], "dict": []}
        for _ in range(cfg.rounds):  # interleaved, so that drift weighs on all alike
            figures["ours"] += per_op_ns(ours, cfg.local_gets, 1)
            figures["cachetools"] += per_op_ns(theirs, cfg.local_gets, 1)
            figures["dict"] += per_op_ns(dict_lookup, cfg.local_gets, 1)
        cache.close()
    for name, values in figures.items():
        show(name, fmt_runs(values, "ns/get"))
    med = {name: sorted(v)[len(v) // 2] for name, v in figures.items()}
    report.compare(
        "in-process hit vs cachetools+Lock",
        med["ours"],
        med["cachetools"],
        "ns",
        "cachetools",
        LOCAL_HIT_FASTER_TARGET,
        kind="faster",
    )
    report.compare(
        "in-process hit vs dict lookup",
        med["ours"],
        med["dict"],
        "ns",
        "dict",
        LOCAL_HIT_DICT_TARGET,
        kind="at_most",
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str | None]:
    """A throwaway redis-server on a free port (None if it is not installed)."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--daemonize", "no", "--logfile", ""]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with redis.Redis(port=port, socket_timeout=1) as probe:
                        probe.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def benchmark(address: str, cfg: Config, pipeline: int) -> dict[str, float]:
    """redis-benchmark's requests per second for SET and GET against `address`."""
    host, port = address.rsplit(":", 1)
    command = ["redis-benchmark", "-h", host, "-p", port, "-t", "set,get", "-c", "50"]
    # Pipelined runs get proportionally more requests, so that each lasts as long.
    requests = cfg.bench_requests * pipeline
    command += ["-n", str(requests), "-P", str(pipeline), "-q", "-r", "10000"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    rates = {}
    for name, rate in re.findall(r"^(\w+): ([\d.]+) requests per second", done.stdout, re.M):
        rates[name] = float(rate)
    return rates


def bench_node(base: Path, cfg: Config, report: Report) -> None:
    section("one node under redis-benchmark (50 clients) vs redis-server")
    if shutil.which("redis-benchmark") is None or shutil.which("redis-server") is None:
        show("skipped", "redis-benchmark or redis-server is not installed")
        report.notes.append("node: skipped, Debian's redis-tools/redis-server not installed")
        return
    with replikv.CacheNode(capacity=1_000_000) as node, redis_server() as server:
        assert server is not None
        for pipeline in (1, 16):
            ours: dict[str, list[float]] = {"SET": [], "GET": []}
            theirs: dict[str, list[float]] = {"SET": [], "GET": []}
            for _ in range(cfg.rounds):
                for name, rate in benchmark(node.address, cfg, pipeline).items():
                    ours[name].append(rate)
                for name, rate in benchmark(server, cfg, pipeline).items():
                    theirs[name].append(rate)
            for name in ("SET", "GET"):
                label = f"{name} -P {pipeline}"
                show(f"replikv node {label}", fmt_runs(ours[name], "req/s", 0))
                show(f"redis-server {label}", fmt_runs(theirs[name], "req/s", 0))
                report.compare(
                    f"node {label} vs redis-server",
                    sorted(ours[name])[len(ours[name]) // 2],
                    sorted(theirs[name])[len(theirs[name]) // 2],
                    "req/s",
                    "redis-server",
                    NODE_TARGET,
                    kind="higher",
                )


def echo_server() -> tuple[subprocess.Popen[bytes], int]:
    """A loopback echo server in a child process (its own interpreter, its own GIL)."""
    code = (
        "import socket,sys\n"
        "s=socket.socket();s.bind(('127.0.0.1',0));s.listen(1)\n"
        "print(s.getsockname()[1],flush=True)\n"
        "c,_=s.accept();c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1)\n"
        "while True:\n"
        "    d=c.recv(65536)\n"
        "    if not d: break\n"
        "    c.sendall(d)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def bench_network(base: Path, cfg: Config, report: Report) -> None:
    section("Cache.get over the network (hit) vs a loopback round trip vs redis-py GET")
    with ExitStack() as stack:
        node = stack.enter_context(replikv.CacheNode(capacity=100_000))
        cache = stack.enter_context(replikv.Cache([node.address]))
        keys = [f"user{i:06}@example.com" for i in range(1000)]
        for k in keys:
            cache.set("subscribers", k, {"name": k, "opted_in": True})
        echo, port = echo_server()
        stack.callback(echo.wait, 30)
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stack.callback(sock.close)
        server = stack.enter_context(redis_server())
        r = None
        if server is not None:
            host, rport = server.rsplit(":", 1)
            r = stack.enter_context(redis.Redis(host=host, port=int(rport)))
            for k in keys:
                r.set(f"subscribers:s:{k}", replikv.encode_value({"name": k, "opted_in": True}))

        def ours(count: int) -> None:
            for i in range(count):
                cache.get("subscribers", keys[i % 1000])

        def round_trip(count: int) -> None:
            message = b"x" * 64
            for _ in range(count):
                sock.sendall(message)
                got = 0
                while got < 64:
                    got += len(sock.recv(65536))

        def redis_py(count: int) -> None:
            assert r is not None
            for i in range(count):
                r.get(f"subscribers:s:{keys[i % 1000]}")

        figures: dict[str, list[float]] = {"ours": [], "rtt": [], "redis-py": []}
        for _ in range(cfg.rounds):
            figures["ours"] += per_op_ns(ours, cfg.network_gets, 1)
            figures["rtt"] += per_op_ns(round_trip, cfg.network_gets, 1)
            if r is not None:
                figures["redis-py"] += per_op_ns(redis_py, cfg.network_gets, 1)
        assert cache.stats().hits >= cfg.network_gets
    us = {name: [v / 1000 for v in values] for name, values in figures.items() if values}
    for name, values in us.items():
        show(name, fmt_runs(values, "us/get"))
    med = {name: sorted(v)[len(v) // 2] for name, v in us.items()}
    report.compare(
        "Cache.get (node hit) vs loopback RTT",
        med["ours"],
        med["rtt"],
        "us",
        "round trip",
        NETWORK_RTT_TARGET,
        kind="at_most",
    )
    if "redis-py" in med:
        report.compare(
            "Cache.get (node hit) vs redis-py GET",
            med["ours"],
            med["redis-py"],
            "us",
            "redis-py+redis-server",
            NETWORK_REDIS_PY_TARGET,
            kind="faster",
        )


def zipf_trace(keys: int, length: int, s: float = 0.99, seed: int = 7) -> list[int]:
    """`length` draws of ranks 0..keys-1 with probability proportional to 1/(rank+1)^s."""
    weights = [1.0 / (rank + 1) ** s for rank in range(keys)]
    cumulative = list(itertools.accumulate(weights))
    rng = random.Random(seed)
    total = cumulative[-1]
    return [bisect.bisect_left(cumulative, rng.random() * total) for _ in range(length)]


def exact_lru_hit_ratio(trace: Sequence[int], capacity: int) -> float:
    lru: OrderedDict[int, None] = OrderedDict()
    hits = 0
    for key in trace:
        if key in lru:
            hits += 1
            lru.move_to_end(key)
        else:
            lru[key] = None
            if len(lru) > capacity:
                lru.popitem(last=False)
    return hits / len(trace)


def bench_ratio(base: Path, cfg: Config, report: Report) -> None:
    section("hit ratio, Zipf(0.99): three nodes vs one exact LRU of the same capacity")
    trace = zipf_trace(cfg.keys, cfg.trace)
    for share in (0.01, 0.05, 0.20):
        capacity = int(cfg.keys * share)
        with ExitStack() as stack:
            # The same total capacity as the one LRU, split as evenly as it divides.
            shares = [capacity // 3 + (1 if i < capacity % 3 else 0) for i in range(3)]
            nodes = [
                stack.enter_context(replikv.CacheNode(capacity=max(1, share))) for share in shares
            ]
            cache = stack.enter_context(
                replikv.Cache([n.address for n in nodes], source=lambda table, key: key)
            )
            get = cache.get
            for key in trace:
                get("t", key)
            ours = cache.stats().hit_ratio
        exact = exact_lru_hit_ratio(trace, capacity)
        show(
            f"{share:.0%} of {cfg.keys:,} keys ({capacity:,})",
            f"3 nodes {ours:.2%}, one LRU {exact:.2%}",
        )
        report.compare(
            f"hit ratio at {share:.0%} (points below one LRU)",
            (exact - ours) * 100 + 1e-9,
            RATIO_POINTS,
            "points",
            "allowed",
            1.0,
            kind="at_most",
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = bench_parser(__doc__, SCENARIOS).parse_args(sys.argv[1:] if argv is None else argv)
    cfg = QUICK if args.quick else Config()
    print(f"replikv {replikv.__version__}; mode {'quick' if args.quick else 'default'}")
    benches: dict[str, Callable[[Path, Config, Report], None]] = {
        "local": bench_local,
        "node": bench_node,
        "network": bench_network,
        "ratio": bench_ratio,
    }
    report = Report()
    base = Path(args.dir)
    for name in SCENARIOS:
        if args.only is None or args.only == name:
            benches[name](base, cfg, report)
    report.print_summary(issue="issue 9")
    return 0


if __name__ == "__main__":
    sys.exit(main())
