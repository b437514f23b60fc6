"""Re-running a notebook cell: a second ``Store(path)`` in one process is another handle to
the same open store; each handle closes on its own, and the directory is released with the
last one."""

from __future__ import annotations

import gc
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import replikv

TOKEN = "t0ken"


def other_process_reads(path: Path) -> str:
    """What another process gets when it opens ``path``: the value of ``t/k``, or the error."""
    code = (
        "import replikv, sys\n"
        "try:\n"
        f"    with replikv.Store({str(path)!r}) as s:\n"
        "        print('read', s.get('t', 'k'))\n"
        "except replikv.StoreLockedError as e:\n"
        "    print('locked', e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.strip()


def test_a_second_store_of_a_path_shares_the_open_store(tmp_path: Path) -> None:
    first = replikv.Store(tmp_path / "db")
    first.put("t", "k", 1)
    # The cell is re-run: IPython's Out[] still holds the first handle.
    second = replikv.Store(tmp_path / "db")
    assert second is not first
    assert second.get("t", "k") == 1
    second.put("t", "k", 2)
    assert first.get("t", "k") == 2
    assert first.last_lsn == second.last_lsn == 2
    # A relative spelling of the same directory is the same store too.
    third = replikv.Store(tmp_path / "db" / ".." / "db")
    with first.transaction() as tx:
        tx.put("t", "x", 3)
    assert third.get("t", "x") == 3
    assert [c.lsn for c in third.changes()] == [1, 2, 3]
    for handle in (first, second, third):
        handle.close()


def test_closing_a_handle_refuses_its_use_and_leaves_the_others_open(tmp_path: Path) -> None:
    first = replikv.Store(tmp_path / "db")
    second = replikv.Store(tmp_path / "db")
    first.close()
    assert first.closed and not second.closed
    with pytest.raises(replikv.StoreClosed):
        first.put("t", "k", 1)
    with pytest.raises(replikv.StoreClosed):
        first.get("t", "k")
    with pytest.raises(replikv.StoreClosed):
        first.last_lsn  # noqa: B018
    first.close()  # closing twice is harmless
    assert "closed" in repr(first)
    second.put("t", "k", 1)
    with replikv.Store(tmp_path / "db") as third:
        assert third.get("t", "k") == 1
    assert third.closed and not second.closed
    assert second.get("t", "k") == 1
    second.close()


def test_closing_a_handle_while_its_writers_run_leaves_the_store_open_for_the_others(
    tmp_path: Path,
) -> None:
    # A commit leader writes the batch of every handle: if its own handle was closed under
    # it, the store failed and closed for all of them (one close in two, with 3 writers).
    for attempt in range(12):
        path = tmp_path / f"db{attempt}"
        closing, staying = replikv.Store(path, fsync=False), replikv.Store(path, fsync=False)
        started = threading.Barrier(4)
        written = [0, 0, 0]

        def write(
            n: int, handle: replikv.Store, started: threading.Barrier, written: list[int]
        ) -> None:
            started.wait()
            try:
                while True:
                    handle.put("t", written[n] % 50, n)
                    written[n] += 1
            except replikv.StoreClosed:
                pass

        writers = [
            threading.Thread(target=write, args=(n, closing, started, written)) for n in range(3)
        ]
        for thread in writers:
            thread.start()
        started.wait()
        while sum(written) < 50 * (attempt + 1):
            time.sleep(0.001)
        closing.close()
        for thread in writers:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in writers)
        assert not staying.closed, f"attempt {attempt}: closing one handle closed the store"
        receipt = staying.put("t", "after", 1)
        assert staying.get("t", "after") == 1
        assert receipt.lsn == staying.last_lsn >= sum(written) + 1
        staying.close()


def test_other_options_are_refused_naming_the_option_and_both_values(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "db") as store:
        with pytest.raises(replikv.StoreOptionsError) as refused:
            replikv.Store(tmp_path / "db", fsync=False)
        assert isinstance(refused.value, ValueError)
        assert "fsync=True" in str(refused.value) and "fsync=False" in str(refused.value)
        assert (refused.value.option, refused.value.open_value) == ("fsync", "True")
        assert refused.value.asked_value == "False"
        with pytest.raises(replikv.StoreOptionsError, match=r"retain_seconds=604800\.0.*None"):
            replikv.Store(tmp_path / "db", retain_seconds=None)
        # The refusal changed nothing.
        store.put("t", "k", 1)
        assert not store.closed


