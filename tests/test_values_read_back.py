"""Every value that ``put`` accepts reads back equal, through ``get``, scans and the change
log: a value that could never be read back is refused at ``put``."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import replikv
from hypothesis import HealthCheck, given, settings

# Any fixed offset Python allows, so that the UTC value of a datetime near year 1 or 9999
# falls outside what a datetime can hold.
OFFSETS = st.timedeltas(
    min_value=dt.timedelta(hours=-23, minutes=-59), max_value=dt.timedelta(hours=23, minutes=59)
).map(dt.timezone)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.datetimes(timezones=OFFSETS),
    st.datetimes(timezones=OFFSETS, min_value=dt.datetime(9999, 12, 30)),
    st.datetimes(timezones=OFFSETS, max_value=dt.datetime(1, 1, 2)),
    st.dates(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=6), inner, max_size=4),
    ),
    max_leaves=10,
)


def same(stored: Any, read: Any) -> bool:
    """Equality as stored: tuples come back as lists, NaN is NaN."""
    if isinstance(stored, float) and math.isnan(stored):
        return isinstance(read, float) and math.isnan(read)
    if isinstance(stored, list | tuple):
        return (
            isinstance(read, list)
            and len(stored) == len(read)
            and all(same(a, b) for a, b in zip(stored, read, strict=True))
        )
    if isinstance(stored, dict):
        return (
            isinstance(read, dict)
            and stored.keys() == read.keys()
            and all(same(v, read[k]) for k, v in stored.items())
        )
    return type(stored) is type(read) and bool(stored == read)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path: Path = tmp_path_factory.mktemp("roundtrip") / "db"
    with replikv.Store(path, fsync=False) as store:
        yield store


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=VALUES)
def test_every_value_put_accepts_reads_back_equal(shared_store: replikv.Store, value: Any) -> None:
    before = shared_store.last_lsn
    try:
        receipt = shared_store.put("t", "k", value)
    except (TypeError, ValueError, OverflowError):
        assert shared_store.last_lsn == before, "a refused value took an LSN"
        return
    assert same(value, shared_store.get("t", "k"))
    assert same(value, dict(shared_store.scan("t", prefix="k"))["k"])
    (change,) = shared_store.changes(since=receipt.lsn - 1)
    assert same(value, change.ops[0].value)


@pytest.mark.parametrize(
    "when",
    [
        dt.datetime.max.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=5))),
    ],
)
def test_a_datetime_outside_years_1_to_9999_in_utc_is_refused_at_put(
    store: replikv.Store, when: dt.datetime
) -> None:
    with pytest.raises(OverflowError, match="outside years 1-9999"):
        store.put("t", "k", {"at": when})
    assert store.last_lsn == 0
    assert list(store.changes()) == []


def test_dicts_of_any_size_read_back_equal_with_their_fields_in_order(
    shared_store: replikv.Store,
) -> None:
    # Past 5 fields a dict read back is made at its size at once (CPython 3.10-3.13); the
    # sizes cross every point where a dict made empty would have grown.
    for size in range(70):
        value = {f"field_{(size - i) * 7}": i for i in range(size)}
        shared_store.put("t", "wide", value)
        read = shared_store.get("t", "wide")
        assert read == value and list(read) == list(value), size
        read["added"] = 1  # an ordinary dict that still grows
        assert len(read) == size + 1
