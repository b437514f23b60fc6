"""The value codec: the exact bytes stored for each type (what existing stores and replicas
hold), the conversions of numpy scalars, dates and pandas timestamps, the options of the
DataFrame paths, and refusals that name the row and the field."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import pytest
import replikv
from hypothesis import given, settings
from test_values_read_back import same

np: Any = pytest.importorskip("numpy")
pd: Any = pytest.importorskip("pandas")

UTC = dt.timezone.utc

# MessagePack as the spec writes each value in its smallest form (what rmp-serde wrote
# before the encoder was replaced: a change here would make old stores read differently).
KNOWN_BYTES: list[tuple[Any, str]] = [
    (None, "c0"),
    (True, "c3"),
    (False, "c2"),
    (0, "00"),
    (127, "7f"),
    (128, "cc80"),
    (256, "cd0100"),
    (65536, "ce00010000"),
    (2**32, "cf0000000100000000"),
    (2**63 - 1, "cf7fffffffffffffff"),
    (-1, "ff"),
    (-32, "e0"),
    (-33, "d0df"),
    (-129, "d1ff7f"),
    (-32769, "d2ffff7fff"),
    (-(2**63), "d38000000000000000"),
    (1.5, "cb3ff8000000000000"),
    ("", "a0"),
    ("ab", "a26162"),
    ("x" * 32, "d920" + "78" * 32),
    ("x" * 256, "da0100" + "78" * 256),
    (b"", "c400"),
    (b"\x01\x02", "c4020102"),
    ([1, "a"], "9201a161"),
    ((1,), "9101"),
    ([], "90"),
    ({"a": 1}, "81a16101"),
    ({}, "80"),
    (list(range(16)), "dc0010" + "".join(f"{i:02x}" for i in range(16))),
    # Timestamps: 4 bytes (seconds), 8 bytes (nanoseconds too), 12 bytes (before 1970).
    (dt.datetime(2026, 1, 1, tzinfo=UTC), "d6ff6955b900"),
    (dt.datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC), "d7ff00000fa06955b900"),
    (dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), "c70cff00000000ffffffffffffffff"),
    # Dates: extension type 1, the big-endian signed days since 1970-01-01.
    (dt.date(1970, 1, 2), "d60100000001"),
    (dt.date(1969, 12, 31), "d601ffffffff"),
    (dt.date(2026, 1, 1), "d60100004fe6"),
]


@pytest.mark.parametrize(("value", "expected"), KNOWN_BYTES, ids=repr)
def test_each_type_is_stored_as_its_known_messagepack_bytes(value: Any, expected: str) -> None:
    encoded = replikv.encode_value(value)
    assert encoded.hex() == expected
    assert same(value, replikv.decode_value(encoded))


@pytest.mark.parametrize(
    ("value", "read_back"),
    [
        (np.int8(-5), -5),
        (np.int16(300), 300),
        (np.int32(-70000), -70000),
        (np.int64(2**62), 2**62),
        (np.uint8(255), 255),
        (np.uint16(65535), 65535),
        (np.uint32(2**32 - 1), 2**32 - 1),
        (np.uint64(2**63 - 1), 2**63 - 1),
        (np.float16(1.5), 1.5),
        (np.float32(0.1), float(np.float32(0.1))),
        (np.float64(2.25), 2.25),
        (np.bool_(True), True),
        (np.bool_(False), False),
        (np.str_("text"), "text"),
        (dt.date(2026, 3, 1), dt.date(2026, 3, 1)),
        (
            pd.Timestamp("2026-03-01 12:00:00.123456789", tz="UTC"),
            dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        ),
        (
            pd.Timestamp("2026-03-01 12:00", tz="Europe/Paris"),
            dt.datetime(2026, 3, 1, 11, tzinfo=UTC),
        ),
    ],
    ids=repr,
)
def test_numpy_scalars_dates_and_timestamps_read_back_as_documented(
    store: replikv.Store, value: Any, read_back: Any
) -> None:
    store.put("t", "k", {"v": value})
    got = store.get("t", "k")["v"]
    assert type(got) is type(read_back)
    assert got == read_back
    # A numpy scalar is stored exactly as the Python value it stands for.
    assert replikv.encode_value(value) == replikv.encode_value(read_back)


# Accepted values and what they read back as.
CONVERTED = st.one_of(
    st.integers(-(2**63), 2**63 - 1).flatmap(
        lambda i: st.sampled_from(
            [
                t
                for t in (np.int64, np.int32, np.int16, np.int8)
                if np.iinfo(t).min <= i <= np.iinfo(t).max
            ]
            + [t for t in (np.uint64, np.uint32, np.uint16, np.uint8) if 0 <= i <= np.iinfo(t).max]
        ).map(lambda t: (t(i), i))
    ),
    st.floats(width=32).map(lambda f: (np.float32(f), float(np.float32(f)))),
    st.floats(width=16).map(lambda f: (np.float16(f), float(np.float16(f)))),
    st.booleans().map(lambda b: (np.bool_(b), b)),
    st.dates().map(lambda d: (d, d)),
    st.datetimes(
        min_value=dt.datetime(1700, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(UTC)
    ).flatmap(
        lambda when: st.integers(0, 999).map(
            lambda ns: (pd.Timestamp(when) + pd.Timedelta(nanoseconds=ns), when)
        )
    ),
)


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(CONVERTED, min_size=1, max_size=5))
def test_every_converted_value_round_trips_to_its_documented_python_value(
    pairs: list[tuple[Any, Any]],
) -> None:
    value = {f"f{i}": given for i, (given, _) in enumerate(pairs)}
    expected = {f"f{i}": python for i, (_, python) in enumerate(pairs)}
    read = replikv.decode_value(replikv.encode_value(value))
    assert same(expected, read)


def test_missing_values_become_none_only_when_asked() -> None:
    missing = [None, math.nan, np.float32("nan"), np.float64("nan"), pd.NA, pd.NaT]
    for value in missing:
        assert replikv.decode_value(replikv.encode_value(value, missing_as_none=True)) is None
    # Inside a list or dict a NaN is data and stays NaN; NA and NaT have no other form.
    nested = replikv.decode_value(replikv.encode_value({"l": missing}, missing_as_none=True))
    assert nested["l"][0] is None and nested["l"][4:] == [None, None]
    assert all(isinstance(v, float) and math.isnan(v) for v in nested["l"][1:4])
    stored = replikv.decode_value(replikv.encode_value(missing[:4]))
    assert stored[0] is None
    assert all(isinstance(v, float) and math.isnan(v) for v in stored[1:])
    for value, name in [(pd.NA, "pandas.NA"), (pd.NaT, "pandas.NaT")]:
        with pytest.raises(TypeError, match=rf"^value\['x'\]: {name} \(a missing value\)"):
            replikv.encode_value({"x": value})


def test_naive_datetimes_are_taken_as_utc_only_when_asked() -> None:
    naive = dt.datetime(2026, 1, 1, 12, 30, 0, 5)
    aware = naive.replace(tzinfo=UTC)
    assert replikv.encode_value(naive, naive="utc") == replikv.encode_value(aware)
    naive_ts = pd.Timestamp("2026-01-01 12:30:00.000005001")
    assert replikv.encode_value(naive_ts, naive="utc") == replikv.encode_value(aware)
    with pytest.raises(TypeError, match=r"^value: naive datetime"):
        replikv.encode_value(naive)
    with pytest.raises(ValueError, match="naive must be 'refuse' or 'utc'"):
        replikv.encode_value(naive, naive="local")  # type: ignore[arg-type]


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


# What each refusal is, the exception it raises and a bit of its message.
REFUSED: dict[str, tuple[Callable[[], Any], type[Exception], str]] = {
    "naive datetime": (lambda: dt.datetime(2026, 1, 1), TypeError, "naive datetime"),
    "naive Timestamp": (lambda: pd.Timestamp("2026-01-01"), TypeError, "naive datetime"),
    "Decimal": (lambda: decimal.Decimal("1.10"), TypeError, r"str\(value\).*float\(value\)"),
    "uint64 out of range": (
        lambda: np.uint64(2**64 - 1),
        OverflowError,
        "uint64 18446744073709551615",
    ),
    "unsupported type": (lambda: {1, 2}, TypeError, "cannot store a value of type set"),
    # numpy's duration is an integer subclass: refused by type, not as an int too large.
    "numpy timedelta64": (
        lambda: np.timedelta64(1, "s"),
        TypeError,
        "cannot store a value of type timedelta64",
    ),
    "int overflow": (lambda: 2**64, OverflowError, "int values must fit in 64 bits"),
    "nested depth": (lambda: deep(200), ValueError, "nested deeper than 128"),
}

WRITES: dict[str, Callable[[replikv.Store, int, Any], object]] = {
    "put": lambda s, key, value: s.put("events", key, value),
    "put_many": lambda s, key, value: s.put_many("events", [(key - 1, {"ok": 1}), (key, value)]),
    "transaction": lambda s, key, value: _in_transaction(s, key, value),
}


def _in_transaction(store: replikv.Store, key: int, value: Any) -> None:
    with store.transaction() as tx:
        tx.put("events", key - 1, {"ok": 1})
        tx.put("events", key, value)


@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize("kind", REFUSED)
def test_every_refusal_names_the_key_and_the_field_path(
    store: replikv.Store, kind: str, write: str
) -> None:
    make, error, text = REFUSED[kind]
    # A value refused for its depth is named down to where the path is cut.
    deeper = r"(\[0\])+\.\.\.\(\d+ levels down\)" if kind == "nested depth" else ""
    with pytest.raises(error, match=rf"^events\[165260\]\['at'\]{deeper}: .*{text}"):
        WRITES[write](store, 165260, {"name": "Ana", "at": make()})
    with pytest.raises(error, match=rf"^events\[165260\]\['visits'\]\[3\]{deeper}: .*{text}"):
        WRITES[write](store, 165260, {"visits": [1, 2, 3, make()]})
    with pytest.raises(error, match=rf"^events\[165260\]{deeper}: .*{text}"):
        WRITES[write](store, 165260, make())
    assert store.last_lsn == 0, "a refused write took an LSN"
    assert store.count("events") == 0


@pytest.mark.parametrize("kind", REFUSED)
def test_encode_value_names_the_field_path_alone(kind: str) -> None:
    make, error, text = REFUSED[kind]
    deeper = r"(\[0\])+\.\.\.\(\d+ levels down\)" if kind == "nested depth" else ""
    with pytest.raises(error, match=rf"^value\['at'\]\[2\]{deeper}: .*{text}"):
        replikv.encode_value({"at": [0, 1, make()]})


def test_a_str_key_is_named_by_its_repr_and_a_tuple_index_too(store: replikv.Store) -> None:
    with pytest.raises(
        TypeError, match=r"^subscribers\['ana@example.com'\]\['pair'\]\[1\]\['x y'\]: "
    ):
        store.put("subscribers", "ana@example.com", {"pair": (1, {"x y": object()})})
    with pytest.raises(
        TypeError, match=r"^t\[b'k'\]\['d'\]: dict keys in values must be str, not int"
    ):
        store.put("t", b"k", {"d": {1: 2}})
