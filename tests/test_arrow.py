"""Arrow and pandas in and out: round trips, readers other than pyarrow, the type rule,
put_dataframe storing each cell as put stores it (mixed object columns, extension dtypes),
refusals that name the key and field, and the extras' ImportError."""

from __future__ import annotations

import datetime as dt
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
import replikv
from test_values_read_back import same

UTC = dt.timezone.utc


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with replikv.Store(tmp_path / "s") as s:
        yield s


def profiles(n: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            f"user{i:05d}@example.com",
            {
                "name": f"User {i}",
                "age": 20 + i % 50,
                "score": i / 7,
                "opted_in": i % 3 == 0,
                "signed_up": dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(hours=i),
                "country": ["fr", "de", "es"][i % 3],
            },
        )
        for i in range(n)
    ]


def objects(*values: Any) -> Any:
    """A pandas column of dtype object holding `values` as they are."""
    return pd.Series(list(values), dtype=object)


def test_to_arrow_gives_the_rows_scan_gives_with_one_column_per_field(store: Any) -> None:
    rows = profiles(300)
    store.put_many("subs", rows)
    table = store.table("subs").to_arrow()
    assert table.column_names == ["key", "name", "age", "score", "opted_in", "signed_up", "country"]
    assert table.schema.field("age").type == pa.int64()
    assert table.schema.field("signed_up").type == pa.timestamp("us", tz="UTC")
    assert [(r.pop("key"), r) for r in table.to_pylist()] == list(store.scan("subs"))


def test_polars_and_duckdb_read_the_stream_and_agree_with_scan(store: Any) -> None:
    rows = profiles(500)
    store.put_many("subs", rows)
    stream = store.table("subs").to_arrow_batches(batch_rows=64)
    frame = pl.DataFrame(stream)  # as the README shows it
    assert isinstance(frame, pl.DataFrame)
    assert frame["key"].to_list() == [k for k, _ in rows]
    assert frame["age"].to_list() == [v["age"] for _, v in rows]
    relation = duckdb.sql(
        "select country, count(*) as n, sum(age) as ages from stream"
        " group by country order by country"
    )
    assert relation is not None
    counts = relation.fetchall()
    expected: dict[str, list[int]] = {}
    for _, v in rows:
        entry = expected.setdefault(v["country"], [0, 0])
        entry[0] += 1
        entry[1] += v["age"]
    assert counts == [(c, n, a) for c, (n, a) in sorted(expected.items())]


def test_a_stream_is_read_in_batches_at_one_lsn_and_can_be_read_again(store: Any) -> None:
    store.put_many("subs", profiles(1000))
    stream = store.table("subs").to_arrow_batches(batch_rows=128)
    store.put("subs", "zzz-late@example.com", {"name": "late"})
    reader = pa.RecordBatchReader.from_stream(stream)
    sizes = [batch.num_rows for batch in reader]
    assert sizes == [128] * 7 + [104]
    again = pa.table(stream)
    assert again.num_rows == stream.num_rows == 1000
    assert "zzz-late@example.com" not in again.column("key").to_pylist()
    assert stream.lsn == store.last_lsn - 1
    assert "1000 rows" in repr(stream)


def test_columns_and_key_ranges_narrow_the_export(store: Any) -> None:
    store.put_many("subs", profiles(50))
    table = store.table("subs").to_arrow(
        columns=["age", "missing"], start="user00010@example.com", end="user00020@example.com"
    )
    assert table.column_names == ["key", "age", "missing"]
    assert table.num_rows == 10
    assert table.column("missing").null_count == 10
    assert store.table("subs").to_arrow(prefix="user0004").num_rows == 10


def test_mixed_types_lists_and_dicts_are_packed_and_come_back_as_python_objects(
    store: Any,
) -> None:
    store.put("t", 1, {"mixed": "text", "tags": ["a", "b"], "n": 1})
    store.put("t", 2, {"mixed": 5, "tags": [], "n": 2.5, "extra": {"deep": [1, None]}})
    stream = store.table("t").to_arrow_batches()
    assert sorted(stream.packed_columns) == ["extra", "mixed", "tags"]
    table = pa.table(stream)
    assert table.schema.field("n").type == pa.float64()
    assert table.schema.field("tags").metadata == {b"replikv.encoding": b"msgpack"}
    frame = store.table("t").to_pandas()
    assert frame.loc[1, "mixed"] == "text" and frame.loc[2, "mixed"] == 5
    assert frame.loc[1, "tags"] == ["a", "b"]
    assert frame.loc[2, "extra"] == {"deep": [1, None]}
    assert frame.loc[1, "extra"] is None
    assert frame["n"].tolist() == [1.0, 2.5]


