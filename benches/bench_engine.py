"""Engine benchmarks: replikv next to lmdb and rocksdict (from PyPI), measured in one run.

Run it from the repository with the package installed (``replikv``, ``lmdb`` and
``rocksdict`` importable: the ``test`` extra)::

    python benches/bench_engine.py            # 1M keys, about 1-2 minutes on 2 cores
    python benches/bench_engine.py --quick    # 20k keys, a smoke run
    python benches/bench_engine.py --only get --dir /some/disk

The store holds 6-field subscriber profiles (dicts) under 16-byte str keys. lmdb and
rocksdict store them as a user would: ``pickle`` for lmdb (keys as UTF-8 bytes, encoded
before the timing), rocksdict's default mode (which pickles values itself). The targets
come from issue 10 ("the engine's own speed"); the script reports PASS/MISS, it never
fails on a timing.

Durability: every load is one transaction made durable at its commit. replikv: one
``put_many`` with ``fsync=True`` (its log record is fdatasync'ed); lmdb: one write
transaction with the default ``sync=True`` (its commit fsyncs); rocksdict: one
``WriteBatch`` written with ``WriteOptions.sync = True`` (its WAL is fsynced).

Scenarios:
  get       random point reads of existing keys: replikv ``Store.get``; lmdb with a new
            read transaction per get (``with env.begin() as txn: pickle.loads(txn.get(k))``);
            rocksdict ``db[k]``
  put_many  every row in one durable transaction, into a fresh store each repetition
"""

from __future__ import annotations

import functools
import pickle
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import replikv
import rocksdict
from bench_store import (
    Report,
    bench_parser,
    fmt_runs,
    make_key,
    scratch,
    section,
    show,
)
from replikv._measure import filesystem_of, machine_load, timed

SCENARIOS = ("get", "put_many")
TABLE = "profiles"
LMDB_MAP_BYTES = 8 << 30
COUNTRIES = ("FR", "DE", "US", "ES", "IT", "GB")

Row = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Config:
    """Counts for one run; ``--quick`` shrinks them for a smoke run."""

    keys: int = 1_000_000
    gets: int = 300_000
    get_reps: int = 5
    load_reps: int = 3


QUICK = Config(keys=20_000, gets=20_000, get_reps=2, load_reps=1)


def make_profile(i: int) -> dict[str, Any]:
    """A 6-field subscriber profile (about 110 bytes as JSON)."""
    return {
        "email": f"u{i:07d}@example.com",
        "name": f"User {i % 100_000}",
        "country": COUNTRIES[i % len(COUNTRIES)],
        "opted_in": i % 3 != 0,
        "score": i % 1000,
        "tags": ["news", "promo"][: 1 + i % 2],
    }


def make_rows(n: int) -> list[Row]:
    return [(make_key(i), make_profile(i)) for i in range(n)]


class Engine:
    """One engine's store of ``rows``: load it, read it, close it."""

    name = ""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, rows: Sequence[Row]) -> None:
        raise NotImplementedError

    def getter(self, keys: Sequence[str]) -> Callable[[], None]:
        """A function that reads every key of ``keys`` (prepared outside the timing)."""
        raise NotImplementedError

    def get(self, key: str) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Replikv(Engine):
    name = "replikv"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.store = replikv.Store(str(path), fsync=True)

    def load(self, rows: Sequence[Row]) -> None:
        self.store.put_many(TABLE, rows)

    def getter(self, keys: Sequence[str]) -> Callable[[], None]:
        def read() -> None:
            get = self.store.get
            for key in keys:
                get(TABLE, key)

        return read

    def get(self, key: str) -> Any:
        return self.store.get(TABLE, key)

    def close(self) -> None:
        self.store.close()


class Lmdb(Engine):
    name = "lmdb"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.env = lmdb.open(str(path), map_size=LMDB_MAP_BYTES, sync=True)

    def load(self, rows: Sequence[Row]) -> None:
        with self.env.begin(write=True) as txn:
            put, dumps = txn.put, pickle.dumps
            for key, value in rows:
                put(key.encode(), dumps(value))

    def getter(self, keys: Sequence[str]) -> Callable[[], None]:
        encoded = [key.encode() for key in keys]

        def read() -> None:
            begin, loads = self.env.begin, pickle.loads
            for key in encoded:
                with begin() as txn:
                    loads(txn.get(key, b""))

        return read

    def get(self, key: str) -> Any:
        with self.env.begin() as txn:
            return pickle.loads(txn.get(key.encode(), b""))

    def close(self) -> None:
        self.env.close()


