"""``replikv demo``: a tour of the API on an email-marketing store, with timings.

It builds a store (subscribers with consent flags, templates, open/click events), loads it with
``put_many``, shows reads, writes, a transaction, a prefix scan, the change log and checksums,
reopens it, replicates it, caches it, fails it over, and prints what each step cost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import pprint
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .. import __version__, _demo_cache, _demo_failover
from .._args import positive
from .._core import Change, Checksum, Primary, Replica, Store
from .._failure import describe
from .._measure import percentile
from .._store import Key
from ..exceptions import ReplikvError
from .demo_data import DEMO_NOW, TEMPLATES, UTC, MarketingData, ascii_name


def add_command(commands: Any) -> None:
    """Adds ``replikv demo`` to the ``replikv`` subcommands."""
    demo = commands.add_parser(
        "demo",
        help=(
            "tour replikv on an email-marketing data set: loading, reads and writes, "
            "replication, a cache tier and a failover, with timings"
        ),
        description=(
            "Create a store and load subscribers, templates and open/click events into it "
            "with put_many; show reads, writes (a put, a delete, a transaction), a prefix "
            "scan, a table as a mapping and the change log; measure durable puts and gets "
            "(latency); close and reopen it. Then, on 127.0.0.1: two replicas follow it "
            "while writes go on (their lag, a sync write, equal checksums); a Cache reads "
            "through three cache nodes that follow its change log; and a failover: a primary "
            "in a child process is killed with SIGKILL mid-stream, its sync replica is "
            "promoted, and what was lost is counted (no acknowledged sync write). Ends with "
            "a summary of rows, checksums and timings. The store is temporary unless --keep "
            "is given; the replicas' and the failover's directories always are."
        ),
    )
    demo.add_argument(
        "--subscribers",
        type=positive,
        default=50_000,
        metavar="N",
        help="subscribers to generate (default: 50,000)",
    )
    demo.add_argument(
        "--events",
        type=positive,
        default=500_000,
        metavar="N",
        help="open/click events to generate (default: 500,000)",
    )
    demo.add_argument(
        "--batch-size",
        type=positive,
        default=50_000,
        metavar="N",
        help="rows per put_many transaction (default: 50,000)",
    )
    demo.add_argument(
        "--seed", type=int, default=2026, help="seed of the generated data (default: 2026)"
    )
    demo.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help="create the store here, a new or empty directory (default: a temporary one)",
    )
    demo.add_argument("--keep", action="store_true", help="keep the store and print where it is")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=_run_demo)


# --------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------


class _UsageError(Exception):
    """A problem with the command's arguments, reported without a traceback."""


def _run_demo(args: argparse.Namespace) -> int:
    try:
        workspace = _Workspace.create(args.dir, keep=args.keep)
    except _UsageError as problem:
        print(f"replikv demo: error: {problem}", file=sys.stderr)
        return 2
    try:
        _Demo(args, workspace).run()
    except KeyboardInterrupt:
        print("replikv demo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout's reader left: main() ends the command quietly
        raise
    except (ReplikvError, OSError) as failure:
        print(f"replikv demo: error: {describe(failure)}", file=sys.stderr)
        return 1
    finally:
        workspace.finish()
    return 0


@dataclass
class _Workspace:
    """The store's directory, and whether to remove it (or only what the demo put in it)."""

    store_dir: Path
    keep: bool
    created: bool

    @classmethod
    def create(cls, requested: Path | None, *, keep: bool) -> _Workspace:
        if requested is None:
            return cls(Path(tempfile.mkdtemp(prefix="replikv-demo-")), keep, created=True)
        if requested.exists():
            if not requested.is_dir():
                raise _UsageError(f"--dir {requested} exists and is not a directory")
            try:
                entries = sorted(entry.name for entry in requested.iterdir())
            except OSError as failure:
                raise _UsageError(f"cannot read --dir {requested}: {failure}") from None
            if entries:
                shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
                raise _UsageError(
                    f"--dir {requested} is not empty ({len(entries)} entries: {shown}); "
                    "give a new or empty directory, the demo never writes into existing data"
                )
            return cls(requested, keep, created=False)
        try:
            requested.mkdir()  # not its parents: the demo removes only what it created
        except OSError as failure:
            raise _UsageError(f"cannot create --dir {requested}: {failure}") from None
        return cls(requested, keep, created=True)

    def finish(self) -> None:
        if self.keep:
            print(f"\nThe store is kept in {self.store_dir}")
            print(f"  open it with: replikv.Store({str(self.store_dir)!r})")
            return
        if self.created:
            shutil.rmtree(self.store_dir, ignore_errors=True)
            return
        for entry in self.store_dir.iterdir():  # it was empty before: leave it empty
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


@dataclass
class _Load:
    table: str
    rows: int = 0
    transactions: int = 0
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class _Timings:
    loads: list[_Load] = field(default_factory=list)
    generate_seconds: float = 0.0
    put_micros: list[float] = field(default_factory=list)
    get_micros: list[float] = field(default_factory=list)
    close_seconds: float = 0.0
    reopen_seconds: float = 0.0
    catch_up_seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)