@pytest.mark.parametrize("floats_first", [2, 70_000], ids=["few rows", "past the first batch"])
def test_an_int_a_float_would_round_keeps_its_column_exact(store: Any, floats_first: int) -> None:
    # 2**53 + 1 and 2**63 - 1 have no float equal to them: beside floats, the column is
    # packed rather than float64, also when the floats fill the batches read first.
    big = [2**63 - 1, -(2**53) - 1]
    rows = [(i, {"n": i + 0.5}) for i in range(floats_first)]
    rows += [(floats_first + i, {"n": n}) for i, n in enumerate(big)]
    store.put_many("t", rows)
    frame = store.table("t").to_pandas()
    assert frame["n"].tolist()[-2:] == big
    assert frame.loc[0, "n"] == 0.5
    assert store.table("t").to_arrow().schema.field("n").metadata == {
        b"replikv.encoding": b"msgpack"
    }
    # Ints alone stay int64, whatever their size; small ones beside floats make float64.
    store.put_many("ints", [(1, {"n": 2**63 - 1}), (2, {"n": 1})])
    assert store.table("ints").to_arrow().schema.field("n").type == pa.int64()
    assert store.table("ints").to_pandas()["n"].tolist() == [2**63 - 1, 1]
    store.put_many("small", [(1, {"n": 2**53}), (2, {"n": 0.5})])
    assert store.table("small").to_pandas()["n"].tolist() == [2.0**53, 0.5]


def test_values_that_are_not_dicts_make_one_value_column(store: Any) -> None:
    store.put_many("counters", [("a", 1), ("b", 2), ("c", None)])
    table = store.table("counters").to_arrow()
    assert table.column_names == ["key", "value"]
    assert table.column("value").to_pylist() == [1, 2, None]


def test_an_export_imports_back_unchanged(store: Any) -> None:
    store.put("t", "a", {"tags": ["x", {"y": 1}], "when": dt.date(2024, 5, 1), "n": 3})
    store.put("t", "b", {"tags": None, "when": None, "n": None})
    store.put_arrow("copy", store.table("t").to_arrow(), key="key")
    assert list(store.scan("copy")) == list(store.scan("t"))


def test_put_arrow_takes_a_polars_frame_and_refuses_a_missing_key_column(store: Any) -> None:
    frame = pl.DataFrame({"id": [3, 1, 2], "city": ["Lyon", None, "Oslo"], "n": [1.5, 2.0, None]})
    receipt = store.put_arrow("cities", frame, key="id")
    assert receipt.lsn == store.last_lsn
    assert store.get("cities", 1) == {"city": None, "n": 2.0}
    assert [k for k, _ in store.scan("cities")] == [1, 2, 3]
    with pytest.raises(ValueError, match="no key column 'nope'"):
        store.put_arrow("cities", frame, key="nope")
    # polars exports a column of nulls in a form the Arrow reader alone refuses.
    unfilled = pl.DataFrame({"id": [4, 5], "opted_out": [None, None]})
    store.put_arrow("cities", unfilled, key="id")
    assert store.get("cities", 5) == {"opted_out": None}


def test_put_dataframe_in_batches_commits_one_transaction_per_batch(store: Any) -> None:
    df = pd.DataFrame({"email": [f"u{i}" for i in range(25)], "n": range(25)})
    seen: list[int] = []
    before = store.last_lsn
    store.put_dataframe("t", df, key="email", batch_rows=10, progress=seen.append)
    assert store.last_lsn == before + 3
    assert seen == [10, 20, 25]
    assert len(store.table("t")) == 25


