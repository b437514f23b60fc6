"""A large ``put_many`` of rows with a length streams: its rows reach the tables (uncommitted)
while later rows are still being encoded, and the whole is still one transaction: one
entry, all or nothing, invisible until it commits, with other writers waiting for it. A
generator's rows are read whole first: a slow source never holds other writers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

import pytest
import replikv
from test_sync_writes import serving

# More rows than one streamed chunk (4096), so that several chunks are applied.
ROWS = 10_000

T = TypeVar("T")


class Sized(Generic[T]):
    """Rows with a length, as a list has (so put_many streams them), read from an iterator
    that can act between rows."""

    def __init__(self, rows: Iterable[T], length: int = ROWS) -> None:
        self.rows = rows
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[T]:
        return iter(self.rows)


def rows(count: int = ROWS, start: int = 0) -> Iterator[tuple[str, dict[str, int]]]:
    for i in range(start, start + count):
        yield f"k{i:06}", {"i": i, "square": i * i}


def test_a_streamed_put_many_is_one_entry_equal_to_a_plain_one(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "a") as streamed, replikv.Store(tmp_path / "b") as plain:
        receipt = streamed.put_many("t", list(rows()))
        # A transaction never streams: the same rows, committed as a plain batch.
        with plain.transaction() as tx:
            for key, value in rows():
                tx.put("t", key, value)
        assert receipt.lsn == streamed.last_lsn == 1
        assert streamed.checksum().tables == plain.checksum().tables
        [change] = streamed.changes()
        assert len(change.ops) == ROWS and change.ops[-1].key == f"k{ROWS - 1:06}"
        assert streamed.get("t", "k004097") == {"i": 4097, "square": 4097**2}
    with replikv.Store(tmp_path / "a") as reopened:
        assert reopened.count("t") == ROWS and reopened.last_lsn == 1


LOADER = """
import resource, sys
import replikv

class Rows:
    # 100k rows of 2 KB made one at a time: the caller holds almost none of them.
    def __len__(self):
        return 100_000

    def __iter__(self):
        return ((f"k{i:09}", {"i": i, "blob": "x" * 2000}) for i in range(100_000))

