"""The change feed for analytics: lazy ops, filters by table and commit time, one row per
op in Arrow and pandas, bounded memory for a huge entry, and a follower's feed."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import replikv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from replikv import _frames

TOKEN = "t0ken"
UTC = dt.timezone.utc
CHILD = Path(__file__).with_name("feed_memory_child.py")
TABLES = ["events", "profiles", "sends"]

Row = tuple[int, int, dt.datetime, str, Any, str, Any]


def rows_of(changes: replikv.Changes) -> list[Row]:
    """One tuple per op, as a user iterating the feed would build them."""
    return [
        (c.lsn, c.epoch, c.timestamp, op.table, op.key, op.kind, op.value)
        for c in changes
        for op in c.ops
    ]


def to_millisecond(instant: dt.datetime) -> dt.datetime:
    return instant.replace(microsecond=instant.microsecond // 1000 * 1000)


def feed_model(
    full: list[replikv.Change],
    tables: list[str] | None,
    since_time: dt.datetime | None,
    until: dt.datetime | int | None,
    limit: int | None,
) -> list[tuple[int, list[replikv.Op]]]:
    """What the filtered feed must give, computed from the full feed in Python. Times are
    compared at the millisecond commit times are kept to: a bound stands for the
    millisecond it falls in."""
    kept = []
    for change in full:
        if since_time is not None and change.timestamp < to_millisecond(since_time):
            continue
        if isinstance(until, dt.datetime) and change.timestamp >= to_millisecond(until):
            continue
        if isinstance(until, int) and change.lsn > until:
            continue
        ops = [op for op in change.ops if tables is None or op.table in tables]
        if tables is not None and not ops:
            continue
        kept.append((change.lsn, ops))
    return kept if limit is None else kept[:limit]


keys = st.one_of(st.text(max_size=4), st.integers(-5, 5), st.binary(max_size=3))
values = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=5),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.sampled_from(["a", "b"]), st.booleans(), max_size=2),
)
ops = st.tuples(st.sampled_from(TABLES), keys, st.one_of(st.none(), values))
#: A write: its ops (a None value is a delete) and whether to wait a few milliseconds
#: before it, so that commit times differ.
writes = st.lists(st.tuples(st.lists(ops, min_size=1, max_size=4), st.booleans()), max_size=12)


def write_all(store: replikv.Store, planned: list[tuple[list[Any], bool]]) -> None:
    for entry_ops, pause in planned:
        if pause:
            time.sleep(0.003)
        with store.transaction() as tx:
            for table, key, value in entry_ops:
                if value is None:
                    tx.delete(table, key)
                else:
                    tx.put(table, key, {"v": value})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    planned=writes,
    tables=st.one_of(st.none(), st.lists(st.sampled_from(TABLES), max_size=2, unique=True)),
    cut=st.tuples(st.integers(0, 14), st.integers(0, 14), st.booleans()),
    shift=st.tuples(st.integers(-1500, 1500), st.integers(-1500, 1500)),
    limit=st.one_of(st.none(), st.integers(0, 5)),
)
def test_filtered_feed_equals_a_filter_over_the_full_feed(
    planned: list[tuple[list[Any], bool]],
    tables: list[str] | None,
    cut: tuple[int, int, bool],
    shift: tuple[int, int],
    limit: int | None,
) -> None:
    with tempfile.TemporaryDirectory() as tmp, replikv.Store(Path(tmp) / "db") as store:
        write_all(store, planned)
        full = list(store.changes())
        assert [c.lsn for c in full] == list(range(1, len(planned) + 1))
        # Bounds taken from the commit times themselves, so that ties and edges are hit,
        # moved by up to 1.5 ms either way so that bounds within a millisecond are too.
        times = [c.timestamp for c in full] or [dt.datetime.now(UTC)]
        since_time = times[min(cut[0], len(times) - 1)] + dt.timedelta(microseconds=shift[0])
        until: dt.datetime | int = times[min(cut[1], len(times) - 1)] + dt.timedelta(
            microseconds=shift[1]
        )
        if cut[2]:
            until = cut[1]
        got = store.changes(tables=tables, since_time=since_time, until=until, limit=limit)
        want = feed_model(full, tables, since_time, until, limit)
        assert [(c.lsn, list(c.ops)) for c in got] == want
        frame = store.changes(
            tables=tables, since_time=since_time, until=until, limit=limit
        ).to_pandas()
        assert list(zip(frame["lsn"], frame["table"], frame["op"], strict=True)) == [
            (lsn, op.table, op.kind) for lsn, entry_ops in want for op in entry_ops
        ]


def test_to_pandas_rows_equal_the_ops_from_iteration(store: replikv.Store) -> None:
    store.put_many("events", [(i, {"type": "open", "n": i}) for i in range(50)])
    store.put("profiles", "ana@example.com", {"tags": ["a", "b"], "at": dt.datetime.now(UTC)})
    store.delete("events", 3)
    with store.transaction() as tx:
        tx.put("events", 60, [1, {"x": None}])
        tx.put("profiles", "bo@example.com", 7)
    frame = store.changes().to_pandas()
    assert list(frame.columns) == ["lsn", "epoch", "timestamp", "table", "key", "op", "value"]
    assert str(frame["timestamp"].dtype) in ("datetime64[us, UTC]", "datetime64[ns, UTC]")
    got = [
        (lsn, epoch, at.to_pydatetime(), table, key, op, value)
        for lsn, epoch, at, table, key, op, value in frame.itertuples(index=False, name=None)
    ]
    assert got == rows_of(store.changes())
    assert len(got) == 54 and got[51][5] == "delete" and got[51][6] is None


def test_key_column_is_typed_by_the_exports_rule(store: replikv.Store) -> None:
    store.put("a", "k", 1)
    store.put("b", 2, 1)
    store.put("c", b"\x00", 1)
    schema = {
        name: str(store.changes(tables=[name]).to_arrow().schema.field("key").type)
        for name in "abc"
    }
    assert schema == {"a": "string", "b": "int64", "c": "binary"}
    mixed = store.changes().to_arrow()
    assert mixed.schema.field("key").metadata == {b"replikv.encoding": b"msgpack"}
    assert mixed.schema.field("lsn").type == pa.uint64()
    assert mixed.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert list(store.changes().to_pandas()["key"]) == ["k", 2, b"\x00"]


def test_ops_are_a_lazy_list_like_sequence(store: replikv.Store) -> None:
    store.put_many("events", [(i, i * 10) for i in range(5)])
    (change,) = store.changes()
    ops = change.ops
    assert len(ops) == 5
    assert ops[0].key == 0 and ops[-1].value == 40
    assert [op.key for op in ops[1:4]] == [1, 2, 3] and ops[::-2][0].key == 4
    assert ops == list(ops) and ops != list(ops)[:4] and ops != "abcde"
    with pytest.raises(IndexError):
        ops[5]
    assert "5 ops" in repr(ops) and "... 2 more" in repr(ops) and "Op(kind='put'" in repr(ops)
    assert "ops=<5 ops>" in repr(change)


def test_a_big_entry_streams_in_bounded_batches(store: replikv.Store) -> None:
    store.put_many("events", [(i, i) for i in range(150_000)])
    stream = store.changes().to_arrow_batches()
    assert stream.num_rows == 150_000 and stream.packed_columns == ["value"]
    sizes = [b.num_rows for b in pa.RecordBatchReader.from_stream(stream)]
    assert sizes == [65_536, 65_536, 150_000 - 2 * 65_536]


def test_duckdb_and_polars_read_the_change_stream(store: replikv.Store) -> None:
    store.put_many("events", [(i, {"n": i}) for i in range(20)])
    store.delete("events", 3)
    store.put("profiles", "ana", {"opted_in": True})
    stream = store.changes().to_arrow_batches()
    relation = duckdb.sql('select "table", op, count(*) from stream group by all order by all')
    assert relation is not None
    counted = relation.fetchall()
    assert counted == [("events", "delete", 1), ("events", "put", 20), ("profiles", "put", 1)]
    frame = pl.DataFrame(stream)
    assert frame.columns == ["lsn", "epoch", "timestamp", "table", "key", "op", "value"]
    assert frame["lsn"].to_list() == [c.lsn for c in store.changes() for _ in c.ops]


def test_the_range_is_fixed_when_changes_is_called(store: replikv.Store) -> None:
    store.put("t", 1, 1)
    feed = store.changes()
    store.put("t", 2, 2)
    assert [c.lsn for c in feed] == [1]
    assert feed.to_arrow().num_rows == 1


def test_until_an_lsn_includes_it_and_splits_the_log_with_since(store: replikv.Store) -> None:
    for i in range(6):
        store.put("t", i, i)
    assert [c.lsn for c in store.changes(since=1, until=4)] == [2, 3, 4]
    assert [c.lsn for c in store.changes(since=4)] == [5, 6]


def test_until_takes_a_numpy_int_as_since_and_limit_do(store: replikv.Store) -> None:
    for i in range(6):
        store.put("t", i, i)
    last = store.changes().to_pandas()["lsn"].max()
    assert isinstance(last, np.unsignedinteger)
    assert [c.lsn for c in store.changes(until=last)] == [1, 2, 3, 4, 5, 6]
    assert [c.lsn for c in store.changes(since=np.int64(1), until=np.int64(4))] == [2, 3, 4]
    for not_an_lsn in (True, np.float64(3), 3.0):
        with pytest.raises(TypeError, match="until must be an aware datetime or an LSN"):
            store.changes(until=not_an_lsn)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="until cannot be negative"):
        store.changes(until=np.int64(-1))


def test_changes_below_the_retained_log_raise_log_truncated(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "db", segment_bytes=4096) as s:
        for i in range(300):
            s.put("t", i, "x" * 40)
        assert s.drop_log_before(200) > 0
        oldest = s.oldest_lsn
        with pytest.raises(replikv.LogTruncated, match=f"oldest retained LSN is {oldest}"):
            s.changes(since=oldest - 2, tables=["t"])
        assert next(iter(s.changes(since=oldest - 1))).lsn == oldest


def test_a_write_made_just_after_an_instant_is_in_the_feed_since_it_even_within_its_millisecond(
    tmp_path: Path,
) -> None:
    """ "Note the time, run the job, read what it wrote": commit times are kept to the
    millisecond, and a write made within the millisecond of the instant noted, after it,
    is kept by ``since_time`` and left out by ``until``."""
    with replikv.Store(tmp_path / "db", fsync=False) as store:
        for i in range(200):
            noted = dt.datetime.now(UTC)
            lsn = store.put("t", i, i).lsn
            assert [c.lsn for c in store.changes(since=lsn - 1, since_time=noted)] == [lsn]
            assert list(store.changes(since=lsn - 1, until=noted)) == []


def test_a_since_time_after_the_retained_log_began_needs_none_of_the_dropped_entries(
    tmp_path: Path,
) -> None:
    with replikv.Store(tmp_path / "db", segment_bytes=4096) as s:
        for i in range(200):
            s.put("t", i, "x" * 40)
        time.sleep(0.01)
        middle = dt.datetime.now(dt.timezone.utc)
        time.sleep(0.01)
        for i in range(200, 300):
            s.put("t", i, "x" * 40)
        assert s.drop_log_before(150) > 0
        oldest = s.oldest_lsn
        assert 1 < oldest <= 150
        # Commit times never go back along the log: the dropped entries are all older than
        # `middle`, which the filter would skip anyway.
        kept = [c.lsn for c in s.changes(since_time=middle)]
        assert kept == list(range(201, 301))
        assert [c.lsn for c in s.changes(since=0, since_time=middle, tables=["t"])] == kept
        # A time before the oldest kept entry may need the dropped ones: still refused.
        before = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
        with pytest.raises(replikv.LogTruncated, match=f"oldest retained LSN is {oldest}"):
            s.changes(since_time=before)


def feed_losing_its_log(path: Path) -> tuple[replikv.Store, replikv.Changes]:
    """A store whose log spans many segments, and a feed of all of it."""
    store = replikv.Store(path, segment_bytes=4096)
    for i in range(300):
        store.put("t", i, "x" * 40)
    return store, store.changes()


def dropping_the_log_first(store: replikv.Store, read: Callable[..., Any]) -> Callable[..., Any]:
    """``read`` (what reads a stream), once retention has dropped the entries it would read."""

    def reading(stream: Any, *args: Any) -> Any:
        assert store.drop_log_before(store.last_lsn) > 0
        return read(stream, *args)

    return reading


@pytest.mark.parametrize("method", ["to_arrow", "to_pandas"])
def test_entries_dropped_while_the_feed_is_read_raise_log_truncated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    store, feed = feed_losing_its_log(tmp_path / "db")
    # The entries go between the feed's first pass (which finds the key column's type)
    # and the reading of its batches.
    if method == "to_arrow":
        reader = types.SimpleNamespace(table=dropping_the_log_first(store, pa.table))
        monkeypatch.setattr(_frames, "require", lambda *_: reader)
    else:
        reading = dropping_the_log_first(store, _frames.frame_from_stream)
        monkeypatch.setattr(_frames, "frame_from_stream", reading)
    with pytest.raises(replikv.LogTruncated, match="no longer retained") as raised:
        getattr(feed, method)()
    assert isinstance(raised.value.__cause__, pa.ArrowInvalid)
    store.close()


def test_pyarrow_reading_a_feed_whose_log_was_dropped_gets_replikvs_message(
    tmp_path: Path,
) -> None:
    # What the README says a third-party reader of to_arrow_batches() sees.
    store, feed = feed_losing_its_log(tmp_path / "db")
    stream = feed.to_arrow_batches()
    store.drop_log_before(store.last_lsn)
    with pytest.raises(
        pa.ArrowInvalid, match=r"External error: log entries after LSN \d+ are no longer"
    ):
        pa.table(stream)
    store.close()


def test_naive_and_wrongly_typed_bounds_are_refused(store: replikv.Store) -> None:
    store.put("t", 1, 1)
    with pytest.raises(TypeError, match="since_time is a naive datetime"):
        store.changes(since_time=dt.datetime(2026, 1, 1))
    with pytest.raises(TypeError, match="until is a naive datetime"):
        store.changes(until=dt.datetime(2026, 1, 1))
    with pytest.raises(TypeError, match="until must be an aware datetime or an LSN"):
        store.changes(until="2026-01-01")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="since_time must be an aware datetime"):
        store.changes(since_time=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="until cannot be negative"):
        store.changes(until=-1)
    with pytest.raises(TypeError):
        store.changes(tables="events")
    with pytest.raises(ValueError, match="table"):
        store.changes(tables=["bad name"])


def test_a_replicas_feed_equals_the_primarys(tmp_path: Path) -> None:
    store = replikv.Store(tmp_path / "primary")
    with replikv.Primary(store, token=TOKEN, ship_interval=0.01) as primary:
        store.put_many("events", [(i, {"n": i}) for i in range(300)])
        time.sleep(0.003)
        with store.transaction() as tx:
            tx.delete("events", 1)
            tx.put("profiles", "ana", {"opted_in": True})
        with replikv.Replica(tmp_path / "r", primary=primary.address, token=TOKEN) as replica:
            store.put("sends", b"\x01", [1, 2])
            assert replica.wait_for(store.last_lsn, timeout=30)
            assert rows_of(replica.store.changes()) == rows_of(store.changes())
            on_replica = replica.store.changes(tables=["events"]).to_arrow()
            assert on_replica.equals(store.changes(tables=["events"]).to_arrow())
    store.close()


def test_a_million_op_entry_streams_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with replikv.Store(path) as s:
        s.put_many("events", ((f"k{i:07d}", i) for i in range(1_000_000)))
    for how in ("iterate", "arrow"):
        out = subprocess.run(
            [sys.executable, str(CHILD), str(path), how],
            capture_output=True,
            text=True,
            timeout=110,
            check=True,
        ).stdout.split()
        ops, grew_mib = int(out[0]), float(out[1])
        assert ops == 1_000_000
        # Peak RSS growth over the peak that opening the store reached, measured once on
        # this machine: the old feed, which decoded the entry into 1M Op objects at once,
        # 288 MiB (iterate, on main at bf82021); this one 0 MiB (iterate: the entry's 30 MB
        # of bytes stay under the opening peak) and 39 MiB (arrow: 64k-row batches).
        assert grew_mib < 150, (how, grew_mib)


def test_without_the_extras_the_feed_names_the_one_to_install(
    store: replikv.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("t", 1, 1)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install 'replikv\[pandas\]'"):
        store.changes().to_pandas()
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r"pip install 'replikv\[arrow\]'"):
        store.changes().to_arrow()
    assert store.changes().to_arrow_batches().num_rows == 1