def test_a_naive_datetime_column_is_refused_naming_key_and_field_unless_utc(store: Any) -> None:
    df = pd.DataFrame(
        {"email": ["a@x", "b@x"], "at": pd.to_datetime(["2024-01-01 10:00", "2024-01-02 00:00"])}
    )
    with pytest.raises(TypeError, match=r"^events\['a@x'\]\['at'\]: naive datetime"):
        store.put_dataframe("events", df, key="email")
    assert "events" not in store.tables()
    store.put_dataframe("events", df, key="email", naive="utc")
    assert store.get("events", "a@x") == {"at": dt.datetime(2024, 1, 1, 10, tzinfo=UTC)}


@pytest.mark.parametrize(
    ("column", "error", "message"),
    [
        (
            pd.Series([np.uint64(1), np.uint64(2**63 + 5)], dtype="uint64"),
            OverflowError,
            r"t\[2\]\['v'\]: 9223372036854775813 does not fit",
        ),
        (
            pd.Series([pd.Timedelta(1), pd.Timedelta(2)]),
            TypeError,
            r"t\[1\]\['v'\]: Arrow type Duration",
        ),
        (pd.Series([{"a": 1}, {"a": object()}]), TypeError, r"t\[2\]\['v'\]"),
        # Values pyarrow cannot convert are refused as put refuses them.
        (objects(1, -(2**63) - 1), OverflowError, r"^t\[2\]\['v'\]: int values must fit"),
        (objects(np.datetime64("2024-01-01"), None), TypeError, r"^t\[1\]\['v'\]: .*datetime64"),
        (pd.Series([1 + 2j, 3j]), TypeError, r"^t\[1\]\['v'\]: .*complex"),
        (objects("ok", "a\ud800"), ValueError, r"^t\[2\]\['v'\]: cannot store this str"),
        # Extension dtypes whose Arrow storage is not the value: refused like the values.
        (
            pd.Series(pd.period_range("2024-01", periods=2, freq="M")),
            TypeError,
            r"^t\[1\]\['v'\]: .*Period",
        ),
        (pd.Series(pd.interval_range(0, 2)), TypeError, r"^t\[1\]\['v'\]: .*Interval"),
    ],
)
def test_each_refused_cell_names_its_key_and_field(
    store: Any, column: Any, error: type[Exception], message: str
) -> None:
    df = pd.DataFrame({"id": [1, 2], "v": column})
    with pytest.raises(error, match=message):
        store.put_dataframe("t", df, key="id")
    assert "t" not in store.tables()


MIXED_COLUMNS = {
    "date then datetime": [dt.date(2024, 1, 1), dt.datetime(2024, 6, 1, 23, 59, tzinfo=UTC)],
    "datetime then date": [dt.datetime(2024, 6, 1, 23, 59, tzinfo=UTC), dt.date(2024, 1, 1)],
    "str and bytes": ["b", b"a"],
    "bytes and str": [b"a", "b"],
    "str and bytes in lists": [["a", b"b"], ["c"]],
    "int and float": [1, 2.5],
    "int and float in lists": [[1, 2.5], [3]],
    "int and float in lists of lists": [[[1], [2.5]], [[3]]],
    "bool and int": [True, 2],
    "two time zones": [
        dt.datetime(2024, 1, 1, tzinfo=UTC),
        dt.datetime(2024, 6, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    ],
}


@pytest.mark.parametrize("values", MIXED_COLUMNS.values(), ids=MIXED_COLUMNS)
def test_an_object_column_of_mixed_kinds_stores_each_value_as_put_does(
    store: Any, values: list[Any]
) -> None:
    store.put_dataframe("frame", pd.DataFrame({"k": [1, 2], "v": objects(*values)}), key="k")
    for key, value in enumerate(values, start=1):
        store.put("put", key, {"v": value})
        assert same(store.get("put", key), store.get("frame", key)), value


class NoOffset(dt.tzinfo):
    """A time zone that gives no UTC offset: Python takes its datetimes as naive."""

    def utcoffset(self, when: dt.datetime | None) -> None:
        return None

    def dst(self, when: dt.datetime | None) -> None:
        return None

    def tzname(self, when: dt.datetime | None) -> str:
        return "nowhere"


@pytest.mark.parametrize(
    "values",
    [
        [dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 6, 1, 12)],
        [dt.datetime(2024, 6, 1, 12), dt.datetime(2024, 1, 1, tzinfo=UTC)],
        [dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 6, 1, 12, tzinfo=NoOffset())],
    ],
    ids=["aware then naive", "naive then aware", "aware then no offset"],
)
def test_a_naive_datetime_beside_aware_ones_is_refused_naming_key_and_field_unless_utc(
    store: Any, values: list[Any]
) -> None:
    naive_key = 1 + [v.utcoffset() for v in values].index(None)
    df = pd.DataFrame({"k": [1, 2], "at": objects(*values)})
    with pytest.raises(TypeError, match=rf"^events\[{naive_key}\]\['at'\]: naive datetime"):
        store.put_dataframe("events", df, key="k")
    assert "events" not in store.tables()
    store.put_dataframe("events", df, key="k", naive="utc")
    for key, value in enumerate(values, start=1):
        as_utc = value if value.utcoffset() is not None else value.replace(tzinfo=UTC)
        assert store.get("events", key) == {"at": as_utc}


