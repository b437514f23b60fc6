"""The ``replikv`` command.

``replikv demo`` builds an email-marketing store (subscribers with consent flags, templates,
open/click events), loads it with ``put_many``, shows reads, writes, a transaction, a prefix
scan, the change log and checksums, reopens it, and prints what each step cost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import itertools
import json
import pprint
import random
import shutil
import sys
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import __version__, _demo_cache, _demo_failover
from ._args import positive
from ._cache_cli import add_command as add_cache_command
from ._core import Change, Checksum, Primary, Replica, Store
from ._operator import add_operator_commands
from ._serve import add_commands
from ._store import Key
from ._verify import add_command as add_verify_command
from .exceptions import ReplikvError

UTC = dt.timezone.utc


def main(argv: list[str] | None = None) -> int:
    """Runs the ``replikv`` command line; returns the process exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error argparse already reported
        return stop.code if isinstance(stop.code, int) else 2
    _tolerate_unencodable_output()
    command: Callable[[argparse.Namespace], int] = args.run
    return command(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replikv",
        description="Replicated key-value stores for marketing data, on one durable change log.",
    )
    parser.add_argument("--version", action="version", version=f"replikv {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="load an email-marketing data set into a store and show the API, with timings",
        description=(
            "Create a store, load subscribers, templates and open/click events into it, show "
            "reads, a transaction, a scan and the change log, reopen it, and print a summary "
            "with timings. The store is temporary unless --keep is given."
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
        help="create the store here (a new or empty directory) instead of a temporary one",
    )
    demo.add_argument("--keep", action="store_true", help="keep the store and print where it is")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=_run_demo)
    add_commands(commands)
    add_operator_commands(commands)
    add_verify_command(commands)
    add_cache_command(commands)
    scrub = commands.add_parser(
        "scrub",
        help="check every stored row of a store; exits 1 if anything is damaged",
        description=(
            "Read every row of the store in DIR, check each row's CRC and each table's row "
            "count and checksum against the stats the store keeps, and list what is damaged. "
            "Exits 0 if the store is sound, 1 if anything is damaged or the store cannot be "
            "opened. The store must not be open elsewhere (stop its primary or replica first)."
        ),
    )
    scrub.add_argument("dir", type=Path, metavar="DIR", help="the store's directory")
    scrub.add_argument("--json", action="store_true", help="print the report as JSON")
    scrub.add_argument("--quiet", action="store_true", help="no progress bar")
    scrub.set_defaults(run=_run_scrub)
    detach = commands.add_parser(
        "detach",
        help="make a replica's directory a standalone, writable store",
        description=(
            "A replica's directory opened as a plain Store is read-only. Detaching makes it a "
            "standalone store that accepts writes; its history then forks from the primary's, "
            "so it can never follow that primary again. Stop the replica first."
        ),
    )
    detach.add_argument("dir", type=Path, metavar="DIR", help="the replica's directory")
    detach.set_defaults(run=_run_detach)
    return parser


def _tolerate_unencodable_output() -> None:
    # Names such as "Jürgen" must not crash the demo on a terminal that is not UTF-8.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")


# --------------------------------------------------------------------------------------------
# Maintenance: scrub and detach
# --------------------------------------------------------------------------------------------


def _existing_store(command: str, directory: Path) -> bool:
    if (directory / "tables.redb").is_file():
        return True
    print(f"replikv {command}: error: {directory} is not a replikv store", file=sys.stderr)
    return False


