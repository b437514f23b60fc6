"""A store's log and tables belong together: a log moved in from another store (or another
store's tables moved beside this log) is refused before anything of it is replayed, while
a store whose tables file is gone is rebuilt from its own log."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import replikv


def two_stores(tmp_path: Path) -> tuple[Path, Path]:
    """Store `a` holds 2 entries, store `b` 6: b's log goes on past a's tables."""
    a, b = tmp_path / "a", tmp_path / "b"
    with replikv.Store(a) as store:
        store.put("t", "k", "a1")
        store.put("t", "only-a", 1)
    with replikv.Store(b) as store:
        store.put("t", "k", "b1")
        for i in range(5):
            store.put("t", f"b{i}", i)
    return a, b


def test_a_log_moved_in_from_another_store_is_refused_and_nothing_is_replayed(
    tmp_path: Path,
) -> None:
    a, b = two_stores(tmp_path)
    shutil.move(a / "log", tmp_path / "a-log")
    shutil.copytree(b / "log", a / "log")
    with pytest.raises(replikv.CorruptionError, match="belongs to another store"):
        replikv.Store(a)
    # Nothing of b's history reached a's tables: with its own log back, a is as it was.
    shutil.rmtree(a / "log")
    shutil.move(tmp_path / "a-log", a / "log")
    with replikv.Store(a) as store:
        assert dict(store.table("t").items()) == {"k": "a1", "only-a": 1}
        assert store.last_lsn == 2


def test_another_stores_tables_beside_a_log_are_refused(tmp_path: Path) -> None:
    a, b = two_stores(tmp_path)
    shutil.copy(a / "tables.redb", b / "tables.redb")
    with pytest.raises(replikv.CorruptionError, match="belongs to another store"):
        replikv.Store(b)


def test_a_store_whose_tables_file_is_gone_is_rebuilt_from_its_own_log(tmp_path: Path) -> None:
    _, b = two_stores(tmp_path)
    (b / "tables.redb").unlink()
    with replikv.Store(b) as store:
        assert store.get("t", "k") == "b1"
        assert store.count("t") == 6
        store.put("t", "after", 1)
    # The rebuilt tables took the log's store as theirs: it opens again as one store.
    with replikv.Store(b) as store:
        assert store.count("t") == 7


def test_a_log_that_names_no_store_is_claimed_and_a_damaged_name_is_written_again(
    tmp_path: Path,
) -> None:
    a, b = two_stores(tmp_path)
    # As a store written before logs named their store: it opens, and names it from then on.
    (a / "log" / "owner").unlink()
    with replikv.Store(a) as store:
        assert store.count("t") == 2
    assert (a / "log" / "owner").stat().st_size > 0
    shutil.move(a / "log", tmp_path / "a-log")
    shutil.copytree(b / "log", a / "log")
    with pytest.raises(replikv.CorruptionError):
        replikv.Store(a)
    shutil.rmtree(a / "log")
    shutil.move(tmp_path / "a-log", a / "log")
    # A damaged name says nothing: the store opens and names its log again.
    owner = a / "log" / "owner"
    damaged = bytearray(owner.read_bytes())
    damaged[3] ^= 0x40
    owner.write_bytes(bytes(damaged))
    with replikv.Store(a) as store:
        assert store.count("t") == 2
    assert owner.read_bytes() != bytes(damaged)