@pytest.mark.parametrize(
    "column",
    [
        pd.Series([1, None], dtype="Int64"),
        pd.Series([1.5, None], dtype="Float64"),
        pd.Series([True, None], dtype="boolean"),
        pd.Series(["a", None], dtype="string"),
        pd.Series(["a", None], dtype="string[pyarrow]"),
        pd.Series(["a", "b"], dtype="category"),
        pd.Series([3, 4], dtype="category"),
        pd.Series(pd.Categorical(["a", b"b"])),
        pd.Series([pd.Timestamp("2024-01-01 10:00", tz="Europe/Paris"), pd.NaT]),
        pd.Series([1, 2], dtype="int64[pyarrow]"),
    ],
    ids=lambda column: str(column.dtype),
)
def test_each_documented_dtype_stores_its_values_as_put_does(store: Any, column: Any) -> None:
    store.put_dataframe("frame", pd.DataFrame({"k": [1, 2], "v": column}), key="k")
    for key, value in enumerate(column.astype(object), start=1):
        store.put("put", key, {"v": None if pd.isna(value) else value})
        assert same(store.get("put", key), store.get("frame", key)), value


@pytest.mark.parametrize(
    ("keys", "error", "row"),
    [
        (objects(1, "a"), TypeError, 1),
        (objects(b"a", "b"), TypeError, 1),
        (objects(1, 2.5), TypeError, 1),
        (objects(1, True), TypeError, 1),
        (objects(-(2**63) - 1, 1), OverflowError, 0),
        (objects("a\ud800", "b"), ValueError, 0),
        (pd.Series(pd.period_range("2024-01", periods=2, freq="M")), TypeError, 0),
    ],
    ids=[
        "int, str",
        "bytes, str",
        "int, float",
        "int, bool",
        "beyond 64 bits",
        "surrogate",
        "period",
    ],
)
def test_a_key_column_that_cannot_be_stored_is_refused_naming_its_row_and_column(
    store: Any, keys: Any, error: type[Exception], row: int
) -> None:
    df = pd.DataFrame({"id": keys, "v": [1, 2]})
    with pytest.raises(error, match=rf"'id'.*<row {row}>"):
        store.put_dataframe("t", df, key="id")
    with pytest.raises(error, match=rf"'idx'.*<row {row}>"):
        store.put_dataframe("t", df.set_index("id").rename_axis("idx"))
    assert "t" not in store.tables()


@pytest.mark.parametrize(
    "dates",
    [
        pa.array([0, 2**30], pa.date32()),  # year 2,941,775
        pa.array([0, -719_163], pa.date32()),  # the day before 0001-01-01
        pa.array([0, 2_932_897 * 86_400_000], pa.date64()),  # 10000-01-01
    ],
)
def test_a_date_python_cannot_hold_is_refused_not_stored_unreadable(store: Any, dates: Any) -> None:
    table = pa.table({"id": ["ok", "bad"], "on": dates})
    with pytest.raises(OverflowError, match=r"t\['bad'\]\['on'\]: date outside years 1-9999"):
        store.put_arrow("t", table, key="id")
    assert "t" not in store.tables(), "nothing of the load was stored"
    # the edges of the range are stored and read back
    edges = pa.table({"id": ["first", "last"], "on": pa.array([-719_162, 2_932_896], pa.date32())})
    store.put_arrow("t", edges, key="id")
    assert store.get("t", "first") == {"on": dt.date(1, 1, 1)}
    assert store.get("t", "last") == {"on": dt.date(9999, 12, 31)}