def test_the_directory_is_released_when_the_last_handle_is_closed(tmp_path: Path) -> None:
    first = replikv.Store(tmp_path / "db")
    second = replikv.Store(tmp_path / "db")
    first.put("t", "k", "kept")
    first.close()
    assert other_process_reads(tmp_path / "db").startswith("locked")
    second.close()
    assert other_process_reads(tmp_path / "db") == "read kept"


def test_the_directory_is_released_when_the_last_handle_is_collected(tmp_path: Path) -> None:
    first = replikv.Store(tmp_path / "db")
    second = replikv.Store(tmp_path / "db")
    first.put("t", "k", "kept")
    del first
    gc.collect()
    assert other_process_reads(tmp_path / "db").startswith("locked")
    del second
    gc.collect()
    assert other_process_reads(tmp_path / "db") == "read kept"
    # And this process opens it afresh.
    with replikv.Store(tmp_path / "db") as reopened:
        assert reopened.get("t", "k") == "kept"


def test_a_directory_held_by_a_replica_is_refused_saying_so(tmp_path: Path) -> None:
    with replikv.Replica(tmp_path / "replica", primary="127.0.0.1:1", token=TOKEN) as replica:
        with pytest.raises(
            replikv.StoreLockedError, match="in this process by a Replica"
        ) as raised:
            replikv.Store(tmp_path / "replica")
        # The holder is this process: its pid, as the docs say (no command line).
        assert (raised.value.pid, raised.value.command) == (os.getpid(), None)
        with pytest.raises(replikv.StoreLockedError, match="in this process by a Replica"):
            replikv.Store.detach(tmp_path / "replica")
        assert replica.store.get("t", "k") is None
    with replikv.Store(tmp_path / "db") as store:
        with pytest.raises(replikv.StoreLockedError, match="in this process by Store handles"):
            replikv.Replica(tmp_path / "db", primary="127.0.0.1:1", token=TOKEN)
        assert not store.closed


def _open_in_child(path: str) -> str:
    try:
        replikv.Store(path)
    except replikv.StoreLockedError as err:
        return f"locked: {err}"
    return "opened"


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_never_gets_the_parents_open_store(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "db") as store:
        store.put("t", "k", 1)
        with multiprocessing.get_context("fork").Pool(1) as pool:
            outcome = pool.apply(_open_in_child, (str(tmp_path / "db"),))
        assert outcome.startswith("locked") and f"process {os.getpid()}" in outcome, outcome
        # The parent's store is untouched by the child's attempt.
        assert store.put("t", "k", 2).lsn == 2


def test_a_store_served_by_a_primary_is_not_served_again_through_another_handle(
    tmp_path: Path,
) -> None:
    with replikv.Store(tmp_path / "db") as first, replikv.Primary(first) as primary:
        second = replikv.Store(tmp_path / "db")
        with pytest.raises(replikv.ReplicationError, match="already served by a Primary"):
            replikv.Primary(second)
        # Writes through the other handle are the served store's writes.
        assert second.put("t", "k", 1).lsn == 1 == primary.store.last_lsn
        second.close()


def test_closing_a_handle_aborts_its_open_transaction_and_frees_the_writer_lock_at_once(
    tmp_path: Path,
) -> None:
    first = replikv.Store(tmp_path / "db")
    second = replikv.Store(tmp_path / "db")
    tx = first.transaction()
    tx.put("t", "k", 1)  # holds the writer lock from here
    first.close()
    # The dead transaction is left alone: the other handle writes without waiting for it
    # to be used or collected.
    written: list[int] = []
    writer = threading.Thread(target=lambda: written.append(second.put("t", "k", 2).lsn))
    writer.start()
    writer.join(10)
    blocked = writer.is_alive()
    with pytest.raises(replikv.StoreClosed):
        tx.commit()  # releases the lock if the close did not, so that the writer ends
    writer.join(10)
    assert not blocked, "the closed handle's transaction kept the writer lock"
    assert written == [1]
    assert second.get("t", "k") == 2
    assert "aborted" in repr(tx)
    second.close()


def test_a_with_block_whose_store_is_closed_under_it_raises_store_closed(
    tmp_path: Path,
) -> None:
    # Its writes are discarded: the block must not end as if they were committed.
    store = replikv.Store(tmp_path / "db")
    with pytest.raises(replikv.StoreClosed), store.transaction() as tx:
        tx.put("orders", "o1", {"total": 3})
        store.close()
    assert tx.receipt is None
    assert "aborted by the close of its store" in repr(tx)
    with replikv.Store(tmp_path / "db") as reopened:
        assert "orders" not in reopened.tables()