GET_SAMPLES = 10_000
PUT_SAMPLES = 200
TAIL_ENTRIES = 4
REPLICATED_TRANSACTIONS = 2_000
REPLICATED_EVENTS = 5
LAG_SAMPLE_SECONDS = 0.1
OPS_SHOWN_PER_ENTRY = 2
NOBODY = "nobody@example.invalid"
LINE_WIDTH = 100


class _Demo:
    """The demo's steps, in order; each prints its own section."""

    def __init__(self, args: argparse.Namespace, workspace: _Workspace) -> None:
        self.workspace = workspace
        self.store_dir = workspace.store_dir
        self.subscriber_count: int = args.subscribers
        self.event_count: int = args.events
        self.batch_size: int = args.batch_size
        self.seed: int = args.seed
        self.quiet: bool = args.quiet
        self.timings = _Timings()
        self.data = MarketingData(args.seed)
        self.featured = ""  # the subscriber the reads and the transaction use

    def run(self) -> None:
        started = time.perf_counter()
        fate = "kept" if self.workspace.keep else "removed at the end"
        _say(
            f"replikv {__version__} demo: an email-marketing store in {self.store_dir} ({fate})\n"
            f"seed {self.seed}: {self.subscriber_count:,} subscribers, "
            f"{len(TEMPLATES)} templates, {self.event_count:,} open/click events"
        )
        store = Store(self.store_dir)
        try:
            tour = (self._reads, self._writes, self._scan, self._mapping, self._change_log)
            for name, steps in (
                ("load", (self._load,)),
                ("steps 2-6", tour),
                ("latency", (self._latency,)),
            ):
                step_started = time.perf_counter()
                for step in steps:
                    step(store)
                self.timings.steps[name] = time.perf_counter() - step_started
            step_started = time.perf_counter()
            store = self._reopen(store)
            self.timings.steps["close and reopen"] = time.perf_counter() - step_started
            step_started = time.perf_counter()
            self._replicate(store)
            self.timings.steps["replication"] = time.perf_counter() - step_started
            step_started = time.perf_counter()
            _heading("10. A cache in front of the store: three nodes follow its change log")
            _demo_cache.act(store, self.featured, _say, _code)
            self.timings.steps["cache"] = time.perf_counter() - step_started
            step_started = time.perf_counter()
            self._failover()
            self.timings.steps["failover"] = time.perf_counter() - step_started
            self._summary(store.checksum(), time.perf_counter() - started)
        finally:
            store.close()

    # 1. Load ---------------------------------------------------------------------------------

    def _load(self, store: Store) -> None:
        _heading(f"1. Load with put_many: one durable transaction per {self.batch_size:,} rows")
        started = time.perf_counter()
        subscribers = self.data.subscribers(self.subscriber_count)
        self.timings.generate_seconds += time.perf_counter() - started
        self._load_table(store, "subscribers", iter(subscribers), len(subscribers))
        self._load_table(store, "templates", iter(self.data.templates()), len(TEMPLATES))
        events = self.data.events(first_id=1, random_source="events")
        self._load_table(
            store, "events", itertools.islice(events, self.event_count), self.event_count
        )
        rows = [
            (
                load.table,
                f"{load.rows:,}",
                f"{load.transactions:,}",
                f"{load.seconds:.2f}",
                _rate(load.rows_per_second),
            )
            for load in self.timings.loads
        ]
        _table(("table", "rows", "transactions", "seconds", "rows/s"), rows, "<>>>>")
        _say(
            f"  (generating the rows in Python took {self.timings.generate_seconds:.2f} s more, "
            "not counted above)"
        )

    def _load_table(
        self, store: Store, table: str, rows: Iterator[tuple[Key, Any]], total: int
    ) -> None:
        """Loads ``rows`` in batches, one ``put_many`` each, under a single progress bar."""
        load = _Load(table)
        with tqdm(
            total=total, desc=f"  {table:>11}", unit=" rows", disable=self.quiet, file=sys.stderr
        ) as bar:
            while True:
                started = time.perf_counter()
                batch = list(itertools.islice(rows, self.batch_size))
                self.timings.generate_seconds += time.perf_counter() - started
                if not batch:
                    break
                done_before = load.rows

                def advance(encoded: int, done_before: int = done_before) -> None:
                    bar.update(done_before + encoded - bar.n)

                started = time.perf_counter()
                store.put_many(table, batch, progress=advance)
                load.seconds += time.perf_counter() - started
                load.rows += len(batch)
                load.transactions += 1
        self.timings.loads.append(load)

    # 2. Reads --------------------------------------------------------------------------------

    def _reads(self, store: Store) -> None:
        _heading("2. Reads")
        self.featured = featured = self.data.featured_subscriber(store)
        _code(f"store.get('subscribers', {featured!r})")
        _result(pprint.pformat(store.get("subscribers", featured), width=96, sort_dicts=False))
        event_id = 1 + self.data.pick.randrange(self.event_count)
        _code(f"store.get('events', {event_id})")
        _result(pprint.pformat(store.get("events", event_id), width=96, sort_dicts=False))
        _code("store.get('templates', 'welcome')['subject']")
        _result(repr(store.get("templates", "welcome")["subject"]))
        _code(f"store.get('subscribers', {NOBODY!r}, default='<absent>')")
        _result(repr(store.get("subscribers", NOBODY, default="<absent>")))

    # 3. Writes -------------------------------------------------------------------------------

    def _writes(self, store: Store) -> None:
        _heading("3. Writes: a put, a delete, and a transaction")
        template = store.get("templates", "weekly-digest")
        template["subject"] = "Your weekly picks, {{first_name}}: trail season is here"
        template["updated_at"] = DEMO_NOW
        _code("store.put('templates', 'weekly-digest', {**template, 'subject': ...})")
        _result(str(store.put("templates", "weekly-digest", template)))
        _code("store.delete('templates', 'spring-sale')")
        _result(str(store.delete("templates", "spring-sale")))

        featured, event_id = self.featured, self.event_count + 1
        _say("\n  An unsubscribe: revoke the consent and record why, atomically")
        _code(
            "with store.transaction() as tx:\n"
            f"    profile = tx.get('subscribers', {featured!r})\n"
            "    profile['consent'] = {'newsletter': False, 'promotions': False}\n"
            "    tx.put('subscribers', profile['email'], profile)\n"
            f"    tx.put('events', {event_id}, {{'type': 'consent_changed', ...}})\n"
        )
        with store.transaction() as tx:
            profile = tx.get("subscribers", featured)
            previous = dict(profile["consent"])
            profile["consent"] = {"newsletter": False, "promotions": False}
            tx.put("subscribers", featured, profile)
            tx.put(
                "events",
                event_id,
                {
                    "type": "consent_changed",
                    "subscriber": featured,
                    "at": DEMO_NOW,
                    "consent": profile["consent"],
                    "previous": previous,
                    "source": "unsubscribe-link",
                },
            )
        _code("tx.receipt")
        _result(f"{tx.receipt}")
        _say("  # both rows are in that one log entry: a crash keeps both or neither")
        _code(f"store.get('subscribers', {featured!r})['consent']")
        _result(f"{store.get('subscribers', featured)['consent']}  # was {previous}")

    # 4 and 5. A scan and a mapping -----------------------------------------------------------

    def _scan(self, store: Store) -> None:
        subscribers = store.table("subscribers")
        prefix = ascii_name(subscribers[self.featured]["name"].split()[0])  # its first name
        _heading(f"4. A prefix scan, in key order: addresses starting with {prefix!r}")
        _code("subscribers = store.table('subscribers')")
        _code(f"subscribers.items(prefix={prefix!r}, limit=5)")
        rows = [
            (str(email), profile["name"], profile["country"], f"{profile['signup']:%Y-%m-%d}")
            for email, profile in subscribers.items(prefix=prefix, limit=5)
        ]
        _table(("email (key)", "name", "country", "signed up"), rows, "<<<<")
        _code(f"sum(1 for _ in subscribers.keys(prefix={prefix!r}))")
        _result(f"{sum(1 for _ in subscribers.keys(prefix=prefix)):,}")

    def _mapping(self, store: Store) -> None:
        _heading("5. A table is a mapping")
        subscribers, templates = store.table("subscribers"), store.table("templates")
        _code(f"email = {self.featured!r}")
        _code("templates = store.table('templates')")
        expressions = [
            ("len(subscribers)", f"{len(subscribers):,}"),
            ("email in subscribers", str(self.featured in subscribers)),
            (f"{NOBODY!r} in subscribers", str(NOBODY in subscribers)),
            ("subscribers[email]['country']", repr(subscribers[self.featured]["country"])),
            ("len(templates)", f"{len(templates):,}"),
            ("'spring-sale' in templates", f"{'spring-sale' in templates}  (deleted in step 3)"),
        ]
        width = max(len(expression) for expression, _ in expressions)
        for expression, value in expressions:
            _say(f"  >>> {expression:<{width}}  # {value}")

    # 6. The change log -----------------------------------------------------------------------

    def _change_log(self, store: Store) -> None:
        since = max(0, store.last_lsn - TAIL_ENTRIES)
        _heading(f"6. The change log: its last {TAIL_ENTRIES} entries, one per transaction")
        _code(f"for change in store.changes(since={since}): ...")
        for change in store.changes(since=since):
            _say(_describe_change(change))

    # 7. Latency ------------------------------------------------------------------------------

    def _latency(self, store: Store) -> None:
        _heading(f"7. Latency: {PUT_SAMPLES} durable single-row puts, {GET_SAMPLES:,} gets")
        stream = self.data.events(first_id=self.event_count + 2, random_source="stream")
        for key, value in itertools.islice(stream, PUT_SAMPLES):
            started = time.perf_counter_ns()
            store.put("events", key, value)
            self.timings.put_micros.append((time.perf_counter_ns() - started) / 1000)
        for email in self.data.pick.choices(self.data.emails, k=GET_SAMPLES):
            started = time.perf_counter_ns()
            store.get("subscribers", email)
            self.timings.get_micros.append((time.perf_counter_ns() - started) / 1000)
        puts, gets = self.timings.put_micros, self.timings.get_micros
        rows = [
            ("store.put('events', event_id, event)", *_latency_columns(puts)),
            ("store.get('subscribers', email)", *_latency_columns(gets)),
        ]
        _table(("call", "median", "p99", "max"), rows, "<>>>")

    # 8. Close and reopen ---------------------------------------------------------------------

    def _reopen(self, store: Store) -> Store:
        _heading("8. Close and reopen: the data and last_lsn survive")
        checksum, last_lsn = store.checksum(), store.last_lsn
        profile = store.get("subscribers", self.featured)
        started = time.perf_counter()
        store.close()
        self.timings.close_seconds = time.perf_counter() - started
        started = time.perf_counter()
        store = Store(self.store_dir)
        self.timings.reopen_seconds = time.perf_counter() - started
        same_checksum = store.checksum() == checksum
        same_profile = store.get("subscribers", self.featured) == profile
        lines = [
            ("store.close()", f"# {self.timings.close_seconds * 1000:.1f} ms"),
            ("store = replikv.Store(path)", f"# {self.timings.reopen_seconds * 1000:.1f} ms"),
            ("store.last_lsn", f"# {store.last_lsn:,} (before closing: {last_lsn:,})"),
            ("store.checksum() == checksum_before_close", f"# {same_checksum}"),
            ("store.get('subscribers', email) == profile_before", f"# {same_profile}"),
        ]
        width = max(len(code) for code, _ in lines)
        for code, comment in lines:
            _say(f"  >>> {code:<{width}}  {comment}")
        if store.last_lsn != last_lsn or not same_checksum or not same_profile:
            raise ReplikvError(f"the store changed across close and reopen in {self.store_dir}")
        return store

    # 9. Replication ---------------------------------------------------------------------------

    def _replicate(self, store: Store) -> None:
        _heading("9. Replication: two replicas on 127.0.0.1 follow the store")
        with tempfile.TemporaryDirectory(prefix="replikv-demo-replicas-") as replicas_dir:
            primary = Primary(store, ship_interval=0.05)
            try:
                _code("primary = replikv.Primary(store, listen='127.0.0.1:0', ship_interval=0.05)")
                _result(f"{primary!r}")
                started = time.perf_counter()
                replicas = [
                    Replica(Path(replicas_dir) / name, primary=primary.address, name=name)
                    for name in ("eu-1", "us-1")
                ]
                try:
                    self._follow(store, primary, replicas, started)
                finally:
                    for replica in replicas:
                        replica.close()
            finally:
                primary.close()

    def _follow(
        self, store: Store, primary: Primary, replicas: list[Replica], started: float
    ) -> None:
        _code("replica = replikv.Replica(dir, primary=primary.address, name='eu-1')  # and 'us-1'")
        target = store.last_lsn
        for replica in replicas:
            if not replica.wait_for(target, timeout=120):
                raise ReplikvError(f"replica {replica.name} did not catch up: {replica.status()}")
        self.timings.catch_up_seconds = time.perf_counter() - started
        rows = sum(store.count(table) for table in store.tables())
        _say(
            f"  both replicas caught up with {target:,} log entries ({rows:,} rows) "
            f"in {self.timings.catch_up_seconds:.2f} s"
        )
        _say(
            f"\n  Writes go on ({REPLICATED_TRANSACTIONS:,} transactions of "
            f"{REPLICATED_EVENTS} events); the lag while they stream:"
        )
        done = threading.Event()
        workload = threading.Thread(target=self._stream_events, args=(store, done))
        workload.start()
        samples = []
        while not done.wait(LAG_SAMPLE_SECONDS):
            samples.append(primary.status())
        workload.join()
        lag_rows = [
            (
                f"{sample_number * LAG_SAMPLE_SECONDS:.1f} s",
                *(
                    f"{info.lag_lsn:>4} entries / {info.lag_seconds * 1000:5.1f} ms"
                    for info in sample
                ),
            )
            for sample_number, sample in enumerate(samples[:10], start=1)
        ]
        names = [info.name for info in samples[0]] if samples else []
        _table(("after", *(f"lag of {name}" for name in names)), lag_rows, "<" + ">" * len(names))
        featured = self.featured
        _say("\n  Consent must never be lost: a sync write returns once a replica holds it on disk")
        _code(f"store.put('subscribers', {featured!r}, profile, durability='sync')")
        profile = store.get("subscribers", featured)
        _result(f"{store.put('subscribers', featured, profile, durability='sync')}")
        for replica in replicas:
            replica.wait_for(store.last_lsn, timeout=60)
        primary_checksum = store.checksum()
        _say()
        for replica in replicas:
            same = replica.store.checksum() == primary_checksum
            _say(f"  >>> {replica.name}.store.checksum() == store.checksum()  # {same}")
            if not same:
                raise ReplikvError(f"replica {replica.name} differs from the primary")

    def _stream_events(self, store: Store, done: threading.Event) -> None:
        """Writes ``REPLICATED_TRANSACTIONS`` transactions of ``REPLICATED_EVENTS`` events."""
        try:
            events = self.data.events(first_id=10_000_000, random_source="replicated")
            for _ in range(REPLICATED_TRANSACTIONS):
                with store.transaction() as tx:
                    for event_id, event in itertools.islice(events, REPLICATED_EVENTS):
                        tx.put("events", event_id, event)
        finally:
            done.set()

    def _failover(self) -> None:
        _heading("11. Failover: the primary dies mid-stream; its sync replica is promoted")
        with tempfile.TemporaryDirectory(prefix="replikv-demo-failover-") as workdir:
            _demo_failover.act(Path(workdir), _say, _code)

    # Summary ---------------------------------------------------------------------------------

    def _summary(self, checksum: Checksum, total_seconds: float) -> None:
        _heading("Summary")
        loads = {load.table: load for load in self.timings.loads}
        tables = [load.table for load in self.timings.loads]
        tables += sorted(set(checksum.tables) - set(tables))
        rows = [
            (
                table,
                f"{loads[table].rows:,}" if table in loads else "0",
                _rate(loads[table].rows_per_second) if table in loads else "-",
                f"{checksum.rows[table]:,}",
                f"{checksum.tables[table]:#018x}",
            )
            for table in tables
        ]
        _table(("table", "loaded", "load rows/s", "rows now", "checksum"), rows, "<>>>>")
        _say()
        steps = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.timings.steps.items())
        facts = [
            ("durable put", _median_and_p99(self.timings.put_micros)),
            ("get", _median_and_p99(self.timings.get_micros)),
            ("reopen", f"{self.timings.reopen_seconds * 1000:.1f} ms"),
            ("replica catch-up", f"{self.timings.catch_up_seconds:.2f} s (two replicas)"),
            ("last LSN", f"{checksum.lsn:,}"),
            ("time by step", steps),
            ("total time", f"{total_seconds:.1f} s"),
        ]
        _table(("", ""), facts, "<<", show_header=False)


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _say(text: str = "") -> None:
    print(text, flush=True)  # flushed so progress bars on stderr appear after their heading