def test_a_frame_whose_columns_would_overwrite_each_other_is_refused(store: Any) -> None:
    df = pd.DataFrame({"email": ["x@a"], "score": [10]}).set_index("email")
    df["email"] = ["OTHER"]
    with pytest.raises(ValueError, match="the index is named 'email' like a column"):
        store.put_dataframe("t", df)
    store.put_dataframe("t", df.rename_axis("id"))
    assert store.get("t", "x@a") == {"score": 10, "email": "OTHER"}
    twice = pd.DataFrame([[1, 2, 3]], columns=["id", "v", "v"])
    with pytest.raises(ValueError, match=r"must be unique.*\['v'\]"):
        store.put_dataframe("u", twice, key="id")
    nested = pd.DataFrame({"a": [1], "b": [2], "v": [3]}).set_index(["a", "b"])
    with pytest.raises(TypeError, match="a MultiIndex cannot be the key"):
        store.put_dataframe("u", nested)
    assert "u" not in store.tables()


def test_a_null_key_is_refused_naming_its_row(store: Any) -> None:
    table = pa.table({"id": pa.array(["a", None]), "v": [1, 2]})
    with pytest.raises(ValueError, match=r"^the key column 'id' at <row 1>: the key is null"):
        store.put_arrow("t", table, key="id")


def test_without_pandas_the_error_names_the_extra_to_install(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("t", 1, {"a": 1})
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install 'replikv\[pandas\]'"):
        store.table("t").to_pandas()
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r"pip install 'replikv\[arrow\]'"):
        store.table("t").to_arrow()


def test_asked_for_columns_are_null_in_values_that_are_not_dicts(store: Any) -> None:
    store.put_many("t", [(1, {"a": 1, "b": "x"}), (2, 7), (3, {"b": "y", "a": 3}), (4, [1])])
    table = store.table("t").to_arrow(columns=["a", "b"])
    assert table.to_pylist() == [
        {"key": 1, "a": 1, "b": "x"},
        {"key": 2, "a": None, "b": None},
        {"key": 3, "a": 3, "b": "y"},
        {"key": 4, "a": None, "b": None},
    ]


@pytest.mark.parametrize(
    "late",
    [
        {"n": 1.5, "s": "x"},  # a float where the first rows had ints
        {"n": 1, "s": "x", "new": True},  # a field the first rows did not have
        {"n": 1, "s": 7},  # an int where the first rows had strings
        5,  # a value that is not a dict
        {"n": 1, "s": None, "when": dt.date(2024, 1, 2)},
    ],
)
def test_a_built_export_has_the_whole_scans_schema_when_late_rows_differ(
    store: Any, late: Any
) -> None:
    rows = [(i, {"n": i, "s": f"v{i}"}) for i in range(70_000)]
    store.put_many("t", rows)
    store.put("t", 10**9, late)
    built = pa.table(store.arrow_stream("t", build=True))
    streamed = pa.table(store.arrow_stream("t"))
    assert built.schema == streamed.schema
    assert built.equals(streamed)
    assert built.num_rows == 70_001


@pytest.mark.parametrize("names", [["key", "v", "v"], ["key", "key"], ["v", "key", "v"]])
def test_put_arrow_refuses_columns_that_share_a_name_and_writes_nothing(
    store: Any, names: list[str]
) -> None:
    # One dict key would hold one of the columns: the others' data would be lost.
    arrays = [pa.array([1]), pa.array([10]), pa.array(["lost"])][: len(names)]
    table = pa.Table.from_arrays(arrays, names=names)
    repeated = next(name for name in names if names.count(name) > 1)
    with pytest.raises(ValueError, match=f"must be unique.*'{repeated}'"):
        store.put_arrow("t", table, key="key")
    assert "t" not in store.tables()