class Rocksdict(Engine):
    name = "rocksdict"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.db = rocksdict.Rdict(str(path))

    def load(self, rows: Sequence[Row]) -> None:
        batch = rocksdict.WriteBatch()
        put = batch.put
        for key, value in rows:
            put(key, value)
        durable = rocksdict.WriteOptions()
        durable.sync = True
        self.db.write(batch, write_opt=durable)

    def getter(self, keys: Sequence[str]) -> Callable[[], None]:
        def read() -> None:
            db = self.db
            for key in keys:
                db[key]

        return read

    def get(self, key: str) -> Any:
        return self.db[key]

    def close(self) -> None:
        self.db.close()


ENGINES: tuple[type[Engine], ...] = (Replikv, Lmdb, Rocksdict)


def bench_get(base: Path, cfg: Config, rows: list[Row], report: Report) -> None:
    section(f"get: random point reads over {cfg.keys:,} keys")
    rng = random.Random(42)
    # New key objects, allocated together (lmdb's getter encodes its own the same way):
    # the rows' own key strings lie scattered among a million profiles, and reading them
    # cost a cache miss per get (about 0.4 us of 2.4 here) that only the engines taking
    # them as they are paid.
    keys = [rows[rng.randrange(len(rows))][0].encode().decode() for _ in range(cfg.gets)]
    us: dict[str, list[float]] = {engine.name: [] for engine in ENGINES}
    with scratch(base, "get") as d:
        engines = [engine(d / engine.name) for engine in ENGINES]
        try:
            for engine in engines:
                seconds = timed(functools.partial(engine.load, rows))
                show(f"{engine.name}: loaded in", f"{seconds:.2f} s")
            # same answers everywhere, checked outside the timing
            for key, value in rows[:: max(1, len(rows) // 100)]:
                if any(engine.get(key) != value for engine in engines):
                    raise AssertionError(f"different values for {key!r}")
            readers = [(engine.name, engine.getter(keys)) for engine in engines]
            for _, read in readers:
                read()  # warm the caches
            for rep in range(cfg.get_reps):
                # each repetition starts with another engine
                turn = rep % len(readers)
                for name, read in readers[turn:] + readers[:turn]:
                    us[name].append(timed(read) / len(keys) * 1e6)
        finally:
            for engine in engines:
                engine.close()
    for name, figures in us.items():
        show(f"{name} get", fmt_runs(figures, "us/op", 2))
    print(f"  ({cfg.get_reps} reps of {len(keys):,} random gets, the same keys for each engine)")
    ours = statistics.median(us["replikv"])
    for other, target in (("lmdb", 1.0), ("rocksdict", None)):
        report.compare(
            f"get vs {other}",
            ours,
            statistics.median(us[other]),
            "us/op",
            other,
            target,
            kind="faster",
        )


def bench_put_many(base: Path, cfg: Config, rows: list[Row], report: Report) -> None:
    section(f"put_many: {len(rows):,} rows in one durable transaction")
    seconds: dict[str, list[float]] = {engine.name: [] for engine in ENGINES}
    with scratch(base, "put_many") as d:
        for rep in range(cfg.load_reps):
            turn = rep % len(ENGINES)
            for kind in ENGINES[turn:] + ENGINES[:turn]:
                engine = kind(d / f"{kind.name}-{rep}")
                try:
                    seconds[kind.name].append(timed(functools.partial(engine.load, rows)))
                    last_key, last_value = rows[-1]
                    if engine.get(last_key) != last_value:
                        raise AssertionError(f"{kind.name} lost rows")
                finally:
                    engine.close()
    for name, figures in seconds.items():
        show(f"{name} load", fmt_runs(figures, "s", 2))
    print(f"  ({cfg.load_reps} reps, each into a fresh store)")
    ours = statistics.median(seconds["replikv"])
    for other, target in (("lmdb", 1.0), ("rocksdict", None)):
        report.compare(
            f"put_many vs {other}",
            ours,
            statistics.median(seconds[other]),
            "s",
            other,
            target,
            kind="faster",
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, SCENARIOS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    cfg = QUICK if args.quick else Config()
    base = Path(tempfile.mkdtemp(prefix="replikv-bench-engine-", dir=args.dir))
    print(f"replikv {replikv.__version__}, lmdb {lmdb.__version__}, rocksdict")
    print(f"temporary directory {base} on {filesystem_of(base)}")
    print(f"machine load at start: {machine_load()}")
    print(f"keys: 16-byte str (e.g. {make_key(1234)!r}); values: {make_profile(1234)}")
    rows = make_rows(cfg.keys)
    report = Report()
    started = time.perf_counter()
    benches = {"get": bench_get, "put_many": bench_put_many}
    try:
        for name in SCENARIOS:
            if args.only is None or args.only == name:
                benches[name](base, cfg, rows, report)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report.print_summary("issue 10")
    print(f"machine load at end: {machine_load()}")
    print(f"total time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
