"""Loads that must be refused whole, or that fail after a commit and must say so: Arrow
buffers that contradict their schema, struct fields that would overwrite each other,
rows over a size limit (named by key and row), and a progress callback that raises after
some or all rows are committed (the receipt travels on the exception)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import replikv
from dateutil import tz


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with replikv.Store(tmp_path / "s", max_value_bytes=1000, max_key_bytes=64) as s:
        yield s


def not_utf8() -> pa.Array:
    """A string array holding b"\xff\xfe": pyarrow builds it from buffers unchecked."""
    offsets = pa.py_buffer(b"\x00\x00\x00\x00\x02\x00\x00\x00")
    return pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(b"\xff\xfe")])


@pytest.mark.parametrize("column", ["id", "v"])
def test_strings_that_are_not_utf8_are_refused_naming_the_column_and_nothing_is_stored(
    store: Any, column: str
) -> None:
    columns = {"id": pa.array([1]), "v": pa.array(["fine"])}
    columns[column] = not_utf8()
    with pytest.raises(ValueError, match=f"column '{column}' .*not valid Arrow data.*UTF"):
        store.put_arrow("t", pa.table(columns), key="id")
    assert "t" not in store.tables()
    assert store.scrub().ok


def test_a_struct_whose_fields_share_a_name_is_refused_naming_the_path(store: Any) -> None:
    street = pa.array(["home st"])
    inner = pa.StructArray.from_arrays([street, pa.array(["work ave"])], names=["street"] * 2)
    outer = pa.StructArray.from_arrays([inner], names=["addr"])
    with pytest.raises(ValueError, match=r"'street' is the name of .* column 'v'\['addr'\]"):
        store.put_arrow("t", pa.table({"id": [1], "v": outer}), key="id")
    listed = pa.array([[{"a": 1}]], type=pa.list_(pa.struct([("a", pa.int8()), ("a", pa.int8())])))
    with pytest.raises(ValueError, match=r"'a' is the name of .* column 'v'\[\]"):
        store.put_arrow("t", pa.table({"id": [1], "v": listed}), key="id")
    assert "t" not in store.tables()


def test_datetimes_in_dateutil_zones_are_stored_as_the_instants_they_are(store: Any) -> None:
    # pandas keeps a column of datetimes in several zones as objects; dateutil's zones
    # cannot be hashed.
    new_york, london = tz.gettz("America/New_York"), tz.gettz("Europe/London")
    frame = pd.DataFrame(
        {
            "email": ["a@x", "b@x"],
            "at": [
                dt.datetime(2020, 1, 15, 12, tzinfo=new_york),
                dt.datetime(2020, 7, 15, 12, tzinfo=london),
            ],
        }
    )
    store.put_dataframe("subs", frame, key="email")
    utc = dt.timezone.utc
    assert store.get("subs", "a@x")["at"] == dt.datetime(2020, 1, 15, 17, tzinfo=utc)
    assert store.get("subs", "b@x")["at"] == dt.datetime(2020, 7, 15, 11, tzinfo=utc)


def oversized(kind: str) -> list[tuple[str, dict[str, str]]]:
    rows = [(f"u{i}@x.com", {"bio": "short"}) for i in range(5)]
    if kind == "value":
        rows[3] = ("u3@x.com", {"bio": "x" * 2000})
    else:
        rows[1] = ("k" * 100, {"bio": "short"})
    return rows


LOADS = {
    "put_many": lambda s, rows: s.put_many("subs", rows),
    "put_dataframe": lambda s, rows: s.put_dataframe(
        "subs", pd.DataFrame([{"email": k, **v} for k, v in rows]), key="email"
    ),
    "put_arrow": lambda s, rows: s.put_arrow(
        "subs", pa.Table.from_pylist([{"email": k, **v} for k, v in rows]), key="email"
    ),
}


@pytest.mark.parametrize("load", sorted(LOADS))
def test_a_row_over_a_size_limit_is_refused_naming_its_key_and_row(store: Any, load: str) -> None:
    with pytest.raises(replikv.ValueTooLarge, match=r"subs\['u3@x.com'\] \(row 3\): value of"):
        LOADS[load](store, oversized("value"))
    with pytest.raises(replikv.ValueTooLarge, match=r"subs\['kkkk.*…\] \(row 1\): key of 10"):
        LOADS[load](store, oversized("key"))
    assert "subs" not in store.tables()


def failing_at(rows: int) -> Any:
    def progress(done: int) -> None:
        if done >= rows:
            raise RuntimeError(f"the progress bar broke at {done}")

    return progress


def notes(err: BaseException) -> str:
    """The notes added to `err` (``__notes__``, from Python 3.11 on), as one text."""
    return " ".join(getattr(err, "__notes__", []))


FRAME = pd.DataFrame({"k": range(10_000), "v": 1})


@pytest.mark.parametrize("load", ["put_dataframe", "put_arrow"])
def test_a_progress_callback_failing_after_the_commit_carries_the_receipt(
    store: Any, load: str
) -> None:
    data = FRAME if load == "put_dataframe" else pa.Table.from_pandas(FRAME)
    with pytest.raises(RuntimeError, match="broke") as raised:
        getattr(store, load)("t", data, key="k", progress=failing_at(len(FRAME)))
    assert raised.value.receipt.lsn == store.last_lsn  # type: ignore[attr-defined]
    assert "its changes are stored" in notes(raised.value)
    assert store.count("t") == len(FRAME)


def test_a_failure_after_some_batches_committed_says_how_many_rows_are_stored(
    store: Any,
) -> None:
    with pytest.raises(RuntimeError, match="broke") as raised:
        store.put_dataframe("t", FRAME, key="k", progress=failing_at(5000), batch_rows=2500)
    assert raised.value.receipt.lsn == store.last_lsn  # type: ignore[attr-defined]
    assert "the first 5000 rows were already committed" in notes(raised.value)
    assert store.count("t") == 5000
    bad = FRAME.astype({"k": object})
    bad.loc[7000, "k"] = None  # refused in the third batch: two are stored
    with pytest.raises(ValueError, match="null") as refused:
        store.put_dataframe("u", bad, key="k", batch_rows=2500)
    assert "the first 5000 rows" in notes(refused.value)
    assert store.count("u") == 5000