def test_a_field_name_with_a_nul_is_stored_whole_and_never_exported_cut_short(
    store: Any,
) -> None:
    """Arrow's C interface passes column names as C strings: a name with a NUL would reach
    a reader cut at it, or be refused there by a reader's own error naming nothing."""
    store.put("t", 1, {"a\0b": 6, "ok": 1})
    frame = pd.DataFrame({"id": [2], "a\0b": [7], "ok": [2]})
    store.put_dataframe("t", frame, key="id")
    assert store.get("t", 2) == {"a\0b": 7, "ok": 2}, "put_dataframe stores the name whole"
    for export in (
        lambda: store.table("t").to_arrow(),
        lambda: store.table("t").to_pandas(),
        lambda: pl.DataFrame(store.table("t").to_arrow_batches()),
    ):
        with pytest.raises(ValueError, match=r'field "a\\0b" has a NUL.*columns='):
            export()
    assert store.table("t").to_pandas(columns=["ok"])["ok"].tolist() == [1, 2]
    # A source that shows its names: refused before pyarrow would pass "a" for "a\0b",
    # also where a struct column holds it.
    nested = pa.table({"id": [3], "s": pa.array([{"a\0b": 8}])})
    listed = pa.table({"id": [3], "l": pa.array([[{"a\0b": 8}]])})
    for source in (
        pa.table({"id": [3], "a\0b": [8]}),
        pl.DataFrame({"id": [3], "a\0b": [8]}),
        nested,
        listed,
        nested.to_batches()[0],
    ):
        with pytest.raises(ValueError, match=r"'a\\x00b' has a NUL character"):
            store.put_arrow("t", source, key="id")
    assert store.get("t", 3) is None


def test_a_store_closed_while_an_export_reads_raises_store_closed(tmp_path: Path) -> None:
    """The close may land before, during or after the read: whichever, the export either
    ends whole or raises StoreClosed, never the storage engine's own error."""
    path = tmp_path / "db"
    with replikv.Store(path, fsync=False) as store:
        keys = np.arange(300_000)
        frame = pd.DataFrame({"id": keys, "bio": ["x" * 100] * len(keys)})
        store.put_dataframe("t", frame, key="id")
    for delay in (0.0, 0.02, 0.05, 0.1):
        store = replikv.Store(path, fsync=False)
        outcome: list[object] = []

        def export(store: Any = store, outcome: list[object] = outcome) -> None:
            try:
                outcome.append(store.table("t").to_arrow().num_rows)
            except Exception as err:  # reported by the assertion below
                outcome.append(err)

        reader = threading.Thread(target=export)
        reader.start()
        time.sleep(delay)
        store.close()
        reader.join(60)
        assert outcome and (
            outcome[0] == len(keys) or isinstance(outcome[0], replikv.StoreClosed)
        ), repr(outcome)


def test_a_categorical_inside_a_list_or_a_struct_is_stored_as_its_values(store: Any) -> None:
    """A categorical at the top of a column is stored as str: so is one a list or a struct
    holds (polars List(Categorical), a pyarrow list of dictionaries)."""
    frame = pl.DataFrame(
        {
            "id": [1, 2],
            "tags": pl.Series([["a", "b"], None], dtype=pl.List(pl.Categorical)),
            "st": pl.Series([{"c": "x"}, {"c": None}], dtype=pl.Struct({"c": pl.Categorical})),
        }
    )
    store.put_arrow("t", frame, key="id")
    assert store.get("t", 1) == {"tags": ["a", "b"], "st": {"c": "x"}}
    assert store.get("t", 2) == {"tags": None, "st": {"c": None}}
    words = pa.array(["de", "fr", "de"]).dictionary_encode()
    lists = pa.ListArray.from_arrays(pa.array([0, 2, 3]), words)
    store.put_arrow("u", pa.table({"id": [1, 2], "langs": lists}), key="id")
    assert dict(store.scan("u")) == {1: {"langs": ["de", "fr"]}, 2: {"langs": ["de"]}}


def nested_list(levels: int) -> Any:
    value: Any = 7
    for _ in range(levels):
        value = [value]
    return value


def nested_dict(levels: int) -> Any:
    value: Any = 7
    for _ in range(levels):
        value = {"x": value}
    return value


PACKED = {"replikv.encoding": "msgpack"}


def packed_column(cells: list[bytes | None]) -> pa.Table:
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("v", pa.binary(), metadata=PACKED)])
    return pa.table({"id": list(range(1, len(cells) + 1)), "v": cells}, schema=schema)