with replikv.Store(sys.argv[1], cache_bytes=16 << 20) as store:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store.put_many("t", Rows())
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert store.count("t") == 100_000
print(grown * 1024)
"""


# About 200 MB of encoded rows in a fresh process: a few seconds.
@pytest.mark.timeout(120)
def test_a_streamed_put_many_holds_a_small_part_of_its_rows_in_memory(tmp_path: Path) -> None:
    # The rows go to the log and the tables a chunk at a time, with a few chunks encoded
    # ahead: before, the load held its whole body twice (framed, then as a record) and
    # every row once more until its commit.
    out = subprocess.run(
        [sys.executable, "-c", LOADER, str(tmp_path / "db")],
        check=True,
        capture_output=True,
        text=True,
        timeout=110,
    ).stdout
    grown = int(out.split()[-1])
    assert grown <= 150 << 20, f"peak resident memory grew by {grown >> 20} MiB"


def test_rows_that_fail_midway_write_nothing_and_free_the_store(store: replikv.Store) -> None:
    def failing() -> Iterator[tuple[str, dict[str, int]]]:
        yield from rows()
        raise ValueError("the source broke")

    with pytest.raises(ValueError, match="the source broke"):
        store.put_many("t", Sized(failing()))
    assert store.last_lsn == 0 and store.count("t") == 0
    with pytest.raises(TypeError, match=r"t\['k009999x'\]"):
        store.put_many("t", [*rows(), ("k009999x", object())])
    assert store.last_lsn == 0 and store.count("t") == 0
    store.put("t", "after", 1)
    assert store.put_many("t", list(rows())).lsn == 2 and store.count("t") == ROWS + 1


def test_readers_see_nothing_of_a_put_many_before_it_commits(store: replikv.Store) -> None:
    seen: list[object] = []

    def watched() -> Iterator[tuple[str, dict[str, int]]]:
        for key, value in rows():
            if key == "k009000":
                # Two chunks are in the tables' open transaction by now.
                seen.append(store.get("t", "k000001"))
                seen.append(store.count("t"))
            yield key, value

    store.put_many("t", Sized(watched()))
    assert seen == [None, 0]
    assert store.get("t", "k000001") == {"i": 1, "square": 1}


def test_a_write_from_inside_the_rows_is_refused(store: replikv.Store) -> None:
    def meddling() -> Iterator[tuple[str, int]]:
        for i in range(ROWS):
            if i == 5000:
                store.put("t", "meddler", 1)
            yield f"k{i}", i

    with pytest.raises(RuntimeError, match="inside a write to this store"):
        store.put_many("t", Sized(meddling()))
    assert store.last_lsn == 0 and store.count("t") == 0


def test_a_generators_rows_are_read_before_the_writer_lock_is_taken(
    store: replikv.Store,
) -> None:
    """A generator may wait on a slow source: it does not stream, so other writes (here
    one from inside it) go on while it is read."""
    side: list[int] = []

    def slow_source() -> Iterator[tuple[str, int]]:
        for i in range(ROWS):
            if i == 9000:
                side.append(store.put("t", "side", 1).lsn)
            yield f"k{i}", i

    assert store.put_many("t", slow_source()).lsn == 2
    assert side == [1] and store.count("t") == ROWS + 1


def test_other_threads_writes_wait_for_a_put_many_and_come_after_it(
    store: replikv.Store,
) -> None:
    started = threading.Event()
    lsns: list[int] = []

    def paced() -> Iterator[tuple[str, dict[str, int]]]:
        for key, value in rows():
            if key == "k005000":
                started.set()
            yield key, value

    def other() -> None:
        started.wait(timeout=30)
        lsns.append(store.put("t", "other", 1).lsn)

    thread = threading.Thread(target=other)
    thread.start()
    receipt = store.put_many("t", Sized(paced()))
    thread.join(timeout=30)
    assert receipt.lsn == 1 and lsns == [2]
    assert store.count("t") == ROWS + 1


INSIDE_CHILD = textwrap.dedent(
    """
    import sys
    import replikv

    store = replikv.Store(sys.argv[1])
    call, where = sys.argv[2], sys.argv[3]

    def make_the_call(done):
        if done >= 5000:
            getattr(store, call)(*([1] if call == "drop_log_before" else []))

    class Sized:
        def __len__(self):
            return 10_000

        def __iter__(self):
            for i in range(10_000):
                if where == "rows":
                    make_the_call(i)
                yield f"k{i}", i

    try:
        store.put_many("t", Sized(), progress=make_the_call if where == "progress" else None)
    except RuntimeError as err:
        print("refused:", err)
    store.close()
    with replikv.Store(sys.argv[1]) as again:
        print("rows", again.count("t"), "lsn", again.last_lsn)
    """
)


@pytest.mark.parametrize(
    ("call", "where"),
    [("close", "rows"), ("drop_log_before", "rows"), ("drop_log_before", "progress")],
)
def test_a_call_that_waits_for_the_load_from_inside_it_is_refused_not_a_hang(
    tmp_path: Path, call: str, where: str
) -> None:
    # In a child process, so that a hang fails the test instead of stalling the run.
    done = subprocess.run(
        [sys.executable, "-c", INSIDE_CHILD, str(tmp_path / "db"), call, where],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[0].startswith("refused:") and "inside a bulk write" in lines[0], done.stdout
    assert lines[1] == "rows 0 lsn 0", done.stdout


def test_a_streamed_put_many_drops_what_a_cache_in_front_holds(store: replikv.Store) -> None:
    store.put("t", "k004500", "old")
    with replikv.Cache(capacity=100, source=store) as cache:
        assert cache.get("t", "k004500") == "old"
        store.put_many("t", list(rows()))
        assert cache.get("t", "k004500") == {"i": 4500, "square": 4500**2}


def test_a_streamed_sync_put_many_waits_for_its_quorum(tmp_path: Path) -> None:
    with serving(tmp_path, "r1", quorum=1) as (primary, replicas):
        receipt = primary.store.put_many("consent", list(rows()), durability="sync")
        assert receipt.durability == "sync" and receipt.acked_by == ["r1"]
        assert not receipt.degraded
        # Acknowledged means durable on the replica: it holds every row at that LSN.
        replica = replicas["r1"]
        assert replica.wait_for(receipt.lsn, timeout=30)
        assert replica.store.count("consent") == ROWS
