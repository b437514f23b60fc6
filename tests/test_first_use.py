"""What a newcomer meets first: paths, forgotten transactions, a replica that is refused."""

from __future__ import annotations

import errno
import gc
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import replikv


def test_a_store_path_in_missing_directories_is_created(tmp_path: Path) -> None:
    path = tmp_path / "data" / "nested" / "primary"
    with replikv.Store(path) as store:
        assert store.put("t", "k", 1).lsn == 1
    with replikv.Store(path) as again:
        assert again.get("t", "k") == 1


def test_a_file_in_the_way_of_a_store_directory_is_an_os_error(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file, not a directory")
    with pytest.raises(OSError) as info:
        replikv.Store(tmp_path / "data" / "primary")
    assert isinstance(info.value, replikv.ReplikvError)


def test_a_directory_of_other_files_is_not_made_a_store(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("the user's own file")
    with pytest.raises(FileExistsError) as info:
        replikv.Store(project)
    assert isinstance(info.value, replikv.NotAStoreError)
    assert info.value.errno == errno.EEXIST and info.value.filename == str(project)
    assert "not a replikv store" in str(info.value) and '"notes.txt"' in str(info.value)
    # Nothing of a store was left among the user's files.
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt"]


def test_an_empty_directory_or_a_volumes_root_becomes_a_store(tmp_path: Path) -> None:
    empty, volume = tmp_path / "empty", tmp_path / "volume"
    empty.mkdir()
    volume.mkdir()
    (volume / ".gitkeep").write_text("")
    (volume / "lost+found").mkdir()
    for path in (empty, volume):
        with replikv.Store(path) as store:
            store.put("t", "k", 1)
        # Reopened among its own files (and the dotfile).
        with replikv.Store(path) as again:
            assert again.get("t", "k") == 1


def open_and_forget(store: replikv.Store) -> None:
    tx = store.transaction()
    tx.put("t", "k", 1)  # takes the writer lock
    del tx


def test_a_transaction_collected_without_commit_warns_where_it_was_opened(
    store: replikv.Store,
) -> None:
    with pytest.warns(ResourceWarning, match=r"test_first_use\.py:\d+.*writer lock") as caught:
        open_and_forget(store)
        gc.collect()
    assert len(caught) == 1
    # Its writes were discarded and the lock released: the next writer gets in.
    assert store.put("t", "other", 2).lsn == 1
    assert store.get("t", "k") is None


def test_transactions_that_finish_do_not_warn(store: replikv.Store) -> None:
    with store.transaction() as tx:
        tx.put("t", "k", 1)
    aborted = store.transaction()
    aborted.put("t", "k", 2)
    aborted.abort()
    unused = store.transaction()
    del tx, aborted, unused
    gc.collect()  # filterwarnings=error: any ResourceWarning fails this test


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[replikv.Primary]:
    store = replikv.Store(tmp_path / "primary")
    with replikv.Primary(store, token="right") as served:
        served.store.put("t", "k", 1)
        yield served
    store.close()


def test_a_replica_with_a_wrong_token_says_so_where_the_user_looks(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    with replikv.Replica(tmp_path / "r", primary=primary.address, token="wrong") as replica:
        with pytest.raises(replikv.ReplicationError, match="authentication") as info:
            replica.get("t", "k", min_lsn=1, timeout=30)
        assert not isinstance(info.value, replikv.ReplicationTimeout)
        with pytest.raises(replikv.ReplicationError, match="authentication"):
            replica.wait_for(1, timeout=30)
        assert replica.status().state == "failed"


GC_DURING_DECODE = """
import gc, sys
import replikv

store = replikv.Store(sys.argv[1])
store.put("t", "k", {"nested": [{"n": i} for i in range(50)]})
closed = []

def close_on_first_collection(phase: str, info: dict) -> None:
    # Python code run by the garbage collector while get() builds the value's dicts.
    if phase == "start" and not closed:
        closed.append(True)
        store.close()

gc.collect()
gc.set_threshold(1)
gc.callbacks.append(close_on_first_collection)
value = store.get("t", "k")
gc.callbacks.clear()
print("decoded", len(value["nested"]), "closed", store.closed)
"""


def test_python_code_run_while_a_value_is_decoded_may_use_the_store(tmp_path: Path) -> None:
    """Decoding runs no store lock: a collection (or a finalizer) that closes the store
    in the middle of get() would deadlock on the lock get() held."""
    result = subprocess.run(
        [sys.executable, "-c", GC_DURING_DECODE, str(tmp_path / "db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "decoded 50 closed True"