@pytest.mark.parametrize(
    ("load", "value"),
    [
        ("arrow", nested_list),  # list<list<...>>
        ("arrow", nested_dict),  # struct<x: struct<...>>
        ("packed", nested_list),  # a binary column marked msgpack, as to_arrow packs
        ("dataframe", nested_dict),  # an object column of dicts, encoded from Python
    ],
)
def test_values_nested_deeper_than_put_allows_are_refused_by_every_load(
    store: Any, load: str, value: Any
) -> None:
    # put refuses a field nested 128 levels down; a load must refuse it too, or the row
    # reads back as a false CorruptionError.
    with pytest.raises(ValueError, match="nested deeper than 128 levels"):
        store.put("p", 1, {"v": value(128)})
    store.put("p", 1, {"v": value(127)})

    def put(levels: int) -> None:
        if load == "arrow":
            table = pa.table({"id": [1, 2], "v": pa.array([None, value(levels)])})
            store.put_arrow("t", table, key="id")
        elif load == "packed":
            store.put_arrow("t", packed_column([None, b"\x91" * levels + b"\x07"]), key="id")
        else:
            store.put_dataframe(
                "t", pd.DataFrame({"id": [1, 2], "v": [None, value(levels)]}), key="id"
            )

    with pytest.raises(ValueError, match=r"t\[2\]\['v'\].*nested deeper than 128 levels"):
        put(128)
    assert "t" not in store.tables(), "nothing of the load was stored"
    put(127)
    assert store.get("t", 2) == store.get("p", 1)


def test_a_refusal_deep_in_a_value_names_its_path_as_put_does(store: Any) -> None:
    with pytest.raises(ValueError) as by_put:
        store.put("t", 2, {"v": nested_list(128)})
    with pytest.raises(ValueError) as by_arrow:
        store.put_arrow("t", pa.table({"id": [2], "v": [nested_list(128)]}), key="id")
    assert str(by_arrow.value) == str(by_put.value)
    assert "...(129 levels down)" in str(by_put.value)


def test_an_export_of_keys_of_mixed_types_imports_back_with_its_keys(store: Any) -> None:
    rows = [
        (1, {"v": 1}),
        (-(2**63), {"v": 2}),
        ("a", {"v": 3}),
        ("", {"v": 4}),
        (b"\x00", {"v": 5}),
    ]
    store.put_many("t", rows)
    exported = store.table("t").to_arrow()
    assert exported.schema.field("key").metadata == {b"replikv.encoding": b"msgpack"}
    store.put_arrow("copy", exported, key="key")
    assert list(store.scan("copy")) == list(store.scan("t"))
    store.put_arrow("ops", store.changes().to_arrow(), key="key")
    assert [k for k, _ in store.scan("ops")] == [k for k, _ in store.scan("t")]


def packed_keys(cell: bytes) -> pa.Table:
    schema = pa.schema([pa.field("key", pa.binary(), metadata=PACKED), pa.field("v", pa.int64())])
    return pa.table({"key": [b"\x01", cell], "v": [1, 2]}, schema=schema)


# {'tags': [1, <inner>]}: stored as it is, a cell no reader decodes would fail every read
# of its row (and scrub, which checks CRCs, would not see it).
TAGS = b"\x81\xa4tags\x92\x01"


@pytest.mark.parametrize(
    ("column", "cell", "error", "message"),
    [
        ("key", b"\x91\x01", TypeError, "keys must be str, bytes or int, not list"),
        ("key", b"\xc0", TypeError, "keys must be str, bytes or int, not None"),
        ("key", b"\xcf" + b"\xff" * 8, OverflowError, "int keys must fit in 64 bits"),
        ("key", b"\x01\x02", ValueError, "does not hold exactly one MessagePack value"),
        ("value", TAGS + b"\xa1\xff", ValueError, "a str that is not UTF-8"),
        ("value", TAGS + b"\xd4\x05\x00", TypeError, "extension type 5, which replikv does not"),
        ("value", TAGS + b"\xd4\xff\x00", ValueError, "datetime is malformed"),
        ("value", TAGS + b"\xcf" + b"\xff" * 8, OverflowError, "ints must fit in 64 bits"),
        ("value", TAGS + b"\x81\x01\x02", TypeError, "dict keys must be str, not int"),
    ],
)
def test_a_packed_cell_put_would_refuse_is_refused_naming_its_row_and_path(
    store: Any, column: str, cell: bytes, error: type[Exception], message: str
) -> None:
    if column == "key":
        table, key, where = packed_keys(cell), "key", r"^the key column 'key' at <row 1>"
    else:
        table, key, where = packed_column([b"\x01", cell]), "id", r"t\[2\]\['v'\]\['tags'\]\[1\]"
    with pytest.raises(error, match=rf"{where}: .*{message}"):
        store.put_arrow("t", table, key=key)
    assert "t" not in store.tables(), "nothing of the load was stored"


