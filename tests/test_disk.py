"""Bounded disk use: log retention by the store's own policy, segments that start small,
stats() that add up to the directory, compaction under readers, and crash safety with
small segments that roll and are dropped while a writer is killed."""

from __future__ import annotations

import contextlib
import datetime
import inspect
import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import replikv
from polling import eventually
from test_crash import run_until_killed

MiB = 1 << 20


def allocated_bytes(root: Path) -> int:
    """What the files under ``root`` take on disk, as ``du`` counts them. A file removed
    between the listing and its ``stat`` (a dropped segment the store deletes in the
    background) takes nothing: callers compare readings until they agree."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(Path(directory) / name).st_blocks * 512
    return total


def row(i: int) -> dict[str, Any]:
    return {"email": f"u{i:07d}@example.com", "name": f"User {i}", "pad": "x" * 150}


def load(store: replikv.Store, start: int, count: int, table: str = "t") -> None:
    store.put_many(table, [(f"k{i:012d}", row(i)) for i in range(start, start + count)])


def test_the_default_policy_is_bounded() -> None:
    defaults = inspect.signature(replikv.Store).parameters
    retain_bytes = defaults["retain_bytes"].default
    retain_seconds = defaults["retain_seconds"].default
    cache_bytes = defaults["cache_bytes"].default
    assert isinstance(retain_bytes, int) and 0 < retain_bytes <= 1024 * MiB
    assert isinstance(retain_seconds, float) and 0 < retain_seconds <= 30 * 86_400
    assert isinstance(cache_bytes, int) and 16 * MiB <= cache_bytes <= 256 * MiB


@pytest.mark.parametrize(
    "option", [{"retain_bytes": 0}, {"retain_seconds": 0.0}, {"cache_bytes": 1000}]
)
def test_retention_and_cache_options_out_of_range_are_refused(
    tmp_path: Path, option: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match=next(iter(option))):
        replikv.Store(tmp_path / "db", **option)
    with pytest.raises(ValueError, match=r"^retain_bytes cannot be negative \(got -1\)$"):
        replikv.Store(tmp_path / "db", retain_bytes=-1)


# Steady writes for a few seconds; the bound catches a hang.
@pytest.mark.timeout(120)
@pytest.mark.parametrize("fsync", [True, False])
def test_steady_writes_keep_the_log_under_its_cap(
    open_store: Callable[..., replikv.Store], fsync: bool
) -> None:
    cap = 2 * MiB
    # Segments are at most a quarter of the cap; the last one is preallocated whole.
    bound = cap + cap // 4
    # A store that skips fsync checkpoints all the same (syncing nothing): the log behind
    # its tables' checkpoint is what retention may drop.
    store = open_store(retain_bytes=cap, checkpoint_seconds=0.05, fsync=fsync)
    written = 0

    def shrunk() -> bool:
        store.put("ticks", "t", written)
        return store.stats().log_bytes <= bound

    for round_ in range(12):
        load(store, round_ * 2000, 2000)
        written += 2000
        # Small writes go on while retention catches up: the store is under steady writes.
        eventually(f"the log to shrink under {bound} bytes (round {round_})", shrunk)
    stats = store.stats()
    assert stats.log_bytes <= bound
    assert stats.oldest_lsn > 1, "old segments were dropped"
    assert stats.tables["t"] == written, "retention drops log, never rows"
    # Retention and the cutting of dropped segments run in the background: the directory
    # may change between the two readings, so they must agree once it holds still.
    log = Path(store.path) / "log"
    eventually(
        "stats() to count what the log directory takes",
        lambda: allocated_bytes(log) == store.stats().log_bytes == allocated_bytes(log),
    )


def test_changes_below_the_retained_log_raise_log_truncated(
    open_store: Callable[..., replikv.Store],
) -> None:
    store = open_store(retain_bytes=1 * MiB, checkpoint_seconds=0.05)
    for i in range(20):
        load(store, i * 500, 500)
    eventually(
        "retention to drop the oldest segments",
        lambda: store.put("ticks", "t", 1) is not None and store.oldest_lsn > 1,
    )
    with pytest.raises(replikv.LogTruncated):
        list(store.changes(since=0))
    oldest = store.oldest_lsn
    retained = list(store.changes(since=oldest - 1))
    assert retained and retained[0].lsn == oldest
    assert retained[-1].lsn <= store.last_lsn


def test_none_keeps_the_whole_log(open_store: Callable[..., replikv.Store]) -> None:
    store = open_store(retain_bytes=None, retain_seconds=None, segment_bytes=64 * 1024)
    for i in range(20):
        load(store, i * 500, 500)
    store.drop_log_before(0)
    assert store.oldest_lsn == 1
    assert [c.lsn for c in store.changes(since=0)] == list(range(1, 21))


def test_a_large_dropped_segment_leaves_no_file_and_a_crashs_leftover_goes_at_open(
    open_store: Callable[..., replikv.Store],
) -> None:
    # Segments over 2 MiB are renamed out of the log and cut down in the background
    # before they go; what a crash leaves of one (*.seg.dropped) goes at the next open.
    store = open_store(retain_bytes=None, retain_seconds=None, segment_bytes=8 * MiB)
    for i in range(3):
        store.put("blobs", i, b"x" * (5 * MiB))  # each fills a segment of its own
    log = Path(store.path) / "log"
    before = sorted(p.name for p in log.iterdir())
    assert store.drop_log_before(store.last_lsn) > 0
    path = store.path
    store.close()  # waits for the cut
    after = sorted(p.name for p in log.iterdir())
    assert not [n for n in after if n.endswith(".dropped")]
    assert set(after) < set(before)
    (log / "00000000000000000001.seg.dropped").write_bytes(b"\0" * 4096)
    with replikv.Store(path) as reopened:
        assert reopened.get("blobs", 2) == b"x" * (5 * MiB)
        assert reopened.last_lsn == 3
    assert sorted(p.name for p in log.iterdir()) == after


def test_stats_add_up_to_the_directory(open_store: Callable[..., replikv.Store]) -> None:
    empty = open_store("empty")
    stats = empty.stats()
    assert stats.oldest_time is None and stats.last_lsn == 0 and stats.tables == {}
    assert repr(stats).endswith("no log entries)")
    assert stats.total_bytes == allocated_bytes(Path(empty.path))

    store = open_store()
    before = datetime.datetime.now(datetime.timezone.utc)
    load(store, 0, 3000, "profiles")
    store.put("events", 1, {"kind": "open"})
    store.delete("events", 1)
    stats = store.stats()
    root = Path(store.path)
    assert stats.total_bytes == allocated_bytes(root)
    assert stats.total_bytes == stats.log_bytes + stats.tables_bytes + stats.other_bytes
    assert stats.log_bytes == allocated_bytes(root / "log")
    assert stats.tables_bytes == os.stat(root / "tables.redb").st_blocks * 512
    assert stats.tables == {"profiles": 3000}  # an emptied table is gone, as from tables()
    assert stats.last_lsn == store.last_lsn == 3
    assert stats.oldest_lsn == 1
    assert stats.oldest_time is not None
    assert stats.oldest_time.tzinfo == datetime.timezone.utc
    assert before - datetime.timedelta(seconds=1) <= stats.oldest_time
    as_dict = stats.to_dict()
    assert as_dict["total_bytes"] == stats.total_bytes
    assert as_dict["tables"] == {"profiles": 3000}
    assert "rows=3000 in 1 table," in repr(stats) and "MiB" in repr(stats)


def test_an_empty_store_is_small_on_disk(open_store: Callable[..., replikv.Store]) -> None:
    store = open_store()
    # Its first segment, and a block for the file naming the log's store.
    assert store.stats().log_bytes <= 1 * MiB + 4096
    assert allocated_bytes(Path(store.path)) <= 4 * MiB


# Loads, deletes and compacts 60k rows while a reader thread reads.
@pytest.mark.timeout(120)
def test_compact_reclaims_space_after_deletes_and_a_reader_keeps_reading(
    open_store: Callable[..., replikv.Store],
) -> None:
    store = open_store()
    count = 60_000
    for start in range(0, count, 10_000):
        load(store, start, 10_000)
    with store.transaction() as tx:
        for i in range(count):
            if i % 10:
                tx.delete("t", f"k{i:012d}")
    kept = [i for i in range(count) if i % 10 == 0]
    stop = threading.Event()
    reads = 0
    failures: list[str] = []

    def reader() -> None:
        nonlocal reads
        rng = random.Random(7)
        while not stop.is_set():
            i = rng.choice(kept)
            try:
                value = store.get("t", f"k{i:012d}")
            except Exception as err:
                failures.append(repr(err))
                return
            if value != row(i):
                failures.append(f"k{i}: {value!r}")
                return
            reads += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        eventually("the reader to start", lambda: reads > 0)
        # Apparent size: pages written since the last checkpoint may not be allocated yet.
        before = os.stat(Path(store.path) / "tables.redb").st_size
        reclaimed = store.compact()
        reads_during = reads
        eventually("the reader to read after compaction", lambda: reads > reads_during)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not failures, failures
    after = store.stats().tables_bytes
    assert reclaimed > 0
    assert after < before // 2, "nine rows in ten were deleted"
    assert os.stat(Path(store.path) / "tables.redb").st_size < before // 2
    assert len(store.table("t")) == len(kept)
    assert store.scrub().ok


def test_writers_run_while_an_arrow_stream_keeps_compaction_waiting(
    open_store: Callable[..., replikv.Store],
) -> None:
    store = open_store()
    load(store, 0, 20_000)
    with store.transaction() as tx:
        for i in range(0, 20_000, 2):
            tx.delete("t", f"k{i:012d}")
    # A notebook's forgotten stream: it holds its read snapshot until it is deleted.
    stream: Any = store.table("t").to_arrow_batches()
    outcome: list[Any] = []
    compacting = threading.Thread(target=lambda: outcome.append(store.compact()))
    compacting.start()
    try:
        writes = 0

        def write() -> None:
            nonlocal writes
            for i in range(50):
                store.put("w", i, {"n": i})
                writes += 1

        writer = threading.Thread(target=write)
        writer.start()
        eventually("the writes to return while compaction waits", lambda: writes == 50, 20.0)
        writer.join(timeout=30)
        assert compacting.is_alive(), "the stream holds the tables: compaction still waits"
        del stream
        compacting.join(timeout=60)
    finally:
        compacting.join(timeout=90)
    assert outcome and outcome[0] > 0
    assert len(store.table("w")) == 50 and len(store.table("t")) == 10_000


def test_compact_removes_the_log_segments_it_drops_before_it_returns(
    open_store: Callable[..., replikv.Store],
) -> None:
    # Retention cuts a dropped segment down a step at a time in the background (a
    # writer's fdatasync must not wait behind the removal of a large file); a compaction's
    # caller waits for the space, so the files are gone when it returns.
    store = open_store(retain_bytes=8 * MiB, retain_seconds=None)
    for i in range(24):
        store.put("blobs", i, b"x" * MiB)
    store.compact()
    log = Path(store.path) / "log"
    names = sorted(p.name for p in log.iterdir())
    assert not [n for n in names if n.endswith(".dropped")], names
    on_disk = sum(p.stat().st_blocks * 512 for p in log.iterdir())
    assert store.stats().log_bytes == on_disk
    assert on_disk <= 8 * MiB + 4 * MiB, f"{on_disk / MiB:.1f} MiB of log"
    assert store.get("blobs", 23) == b"x" * MiB


def test_compact_returns_what_the_tables_file_shrank_by_since_the_call(
    open_store: Callable[..., replikv.Store],
) -> None:
    store = open_store()
    assert store.compact() >= 0
    store.put("t", "k", 1)
    store.compact()
    assert store.get("t", "k") == 1
    # Idle and compacted: each call's own checkpoint may grow the file before compaction
    # gives it back, which is no space reclaimed from the caller's point of view.
    for _ in range(3):
        before = store.stats().tables_bytes
        reclaimed = store.compact()
        assert reclaimed == max(0, before - store.stats().tables_bytes)


# A few kills with writes of a few tenths of a second each; the bound catches a hang.
@pytest.mark.timeout(180)
def test_kill_9_with_small_segments_and_retention_keeps_every_acknowledged_write(
    tmp_path: Path,
) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    path = tmp_path / "db"
    options: dict[str, Any] = {
        "segment_bytes": 16 * 1024,
        "retain_bytes": 64 * 1024,
        "checkpoint_seconds": 0.05,
    }
    start, reported = 1, []
    for round_ in range(6):
        returned = run_until_killed(path, start, rng, json.dumps(options))
        reported.extend(returned)
        if returned:
            start = returned[-1][1] + 1
        with replikv.Store(path, **options) as store:
            assert store.last_lsn >= max((lsn for lsn, _ in reported), default=0)
            pairs, bulk = store.table("pairs"), store.table("bulk")
            for _, i in reported:
                if i % 7 == 0:
                    assert bulk[f"b{i}-199"] == {"i": i, "j": 199}, f"round {round_}: bulk {i}"
                elif i % 5 != 0:  # writes i % 5 == 0 delete pair i - 5 (never these)
                    assert pairs[f"b{i}"] == {"i": i}, f"round {round_}: pair {i}"
            segments = sorted((path / "log").iterdir())
            assert len(segments) >= 1
    assert len(reported) > 6, "the writer made progress between kills"
    with replikv.Store(path, **options) as store:
        # Applied as the store opens: recovery left every entry in the tables durably.
        eventually("retention to drop old segments", lambda: store.oldest_lsn > 1)


LOADER = """
import sys
from pathlib import Path
import replikv