def _run_scrub(args: argparse.Namespace) -> int:
    if not _existing_store("scrub", args.dir):
        return 1
    try:
        with Store(args.dir) as store:
            report = store.scrub(progress=not (args.quiet or args.json))
    except KeyboardInterrupt:
        print("replikv scrub: interrupted", file=sys.stderr)
        return 130
    except (ReplikvError, OSError) as failure:
        print(f"replikv scrub: error: {failure}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), default=repr, indent=2))
        return 0 if report.ok else 1
    tables = ", ".join(f"{name} {rows:,}" for name, rows in report.tables.items()) or "none"
    print(f"{args.dir}: {report.rows_checked:,} rows checked at LSN {report.lsn} ({tables})")
    if report.ok:
        print("no damage found")
        return 0
    print(f"{len(report.damaged)} problem(s):")
    for damage in report.damaged:
        where = "whole table" if damage.key is None else f"key {damage.key!r}"
        print(f"  {damage.table}, {where}: {damage.reason}")
    print(
        "To recover, re-seed the store from a replica (see the README, 'Damaged stores'); "
        "until then, reads of the damaged rows raise CorruptionError."
    )
    return 1


def _run_detach(args: argparse.Namespace) -> int:
    if not _existing_store("detach", args.dir):
        return 1
    try:
        detached = Store.detach(args.dir)
    except (ReplikvError, OSError) as failure:
        print(f"replikv detach: error: {failure}", file=sys.stderr)
        return 1
    if detached:
        print(
            f"{args.dir} is now a standalone, writable store; it can never follow its primary again"
        )
    else:
        print(f"{args.dir} did not belong to a replica: nothing changed")
    return 0


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
    except (ReplikvError, OSError) as failure:
        print(f"replikv demo: error: {failure}", file=sys.stderr)
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
        self.data = _MarketingData(args.seed)
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
        prefix = _ascii(subscribers[self.featured]["name"].split()[0])  # its first name
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


def _percentile(samples: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * percent // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def _micros(value: float) -> str:
    return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.1f} us"


def _latency_columns(samples: Sequence[float]) -> tuple[str, str, str]:
    return (
        _micros(_percentile(samples, 50)),
        _micros(_percentile(samples, 99)),
        _micros(max(samples)),
    )


def _median_and_p99(samples: Sequence[float]) -> str:
    return f"median {_micros(_percentile(samples, 50))}, p99 {_micros(_percentile(samples, 99))}"


def _rate(rows_per_second: float) -> str:
    return "-" if rows_per_second == float("inf") else f"{rows_per_second:,.0f}"


# --------------------------------------------------------------------------------------------
# The data set: deterministic for a seed, stdlib only
# --------------------------------------------------------------------------------------------

DEMO_NOW = dt.datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
SIGNUPS_FROM = dt.datetime(2018, 1, 1, tzinfo=UTC)
SIGNUPS_UNTIL = dt.datetime(2026, 6, 30, tzinfo=UTC)
CLICK_SHARE = 0.22  # clicks per open+click event: a click-to-open rate of ~28%
EVENT_CHUNK = 8192

# Names by language; countries (weighted like a European/US retailer's list) pick a pool.
NAMES: dict[str, tuple[str, str]] = {
    "en": (
        "James Mary John Patricia Robert Jennifer Michael Linda David Emily Sarah Daniel Olivia "
        "Liam Emma Noah Ava Ethan Sophia Mason Grace Chloe Jack Megan William Elizabeth Joseph "
        "Susan Thomas Jessica Charles Karen Christopher Nancy Matthew Lisa Anthony Betty Mark "
        "Margaret Andrew Ashley Joshua Kimberly Kevin Amanda Brian Rebecca George Laura Ryan "
        "Hannah Oliver Amelia Harry Isla Samuel Lucy Benjamin Ruby",
        "Smith Johnson Williams Brown Jones Miller Davis Wilson Taylor Anderson Thomas Moore "
        "Martin Jackson White Harris Clark Lewis Walker Hall O'Brien Murphy Evans Wright Young "
        "King Scott Green Baker Adams Nelson Hill Campbell Mitchell Roberts Carter Phillips Turner "
        "Parker Collins Edwards Stewart Morris Rogers Reed Cook Morgan Bell Cooper Richardson Cox "
        "Howard Ward Wood Hughes Price Bennett Gray Kelly Foster",
    ),
    "de": (
        "Lukas Anna Leon Lea Finn Hannah Jonas Mia Paul Emma Felix Lena Maximilian Sophie "
        "Jürgen Sabine Tobias Katharina Niklas Julia Stefan Claudia Matthias Laura Florian "
        "Johanna Andreas Marie",
        "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Koch "
        "Richter Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann Hartmann Lange "
        "Schmitt Werner Krause Meier Lehmann Köhler",
    ),
    "fr": (
        "Louis Camille Hugo Léa Gabriel Chloé Arthur Manon Jules Inès Lucas Zoé Théo Élodie "
        "Nicolas Juliette Antoine Margaux Mathieu Clémence Julien Pauline Maxime Sarah",
        "Martin Bernard Dubois Thomas Robert Richard Petit Durand Leroy Moreau Simon Laurent "
        "Lefèvre Girard Michel Garcia David Bertrand Roux Vincent Fournier Morel Mercier "
        "Blanc Guérin Faure",
    ),
    "es": (
        "Hugo Lucía Martín Sofía Pablo María Alejandro Paula Daniel Carmen Javier Elena José "
        "Marta Diego Valeria Sergio Andrea Carlos Laura Adrián Claudia Manuel Isabel Raúl Ana",
        "García Rodríguez González Fernández López Martínez Sánchez Pérez Gómez Jiménez Ruiz "
        "Hernández Díaz Moreno Muñoz Álvarez Romero Alonso Gutiérrez Navarro Torres Domínguez "
        "Vázquez Ramos Gil Ramírez",
    ),
    "it": (
        "Leonardo Giulia Francesco Sofia Alessandro Aurora Lorenzo Alice Matteo Ginevra Andrea "
        "Chiara Marco Francesca Giuseppe Elena Davide Martina Simone Sara Luca Valentina "
        "Federico Beatrice",
        "Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco Bruno Gallo "
        "Conti Fontana Costa Giordano Mancini Rizzo Lombardi Moretti Barbieri Caruso Ferri "
        "Galli Leone Longo",
    ),
    "pt": (
        "Miguel Helena Arthur Alice Heitor Laura Bernardo Valentina Davi Júlia Gabriel Beatriz "
        "João Ana Pedro Mariana Lucas Camila Rafael Larissa Thiago Fernanda Felipe Letícia",
        "Silva Santos Oliveira Souza Rodrigues Ferreira Alves Pereira Lima Gomes Costa Ribeiro "
        "Martins Carvalho Almeida Lopes Soares Fernandes Vieira Barbosa Rocha Dias Nascimento "
        "Araújo Moreira Cardoso",
    ),
    "nl": (
        "Daan Emma Sem Julia Lucas Mila Levi Tess Finn Sophie Bram Anna Noah Zoë Jesse Sanne "
        "Thijs Fleur Ruben Lotte Lars Iris",
        "Jansen Visser Smit Meijer Bakker Mulder Bos Vos Peters Hendriks Dekker Brouwer "
        "Janssen Vermeulen Willems Koster Prins Huisman Kok Postma Kuipers Veenstra",
    ),
    "ja": (
        "Haruto Yui Sota Himari Yuto Aoi Riku Sakura Ren Hina Kaito Mei Hiroshi Yuki Takumi "
        "Rin Kenji Akari Daiki Miyu",
        "Sato Suzuki Takahashi Tanaka Watanabe Ito Yamamoto Nakamura Kobayashi Kato Yoshida "
        "Yamada Sasaki Matsumoto Inoue Kimura Hayashi Shimizu Yamazaki Mori",
    ),
    "hi": (
        "Aarav Saanvi Vihaan Ananya Arjun Diya Reyansh Aadhya Krishna Isha Rohan Priya Aditya "
        "Kavya Rahul Neha Vikram Pooja Sanjay Anjali",
        "Sharma Verma Patel Gupta Singh Kumar Reddy Nair Iyer Mehta Joshi Rao Das Kapoor "
        "Chopra Malhotra Bhat Pillai Agarwal Banerjee",
    ),
}
COUNTRIES: tuple[tuple[str, str, int], ...] = (
    ("US", "en", 30), ("GB", "en", 10), ("CA", "en", 5), ("AU", "en", 3), ("IE", "en", 1),
    ("DE", "de", 10), ("AT", "de", 1), ("CH", "de", 1), ("FR", "fr", 8), ("BE", "fr", 1),
    ("ES", "es", 5), ("MX", "es", 3), ("IT", "it", 5), ("BR", "pt", 6), ("PT", "pt", 1),
    ("NL", "nl", 3), ("JP", "ja", 3), ("IN", "hi", 4),
)  # fmt: skip
# Reserved names only (RFC 2606): a generated address can never be somebody's real one.
DOMAINS: tuple[tuple[str, int], ...] = (
    ("example.com", 30), ("example.net", 15), ("example.org", 10), ("mail.example.com", 10),
    ("inbox.example.net", 8), ("post.example.org", 5), ("contoso.example", 2),
    ("fabrikam.example", 2),
)  # fmt: skip
TAGS = (
    "vip", "loyalty", "black-friday-2025", "abandoned-cart", "webinar", "mobile-app", "trial",
    "referral", "b2b", "outdoor", "running", "kids",
)  # fmt: skip
TEMPLATES: dict[str, tuple[str, str, str]] = {  # key: (subject, heading, call to action)
    "welcome": ("Welcome to Lumen, {{first_name}}!", "Good to have you", "Start exploring"),
    "weekly-digest": ("Your weekly picks from Lumen", "Picked for you", "See this week's picks"),
    "spring-sale": ("Spring sale: 30% off everything until Sunday", "30% off", "Shop the sale"),
    "cart-reminder": ("You left something in your cart", "Still thinking?", "Back to my cart"),
    "win-back": ("We miss you, {{first_name}}: here is 15% off", "Come back", "Use my 15%"),
    "consent-confirmation": (
        "Please confirm your email preferences",
        "Your preferences",
        "Confirm my choices",
    ),
}
LANDING_PAGES = (
    "new-arrivals", "sale", "jackets", "boots", "backpacks", "blog/trail-guide", "stores",
    "account/preferences",
)  # fmt: skip


class _MarketingData:
    """Generates the demo's rows; the same seed always gives the same rows."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.pick = self._random("pick")
        self.emails: list[str] = []
        self.engagement: list[float] = []  # cumulative weights: a few subscribers open a lot
        self.campaigns = self._campaigns()

    def _random(self, purpose: str) -> random.Random:
        return random.Random(f"replikv-demo/{self.seed}/{purpose}")

    def subscribers(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        rng = self._random("subscribers")
        countries = rng.choices(COUNTRIES, weights=[c[2] for c in COUNTRIES], k=count)
        domains = rng.choices([d[0] for d in DOMAINS], weights=[d[1] for d in DOMAINS], k=count)
        pools = {lang: (first.split(), last.split()) for lang, (first, last) in NAMES.items()}
        signup_span = (SIGNUPS_UNTIL - SIGNUPS_FROM).total_seconds()
        taken: set[str] = set()
        rows = []
        for (country, lang, _), domain in zip(countries, domains, strict=True):
            firsts, lasts = pools[lang]
            first, last = rng.choice(firsts), rng.choice(lasts)
            email = _unique(rng, _email(rng, first, last, domain), taken)
            signup_seconds = int(signup_span * rng.random() ** 0.6)  # the list keeps growing
            rows.append(
                (
                    email,
                    {
                        "name": f"{first} {last}",
                        "email": email,
                        "country": country,
                        "signup": SIGNUPS_FROM + dt.timedelta(seconds=signup_seconds),
                        "consent": {
                            "newsletter": rng.random() < 0.85,
                            "promotions": rng.random() < 0.55,
                        },
                        "tags": rng.sample(TAGS, rng.choice((0, 0, 1, 1, 1, 2, 3))),
                    },
                )
            )
        self.emails = [email for email, _ in rows]
        weights = (rng.paretovariate(1.2) for _ in rows)
        self.engagement = list(itertools.accumulate(weights))
        return rows

    def templates(self) -> list[tuple[str, dict[str, Any]]]:
        rng = self._random("templates")
        rows = []
        for key, (subject, heading, action) in TEMPLATES.items():
            page = rng.choice(LANDING_PAGES)
            html = (
                f'<html><body style="font-family:sans-serif"><h1>{heading}</h1>'
                "<p>Hi {{first_name}},</p><p>{{body}}</p>"
                f'<p><a href="https://shop.lumen.example/{page}?utm_campaign={{{{campaign}}}}">'
                f"{action}</a></p>"
                '<p style="font-size:11px"><a href="{{unsubscribe_url}}">Unsubscribe</a></p>'
                "</body></html>"
            )
            edited = SIGNUPS_UNTIL - dt.timedelta(
                days=rng.randrange(30, 400), minutes=rng.randrange(1440)
            )
            rows.append((key, {"subject": subject, "html": html, "updated_at": edited}))
        return rows

    def _campaigns(self) -> list[tuple[str, dt.datetime, list[str]]]:
        """(campaign id, sent at, links) for the first half of 2026."""
        rng = self._random("campaigns")
        first_monday = dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        sends = [
            (f"2026-w{week + 1:02d}-weekly-digest", first_monday + dt.timedelta(weeks=week))
            for week in range(26)
        ]
        sends += [
            ("2026-02-win-back", dt.datetime(2026, 2, 15, 17, 0, tzinfo=UTC)),
            ("2026-03-spring-sale-launch", dt.datetime(2026, 3, 20, 7, 30, tzinfo=UTC)),
            ("2026-03-spring-sale-reminder", dt.datetime(2026, 3, 27, 7, 30, tzinfo=UTC)),
            ("2026-04-spring-sale-last-call", dt.datetime(2026, 4, 3, 7, 30, tzinfo=UTC)),
            ("2026-05-win-back", dt.datetime(2026, 5, 15, 17, 0, tzinfo=UTC)),
            ("2026-06-consent-confirmation", dt.datetime(2026, 6, 1, 8, 0, tzinfo=UTC)),
        ]
        campaigns = []
        for campaign, sent_at in sends:
            pages = rng.sample(LANDING_PAGES, 3)
            links = [
                f"https://shop.lumen.example/{page}?utm_source=email&utm_campaign={campaign}"
                for page in pages
            ]
            campaigns.append((campaign, sent_at, links))
        return campaigns

    def events(self, *, first_id: int, random_source: str) -> Iterator[tuple[int, dict[str, Any]]]:
        """Open and click events with ids from ``first_id`` on, without end."""
        if not self.emails:
            raise RuntimeError("generate the subscribers before their events")
        rng = self._random(random_source)
        event_id = first_id
        while True:
            who = rng.choices(self.emails, cum_weights=self.engagement, k=EVENT_CHUNK)
            which = rng.choices(self.campaigns, k=EVENT_CHUNK)
            for email, (campaign, sent_at, links) in zip(who, which, strict=True):
                # Opens trickle in over hours after a send; a click follows its open.
                at = sent_at + dt.timedelta(seconds=int(rng.expovariate(1 / 5400)))
                event: dict[str, Any]
                if rng.random() < CLICK_SHARE:
                    event = {
                        "type": "click",
                        "subscriber": email,
                        "campaign": campaign,
                        "at": at,
                        "url": rng.choice(links),
                    }
                else:
                    event = {"type": "open", "subscriber": email, "campaign": campaign, "at": at}
                yield event_id, event
                event_id += 1

    def featured_subscriber(self, store: Store) -> str:
        """A subscriber with some consent to revoke (any subscriber if nobody has one)."""
        start = self.pick.randrange(len(self.emails))
        for email in itertools.chain(self.emails[start:], self.emails[:start]):
            consent = store.get("subscribers", email)["consent"]
            if consent["newsletter"] or consent["promotions"]:
                return email
        return self.emails[start]


def _email(rng: random.Random, first: str, last: str, domain: str) -> str:
    f, l = _ascii(first), _ascii(last)  # noqa: E741
    style = rng.random()
    if style < 0.35:
        local = f"{f}.{l}"
    elif style < 0.50:
        local = f"{f[0]}{l}"
    elif style < 0.60:
        local = f"{f}{l[0]}{rng.randrange(60, 100)}"
    elif style < 0.70:
        local = f"{f}_{l}"
    elif style < 0.78:
        local = f"{l}.{f}"
    elif style < 0.90:
        local = f"{f}{rng.randrange(1, 1000)}"
    else:
        local = f"{f}.{l}{rng.randrange(1, 100)}"
    return f"{local}@{domain}"


def _unique(rng: random.Random, email: str, taken: set[str]) -> str:
    """``email``, or ``email`` with a number after its local part if it is taken."""
    local, domain = email.split("@")
    candidate, digits = email, 2
    while candidate in taken:  # like people do: add a number, a longer one if need be
        candidate = f"{local}{rng.randrange(10 ** (digits - 1), 10**digits)}@{domain}"
        digits = min(digits + 1, 6)
    taken.add(candidate)
    return candidate


def _ascii(name: str) -> str:
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())
