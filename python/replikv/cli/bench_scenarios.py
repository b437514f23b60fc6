"""The scenarios of ``replikv bench`` on one machine's disk, replikv next to sqlite3, and
what every scenario uses: each runs replikv and its baseline on the same data, durable
alike, in interleaved timed slices (see ``replikv._measure``), and returns what it measured
as an ``Outcome``."""

from __future__ import annotations

import itertools
import random
import shutil
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .._measure import Slice, interleaved, percentile, timed, timed_slice
from .._progress import ProgressBar
from .bench_report import Figure, Outcome
from .bench_sides import ReplikvSide, Row, Side, SqliteSide, profile, profile_key, profiles
from .opening import CommandError

#: Reads per timed step of the get scenario: the clock is read between steps.
GETS_PER_STEP = 100
#: Random keys the get scenario cycles through.
GET_KEYS = 100_000


@dataclass(frozen=True)
class Settings:
    """How much each scenario does."""

    rows: int
    #: Seconds per timed slice.
    seconds: float
    #: Timed slices per side in each scenario.
    rounds: int
    #: Bulk loads per side.
    loads: int


@dataclass
class Run:
    """One run's settings, directory and the data its scenarios share."""

    settings: Settings
    directory: Path
    _rows: list[Row] | None = None
    #: Whether ``loaded/`` holds the rows, loaded by both sides.
    loaded: bool = False

    def rows(self) -> list[Row]:
        """The ``settings.rows`` profiles, made once."""
        if self._rows is None:
            self._rows = profiles(self.settings.rows)
        return self._rows

    def part(self, name: str) -> Path:
        """The directory ``name`` of the run's directory, created on first use."""
        path = self.directory / name
        path.mkdir(exist_ok=True)
        return path


@contextmanager
def slices_bar(description: str, total: int) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr counting ``total`` timed slices; yields its step."""
    bar = ProgressBar(description, total, unit="slices")
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        bar(done)

    try:
        yield step
    finally:
        bar.close()


def rate(slices: Sequence[Slice]) -> float:
    """The median of the slices' rates."""
    return statistics.median(piece.rate for piece in slices)


def step_percentile(slices: Sequence[Slice], p: float) -> float:
    """The ``p``-th percentile of every step of every slice, in microseconds."""
    return percentile(sorted(s for piece in slices for s in piece.step_seconds), p) * 1e6


def putting(put: Callable[[str, dict[str, Any]], object], seconds: float) -> Callable[[], Slice]:
    """Timed slices of one put at a time, each of a new profile."""
    numbers = itertools.count()

    def step() -> int:
        number = next(numbers)
        put(profile_key(number), profile(number))
        return 1

    return lambda: timed_slice(step, seconds)


Place = tuple[str, Callable[[Path], Side], Path]


def places_in(directory: Path) -> list[Place]:
    """Each side's name, class and where its data goes in ``directory``."""
    return [
        (ReplikvSide.name, ReplikvSide, directory / "replikv"),
        (SqliteSide.name, SqliteSide, directory / "sqlite3.db"),
    ]


def opened(stack: ExitStack, places: Sequence[Place]) -> list[Side]:
    """Each side opened at its place, closed when ``stack`` closes."""
    sides: list[Side] = []
    for _, make, path in places:
        side = make(path)
        stack.callback(side.close)
        sides.append(side)
    return sides


def check(agrees: bool, what: str) -> None:
    """Stops the run if the two sides did not do the same work."""
    if not agrees:
        raise CommandError(f"the comparison is void: {what}")


# --------------------------------------------------------------------------------------------
# 1. durable single puts


def measure_put(run: Run) -> Outcome:
    settings = run.settings
    with ExitStack() as stack:
        sides = opened(stack, places_in(run.part("put")))
        timers = [(side.name, putting(side.put, settings.seconds)) for side in sides]
        for _, warm_up in timers:  # the first writes create files and tables
            warm_up()
        with slices_bar("put", len(timers) * settings.rounds) as step:
            slices = interleaved(timers, settings.rounds, step)
        first = profile_key(0)
        check(all(side.get(first) == profile(0) for side in sides), "a put did not read back")
    ours, theirs = slices["replikv"], slices["sqlite3"]
    return Outcome(
        "put",
        "one durable put of a profile at a time (sqlite3: one INSERT OR REPLACE per commit)",
        "sqlite3",
        [
            Figure("throughput", "puts/s", True, rate(ours), rate(theirs)),
            *(
                Figure(
                    f"p{p} latency",
                    "us",
                    False,
                    step_percentile(ours, p),
                    step_percentile(theirs, p),
                )
                for p in (50, 99)
            ),
        ],
        [
            f"{sum(s.operations for s in ours):,} and {sum(s.operations for s in theirs):,} "
            "puts, each a new key; latency percentiles over every put"
        ],
    )