path, rows, cache_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with replikv.Store(path, cache_bytes=cache_bytes) as store:
    for start in range(0, rows, 10_000):
        store.put_many(
            "t",
            [(f"k{i:015d}", {"email": f"u{i}@example.com", "n": i, "pad": "x" * 60})
             for i in range(start, start + 10_000)],
        )
    status = Path("/proc/self/status").read_text().splitlines()
    print(next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS")))
"""


# Loads 2M rows in a fresh process: about 30 s on 2 cores, more beside other tests.
@pytest.mark.timeout(300)
def test_cache_bytes_bounds_resident_memory_of_a_load_larger_than_it(tmp_path: Path) -> None:
    # The default cache: what memory is freed on one thread and left in its malloc arena
    # grows with the pages the cache churns through (285 MiB resident here before the
    # checkpointer gave free memory back, 176 MiB after).
    cache_bytes = inspect.signature(replikv.Store).parameters["cache_bytes"].default
    rows = 2_000_000  # about 230 MiB of tables: more than the cache
    out = subprocess.run(
        [sys.executable, "-c", LOADER, str(tmp_path / "db"), str(rows), str(cache_bytes)],
        check=True,
        capture_output=True,
        text=True,
        timeout=280,
    ).stdout
    resident = int(out.split()[-1])
    assert resident <= cache_bytes + 100 * MiB, f"{resident / MiB:.0f} MiB resident"
