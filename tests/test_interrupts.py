"""Ctrl-C during a write: put_many aborts with nothing written before the commit point;
past it (and during the commit of delete_prefix, drop_table and a transaction, which Ctrl-C
cannot stop) the write is stored and the exception says so and carries the receipt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import replikv
from polling import eventually

CHILD = textwrap.dedent(
    """
    import json, signal, sys, time
    import replikv

    # As in an interactive Python, even if started from a background job (SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    store = replikv.Store(sys.argv[1])
    profile = {"name": "x" * 40, "n": 7, "tags": ["a", "b"], "opted_in": True}

    rows = [(f"user{i}@example.com", profile) for i in range(int(sys.argv[2]))]
    said = []

    def progress(encoded):
        # Said from inside put_many, as it encodes (the signal cannot land before its
        # try), once chunks have gone into the open transaction.
        if not said and encoded >= 65536:
            said.append(encoded)
            print("encoding", flush=True)

    started = time.monotonic()
    outcome = {}
    try:
        outcome["receipt"] = store.put_many("subscribers", rows, progress=progress).lsn
    except KeyboardInterrupt as interrupt:
        outcome["interrupted"] = True
        receipt = getattr(interrupt, "receipt", None)
        outcome["receipt_on_exception"] = receipt.lsn if receipt else None
    outcome["seconds"] = time.monotonic() - started
    outcome["last_lsn"] = store.last_lsn
    store.close()
    print(json.dumps(outcome), flush=True)
    """
)


def test_ctrl_c_while_put_many_encodes_aborts_with_nothing_written(tmp_path: Path) -> None:
    path = tmp_path / "db"
    # Enough rows that encoding the rest takes seconds after "encoding" (so the signal
    # lands while they encode), and few enough to stay under max_transaction_bytes (a
    # missed signal then shows as a receipt).
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), "2500000"],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "encoding"
            child.send_signal(signal.SIGINT)
            outcome = json.loads(child.stdout.readline())
            assert child.wait(timeout=60) == 0
        finally:
            child.kill()
    assert outcome["interrupted"], outcome
    # Nothing was committed: no receipt anywhere, no LSN taken, nothing on disk.
    assert outcome["receipt_on_exception"] is None
    assert outcome["last_lsn"] == 0
    with replikv.Store(path) as reopened:
        assert reopened.last_lsn == 0
        assert reopened.count("subscribers") == 0


# Enough rows that each call below runs for 0.6 s or more on this machine, well past the
# 0.1 s at which the signal comes.
LARGE = 600_000


def delete_all_by_prefix(store: replikv.Store) -> Callable[[], object]:
    store.put_many("t", [(f"k{i:07d}", i) for i in range(LARGE)])
    return lambda: store.delete_prefix("t", "k")


def drop_the_table(store: replikv.Store) -> Callable[[], object]:
    store.put_many("t", [(f"k{i:07d}", i) for i in range(LARGE)])
    return lambda: store.drop_table("t")


def commit_a_transaction(store: replikv.Store) -> Callable[[], object]:
    tx = store.transaction()
    for i in range(LARGE):
        tx.put("t", f"k{i:07d}", i)

    def commit() -> None:
        with tx:  # the block ends: the commit of every put
            pass

    return commit


@pytest.mark.usefixtures("ctrl_c")
@pytest.mark.parametrize(
    "prepare",
    [delete_all_by_prefix, drop_the_table, commit_a_transaction],
    ids=lambda prepare: prepare.__name__,
)
def test_ctrl_c_during_a_commit_it_cannot_stop_says_the_write_is_stored(
    store: replikv.Store, prepare: Callable[[replikv.Store], Callable[[], object]]
) -> None:
    call = prepare(store)
    before = store.last_lsn
    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt) as interrupted:
        call()
        # Not reached unless the call ended before the signal came (too few rows).
        threading.Event().wait(5)
    receipt = getattr(interrupted.value, "receipt", None)
    assert receipt is not None, "a bare KeyboardInterrupt, as if nothing were written"
    assert receipt.lsn == store.last_lsn == before + 1
    assert "already committed" in " ".join(getattr(interrupted.value, "__notes__", []))
    assert store.count("t") == (LARGE if prepare is commit_a_transaction else 0)


def export_threads() -> int:
    """Threads of this process running an export's pass over the rows."""
    names = (task.read_text().strip() for task in Path("/proc/self/task").glob("*/comm"))
    return sum(name == "replikv-export" for name in names)


@pytest.mark.usefixtures("ctrl_c")
def test_ctrl_c_during_an_export_stops_it_and_the_store_stays_usable(tmp_path: Path) -> None:
    """A notebook's Ctrl-C reaches the export: it raises out of the call, the export's
    threads end, and the store reads on. (That a stopped export ends at its next chunk,
    rather than after the whole table, is tested in `src/arrow/parallel.rs`: here only
    timing would show it.)"""
    rows = 400_000
    with replikv.Store(tmp_path / "db", fsync=False) as store:
        store.put_many("t", ((i, {"bio": "x" * 100, "n": i}) for i in range(rows)))

        def interrupt_once_it_reads() -> None:
            deadline = time.monotonic() + 30
            while export_threads() == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt_once_it_reads).start()
        with pytest.raises(KeyboardInterrupt):
            store.table("t").to_arrow()
            # Not reached unless the export ended before the signal came.
            threading.Event().wait(5)
        eventually("the export's threads to end", lambda: export_threads() == 0)
        assert store.table("t").to_pandas()["n"].sum() == rows * (rows - 1) // 2