# --------------------------------------------------------------------------------------------
# 2. bulk load, and the loaded table that get and scan read


def remove(path: Path) -> None:
    """A store's directory, or a sqlite3 database with its WAL files."""
    if path.is_dir():
        shutil.rmtree(path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def load_once(make: Callable[[Path], Side], path: Path, rows: Sequence[Row]) -> float:
    """Loads ``rows`` into a new store at ``path`` (whatever was there is removed first);
    returns the rows per second of the load alone."""
    remove(path)
    side = make(path)
    try:
        seconds = timed(lambda: side.load(rows))
        check(side.count() == len(rows), f"{side.name} holds {side.count():,} rows after a load")
    finally:
        side.close()
    return len(rows) / seconds


def measure_bulk(run: Run) -> Outcome:
    rows = run.rows()
    places = places_in(run.part("loaded"))
    timers = [(name, partial(load_once, make, path, rows)) for name, make, path in places]
    with slices_bar("bulk", len(timers) * run.settings.loads) as step:
        rates = interleaved(timers, run.settings.loads, step)
    run.loaded = True  # the last loads stay for get and scan
    ours, theirs = statistics.median(rates["replikv"]), statistics.median(rates["sqlite3"])
    return Outcome(
        "bulk",
        f"load {len(rows):,} profiles in one durable transaction "
        "(replikv: put_many; sqlite3: executemany, then commit)",
        "sqlite3",
        [Figure("throughput", "rows/s", True, ours, theirs)],
        [f"{run.settings.loads} loads per side, each into a new, empty store; median"],
    )


@contextmanager
def opened_loaded(run: Run) -> Iterator[list[Side]]:
    """Both sides' loaded tables, open; loaded first (not timed) if the bulk scenario did
    not run."""
    places = places_in(run.part("loaded"))
    if not run.loaded:
        bar = ProgressBar("load for get/scan (not timed)", len(places), unit="sides")
        try:
            for done, (_, make, path) in enumerate(places, 1):
                load_once(make, path, run.rows())
                bar(done)
        finally:
            bar.close()
        run.loaded = True
    with ExitStack() as stack:
        sides = opened(stack, places)
        for side in sides:  # the same warm caches for both, and the same rows
            check(side.scan_all() == run.settings.rows, f"{side.name} lost rows")
        yield sides


# --------------------------------------------------------------------------------------------
# 3. random point reads and 4. full scans


def measure_get(run: Run) -> Outcome:
    settings = run.settings
    chooser = random.Random(2026)
    numbers = [chooser.randrange(settings.rows) for _ in range(GET_KEYS)]
    keys = [profile_key(number) for number in numbers]
    steps = [keys[at : at + GETS_PER_STEP] for at in range(0, len(keys), GETS_PER_STEP)]
    with opened_loaded(run) as sides:
        for number in numbers[:50]:
            key = profile_key(number)
            check(all(side.get(key) == profile(number) for side in sides), f"{key!r} differs")

        def reading(side: Side) -> Callable[[], Slice]:
            batches = itertools.cycle(steps)
            return lambda: timed_slice(lambda: side.get_each(next(batches)), settings.seconds)

        with slices_bar("get", len(sides) * settings.rounds) as step:
            slices = interleaved(
                [(side.name, reading(side)) for side in sides], settings.rounds, step
            )
    return Outcome(
        "get",
        f"random point reads over the {settings.rows:,} loaded profiles, values decoded "
        "(sqlite3: SELECT ... WHERE key = ?, then json.loads)",
        "sqlite3",
        [Figure("throughput", "gets/s", True, rate(slices["replikv"]), rate(slices["sqlite3"]))],
        ["both sides read the same keys in the same random order"],
    )


def measure_scan(run: Run) -> Outcome:
    settings = run.settings
    with opened_loaded(run) as sides:
        timers = [
            (side.name, partial(timed_slice, side.scan_all, settings.seconds)) for side in sides
        ]
        with slices_bar("scan", len(sides) * settings.rounds) as step:
            slices = interleaved(timers, settings.rounds, step)
    return Outcome(
        "scan",
        f"read all {settings.rows:,} profiles, values decoded",
        "sqlite3",
        [Figure("throughput", "rows/s", True, rate(slices["replikv"]), rate(slices["sqlite3"]))],
        [
            "replikv in key order (store.scan); sqlite3 in its storage order "
            "(SELECT without ORDER BY, its fastest full read)"
        ],
    )