def _heading(text: str) -> None:
    _say(f"\n{text}\n{'-' * len(text)}")


def _code(text: str) -> None:
    """Prints Python source the way an interactive session shows it."""
    lines = text.rstrip("\n").splitlines()
    for number, line in enumerate(lines):
        _say(f"  {'>>>' if number == 0 else '...'} {line}".rstrip())
    if len(lines) > 1:
        _say("  ...")


def _result(text: str) -> None:
    _say("\n".join("  " + line for line in text.splitlines()))


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: str, *, show_header: bool = True
) -> None:
    """Prints rows in columns; ``align`` has one ``<`` or ``>`` per column."""
    lines = [list(header), *map(list, rows)] if show_header else [list(row) for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(align))]
    for line in lines:
        cells = (
            cell.ljust(width) if side == "<" else cell.rjust(width)
            for cell, width, side in zip(line, widths, align, strict=False)
        )
        _say(("  " + "  ".join(cells)).rstrip())


def _describe_change(change: Change) -> str:
    stamp = f"{change.timestamp:%Y-%m-%d %H:%M:%S.%f}"[:-3]
    ops = change.ops
    lines = [f"  lsn {change.lsn:,}  epoch {change.epoch}  {stamp} UTC  {len(ops):,} op(s)"]
    for op in ops[:OPS_SHOWN_PER_ENTRY]:
        line = f"      {op.kind:<6} {op.table}[{op.key!r}]"
        if op.kind == "put":
            line += f" = {_compact(op.value)}"
        lines.append(line if len(line) <= LINE_WIDTH else line[: LINE_WIDTH - 3] + "...")
    if len(ops) > OPS_SHOWN_PER_ENTRY:
        lines.append(f"      ... and {len(ops) - OPS_SHOWN_PER_ENTRY:,} more in this entry")
    return "\n".join(lines)


def _compact(value: Any) -> str:
    """A one-line rendering of a value, with datetimes in ISO form."""
    if isinstance(value, dt.datetime):
        return f"{value.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_compact(item) for item in value) + "]"
    return repr(value)


def _micros(value: float) -> str:
    return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.1f} us"


def _latency_columns(samples: Sequence[float]) -> tuple[str, str, str]:
    return (
        _micros(percentile(sorted(samples), 50)),
        _micros(percentile(sorted(samples), 99)),
        _micros(max(samples)),
    )


def _median_and_p99(samples: Sequence[float]) -> str:
    ordered = sorted(samples)
    return f"median {_micros(percentile(ordered, 50))}, p99 {_micros(percentile(ordered, 99))}"


def _rate(rows_per_second: float) -> str:
    return "-" if rows_per_second == float("inf") else f"{rows_per_second:,.0f}"