@pytest.mark.parametrize("layout", [pa.large_binary(), pa.binary_view()])
def test_an_export_cast_to_another_binary_layout_imports_back(store: Any, layout: Any) -> None:
    rows = [(1, {"v": [1, "a"]}), ("k", {"v": {"x": None}}), (b"b", {"v": 2.5})]
    store.put_many("t", rows)
    exported = store.table("t").to_arrow()
    packed = [f.name for f in exported.schema if f.metadata == {b"replikv.encoding": b"msgpack"}]
    assert packed == ["key", "v"]
    cast = exported.cast(
        pa.schema([f.with_type(layout) if f.name in packed else f for f in exported.schema])
    )
    store.put_arrow("copy", cast, key="key")
    assert list(store.scan("copy")) == list(store.scan("t"))


def test_columns_named_twice_are_refused_and_no_columns_give_the_key_alone(store: Any) -> None:
    store.put_many("t", [(1, {"a": 1, "b": "x"}), (2, {"a": 2}), ("c", [3])])
    subs = store.table("t")
    for export in (subs.to_arrow, subs.to_arrow_batches, subs.to_pandas):
        with pytest.raises(ValueError, match="columns lists 'a' more than once"):
            export(columns=["a", "b", "a"])
    assert subs.to_arrow(columns=[]).column_names == ["key"]
    assert subs.to_arrow_batches(columns=[]).column_names == ["key"]
    frame = subs.to_pandas(columns=[])
    assert list(frame.columns) == [] and list(frame.index) == [1, 2, "c"]


def test_the_value_column_of_a_table_not_all_dicts_can_be_asked_for_by_name(store: Any) -> None:
    store.put_many("t", [("ana", 5), ("bo", [7]), ("cy", {"value": 1})])
    subs = store.table("t")
    whole = subs.to_arrow()
    assert whole.column_names == ["key", "value"]
    assert subs.to_arrow(columns=["value"]).to_pylist() == whole.to_pylist()
    batches = pa.RecordBatchReader.from_stream(subs.to_arrow_batches(columns=["value"]))
    assert batches.read_all().to_pylist() == whole.to_pylist()
    assert subs.to_pandas(columns=["value"])["value"].tolist() == [5, [7], {"value": 1}]
    # A table of dicts gives its field of that name, as for any other column.
    store.put_many("d", [("ana", {"value": 1, "x": 2}), ("bo", {"x": 3})])
    assert store.table("d").to_arrow(columns=["value"]).column("value").to_pylist() == [1, None]


def test_a_reader_past_max_transaction_bytes_is_refused_at_the_crossing_batch(
    tmp_path: Path,
) -> None:
    schema = pa.schema([("key", pa.int64()), ("v", pa.string())])
    pulled = 0

    def batches() -> Any:
        nonlocal pulled
        for b in range(200):
            pulled += 1
            keys = pa.array(range(b * 1000, (b + 1) * 1000), pa.int64())
            yield pa.record_batch([keys, pa.array(["x" * 100] * 1000)], schema=schema)

    with replikv.Store(tmp_path / "db", max_transaction_bytes=1 << 20) as store:
        reader = pa.RecordBatchReader.from_batches(schema, batches())
        with pytest.raises(replikv.ValueTooLarge, match=r"put_arrow rows exceed .* at row \d+"):
            store.put_arrow("t", reader, key="key")
        # About 100 KiB a batch: the refusal comes within the batches that cross 1 MiB.
        assert pulled < 20
        assert len(store.table("t")) == 0
