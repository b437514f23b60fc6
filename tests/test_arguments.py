"""Arguments of the wrong shape get an exception that names them and says what to write;
a mistyped path creates nothing; integer keys of numpy's types are the ints they stand for."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import replikv
from replikv import _core


def test_numpy_integer_keys_are_the_ints_they_stand_for(store: replikv.Store) -> None:
    # A DataFrame's index hands out numpy integers.
    store.put("t", np.int64(5), "five")
    store.put("t", np.uint8(7), "seven")
    assert store.get("t", 5) == "five"
    assert store.get("t", np.int32(7)) == "seven"
    keys = list(store.table("t").keys())
    assert keys == [5, 7]
    assert all(type(k) is int for k in keys)
    table = store.table("t")
    assert np.int64(5) in table and np.uint8(7) in table and np.int16(6) not in table
    # What cannot be a key is in no table, as with a dict.
    assert np.float64(5.0) not in table and np.uint64(2**64 - 1) not in table
    assert np.True_ not in table and 2.5 not in table


@pytest.mark.parametrize(
    ("key", "error"),
    [
        (np.True_, TypeError),  # a bool, not an int, as Python's own bool
        (np.float64(1.0), TypeError),
        (np.uint64(2**64 - 1), OverflowError),
    ],
)
def test_numpy_scalars_that_are_not_64_bit_ints_are_refused_as_keys(
    store: replikv.Store, key: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        store.put("t", key, 1)  # type: ignore[arg-type]
    assert store.last_lsn == 0


class InterruptedIndex:
    def __index__(self) -> int:
        raise KeyboardInterrupt


def test_ctrl_c_in_a_keys_index_method_is_not_taken_for_a_wrong_type(
    store: replikv.Store,
) -> None:
    with pytest.raises(KeyboardInterrupt):
        store.put("t", InterruptedIndex(), 1)


def lone_str_calls(store: replikv.Store) -> dict[str, Callable[[], Any]]:
    return {
        "tables": lambda: store.changes(tables="events"),
        "columns": lambda: store.table("events").to_arrow_batches(columns="email"),  # type: ignore[arg-type]
        "nodes": lambda: replikv.Cache("127.0.0.1:7001"),  # type: ignore[arg-type]
    }


@pytest.mark.parametrize("argument", ["tables", "columns", "nodes"])
def test_a_lone_str_for_a_list_says_to_write_a_list(store: replikv.Store, argument: str) -> None:
    with pytest.raises(TypeError, match=rf"^{argument} takes a list of str, not a str: write "):
        lone_str_calls(store)[argument]()


def test_a_log_tail_given_a_lone_str_for_its_tables_says_so(store: replikv.Store) -> None:
    with pytest.raises(TypeError, match=r"^tables takes a list of str, not a str"):
        _core.LogTail(store.path, tables="events")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^tables takes a list of str; one item is int"):
        store.changes(tables=["events", 3])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("argument", "make"),
    [
        ("cache_bytes", lambda p: replikv.Store(p, cache_bytes=-1)),
        ("segment_bytes", lambda p: replikv.Store(p, segment_bytes=-1)),
        ("retain_bytes", lambda p: replikv.Store(p, retain_bytes=-1)),
        ("max_value_bytes", lambda p: replikv.Store(p, max_value_bytes=-1)),
        ("capacity", lambda p: replikv.Cache(capacity=-1)),
        ("max_bytes", lambda p: replikv.CacheNode(max_bytes=-1)),
    ],
)
def test_a_negative_size_is_a_value_error_naming_the_option(
    tmp_path: Path, argument: str, make: Callable[[Path], Any]
) -> None:
    with pytest.raises(ValueError, match=rf"^{argument} cannot be negative \(got -1\)$"):
        make(tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_negative_batch_sizes_name_their_option(store: replikv.Store) -> None:
    import pyarrow as pa

    with pytest.raises(ValueError, match=r"^max_batch_bytes cannot be negative"):
        replikv.Primary(store, max_batch_bytes=-1)
    with pytest.raises(ValueError, match=r"^batch_rows cannot be negative"):
        store.table("t").to_arrow_batches(batch_rows=-1)
    with pytest.raises(ValueError, match=r"^batch_rows cannot be negative"):
        store.put_arrow("t", pa.table({"k": [1]}), key="k", batch_rows=-1)
    assert store.last_lsn == 0


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("heartbeat_interval", 0.0),
        ("heartbeat_interval", 0.001),
        ("heartbeat_interval", 3.0),
        ("max_batch_bytes", 100),
        ("max_batch_bytes", 1 << 40),
    ],
)
def test_primary_settings_out_of_their_range_are_refused_not_clamped(
    store: replikv.Store, option: str, value: float
) -> None:
    settings: dict[str, Any] = {option: value}
    with pytest.raises(ValueError, match=rf"^{option} must be between"):
        replikv.Primary(store, **settings)
    with replikv.Primary(store, heartbeat_interval=0.01) as lowest:
        assert lowest.settings["heartbeat_interval"] == 0.01
    with replikv.Primary(store, heartbeat_interval=2) as highest:
        assert highest.settings["heartbeat_interval"] == 2.0


def test_an_empty_path_is_refused_not_a_store_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="path is empty"):
        replikv.Store("")
    with pytest.raises(ValueError, match="path is empty"):
        replikv.Replica("", primary="127.0.0.1:7400", name="eu-1")
    assert os.listdir(tmp_path) == []


def test_promoting_a_mistyped_path_creates_no_store(tmp_path: Path) -> None:
    with pytest.raises(replikv.StoreNotFoundError, match="no replikv store to promote at"):
        replikv.promote_stopped(tmp_path / "replcia")
    assert os.listdir(tmp_path) == []


def test_promoting_a_store_that_is_no_replicas_says_so(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "plain") as store:
        store.put("t", "k", 1)
    for force in (False, True):
        with pytest.raises(replikv.ReplicationError, match="is not a replica's directory"):
            replikv.promote_stopped(tmp_path / "plain", force=force)
    with replikv.Store(tmp_path / "plain") as store:
        assert store.epoch == 1 and store.get("t", "k") == 1


def bool_for_int_calls(store: replikv.Store, path: Path) -> dict[str, Callable[[], Any]]:
    return {
        "since": lambda: store.changes(since=True),
        "limit": lambda: store.changes(limit=False),
        "cache_bytes": lambda: replikv.Store(path, cache_bytes=True),
        "quorum": lambda: replikv.Primary(store, quorum=True),
        "capacity": lambda: replikv.Cache(capacity=True),
        "batch_rows": lambda: store.table("t").to_arrow_batches(batch_rows=True),
    }


@pytest.mark.parametrize(
    "argument", ["since", "limit", "cache_bytes", "quorum", "capacity", "batch_rows"]
)
def test_a_bool_for_an_int_is_refused_not_taken_for_0_or_1(
    store: replikv.Store, tmp_path: Path, argument: str
) -> None:
    # bool is a subclass of int in Python: without the check, since=True reads from LSN 1.
    with pytest.raises(TypeError, match=r"^expected an int, not a bool \((True|False)\)") as caught:
        bool_for_int_calls(store, tmp_path / "s")[argument]()
    assert f"while processing '{argument}'" in getattr(caught.value, "__notes__", [])
    assert not (tmp_path / "s").exists()
    # The same arguments still take ints, numpy's included.
    assert store.changes(since=np.int64(0), limit=np.uint8(3)) is not None


class Lsn:
    """An object that is an int only through ``__index__``, as ``operator.index`` takes."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


def test_an_object_with_index_is_taken_as_the_int_it_stands_for(store: replikv.Store) -> None:
    for i in range(5):
        store.put("t", i, i)
    assert [c.lsn for c in store.changes(since=Lsn(1), until=Lsn(4), limit=Lsn(2))] == [2, 3]
    assert store.drop_log_before(Lsn(1)) >= 0
    with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
        store.changes(since=object())  # type: ignore[arg-type]
