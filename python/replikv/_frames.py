"""pandas and pyarrow glue for the analysts' path (both are optional extras).

DataFrames go to Arrow column by column in pandas' and pyarrow's own code, and Arrow comes
back to pandas the same way; replikv's Rust core does the rest. A column goes through Arrow
only where Arrow holds its values exactly; any other column is handed over as Python
objects, which the core encodes one by one as ``put`` does. No function here loops over
rows in Python, except to name the row of a key the frame cannot be stored under.
"""

from __future__ import annotations

import datetime as dt
import importlib
import operator
import zoneinfo
from typing import Any, NoReturn

#: What ``pandas.api.types.infer_dtype`` calls an object column whose values are all of
#: one kind that Arrow holds exactly, and the ``pyarrow.types`` tests the Arrow type
#: pyarrow gives it must pass. Other object columns (ints with floats, str with bytes,
#: dates with datetimes; lists, whose items pyarrow coerces to one type too; dicts; types
#: replikv refuses) are encoded from their Python objects.
_ONE_KIND = {
    "empty": ("is_null",),
    "boolean": ("is_boolean",),
    "integer": ("is_integer",),
    "floating": ("is_floating",),
    "string": ("is_string", "is_large_string"),
    "bytes": ("is_binary", "is_large_binary"),
    "date": ("is_date",),
    "datetime": ("is_timestamp",),
}

#: tzinfo classes whose ``utcoffset`` never returns None.
_ZONES_WITH_OFFSETS = (dt.timezone, zoneinfo.ZoneInfo)


def require(module: str, extra: str, what: str) -> Any:
    """Imports an optional dependency, or raises an ImportError that names the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{what} needs {module}, which is not installed: pip install 'replikv[{extra}]'"
        ) from err


def dataframe_columns(
    df: Any, key: str | None
) -> tuple[Any, str, list[tuple[str, list[Any]]], list[str]]:
    """Splits a DataFrame for ``Store.put_dataframe``.

    Returns an Arrow table of the key and every column Arrow holds exactly, the other
    columns as lists of Python objects, the key column's name and the value columns' order.

    Raises:
        TypeError, OverflowError or ValueError: a key that cannot be stored, or of another
            type than the keys before it (the message names its row and the key column).
    """
    pd = require("pandas", "pandas", "put_dataframe")
    pa = require("pyarrow", "pandas", "put_dataframe")
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"put_dataframe takes a pandas DataFrame, not {type(df).__name__}")
    if not df.columns.is_unique:
        repeated = sorted({str(name) for name in df.columns[df.columns.duplicated()]})
        raise ValueError(f"column names must be unique to be stored as dict keys: {repeated}")
    if key is None:
        if isinstance(df.index, pd.MultiIndex):
            raise TypeError(
                "a MultiIndex cannot be the key: df.reset_index() and pass key= one column"
            )
        key_name = df.index.name if isinstance(df.index.name, str) else "__index__"
        if key_name in df.columns:
            raise ValueError(
                f"the index is named {key_name!r} like a column, whose values would be lost: "
                f"rename one (df.rename_axis('id')), or pass key={key_name!r} to key by the "
                "column"
            )
        # Not to_series(): it infers a dtype anew, which fails on a str pyarrow cannot hold.
        keys = pd.Series(df.index, dtype=df.index.dtype)
    else:
        if key not in df.columns:
            raise KeyError(
                f"no column {key!r} to use as the key: the columns are {list(df.columns)}"
            )
        key_name, keys = key, df[key]
    names = [name for name in df.columns if name != key]
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"column names must be str to be stored as dict keys, not {name!r}")
    arrow_names = [key_name]
    arrays = [_key_array(keys, key_name, pd, pa)]
    objects: list[tuple[str, list[Any]]] = []
    for name in names:
        column = df[name]
        # Arrow's C interface passes a column's name as a C string, cut at a NUL: such a
        # column goes as Python objects, under its whole name, as put stores it.
        array = None if "\0" in name else _to_arrow(column, pd, pa)
        if array is None:
            objects.append((name, _cells(column)))
        else:
            arrow_names.append(name)
            arrays.append(array)
    return pa.Table.from_arrays(arrays, names=arrow_names), key_name, objects, names


def _cells(column: Any) -> list[Any]:
    """An object column's cells as ``put`` takes them: a numpy array in a cell, as pandas
    reads a parquet list column (and a struct's list field), becomes a list."""
    import numpy

    cells: list[Any] = column.tolist()
    if not any(isinstance(cell, numpy.ndarray | dict) for cell in cells):
        return cells
    return [_listed(cell, numpy.ndarray) for cell in cells]


def _listed(value: Any, ndarray: type) -> Any:
    """``value`` with every numpy array in it (through dicts and arrays) made a list."""
    if isinstance(value, ndarray):
        array: Any = value
        if array.dtype.kind == "M":  # datetime64: tolist() would give ints of nanoseconds
            array = array.astype("datetime64[us]")
        elif array.dtype.kind == "m":  # timedelta64: the same ints, where put refuses a duration
            array = array.astype("timedelta64[us]")
        if array.dtype == object:
            return [_listed(item, ndarray) for item in array.tolist()]
        return array.tolist()
    if isinstance(value, dict) and any(isinstance(item, ndarray | dict) for item in value.values()):
        return {name: _listed(item, ndarray) for name, item in value.items()}
    return value  # a dict of plain fields (a profile) as it is: not copied


def _to_arrow(column: Any, pd: Any, pa: Any) -> Any:
    """The column as an Arrow array that holds its values exactly, or None if they must be
    encoded from their Python objects (as ``put`` encodes them, naming the key and field of
    a value it refuses)."""
    if column.dtype == object:
        kind = _one_kind(column, pd)
        if kind is None:
            return None
        arrow_types = _ONE_KIND[kind]
    elif _exact_in_arrow(column.dtype, pd):
        arrow_types = ()
    else:
        return None
    try:
        array = pa.Array.from_pandas(column)
    except (pa.ArrowException, ArithmeticError, TypeError, ValueError):
        # A value pyarrow cannot convert (an int beyond 64 bits, a str with a lone
        # surrogate, a complex number): encoded one by one, it is refused by name.
        return None
    if arrow_types and not any(getattr(pa.types, test)(array.type) for test in arrow_types):
        return None
    return array


def _one_kind(column: Any, pd: Any) -> str | None:
    """The kind (a key of ``_ONE_KIND``) of an object column whose values, missing ones
    aside, are all of that kind; None for any other column."""
    kind: str = pd.api.types.infer_dtype(column, skipna=True)
    if kind not in ("date", "datetime"):
        return kind if kind in _ONE_KIND else None
    values = column.dropna().to_numpy()  # a numpy array iterates faster than a Series
    types = set(map(type, values))
    if kind == "date":
        # infer_dtype counts a datetime as a date: pyarrow would drop its time.
        return kind if types <= {dt.date} else None
    if not all(issubclass(t, dt.datetime) for t in types):
        return None
    # pyarrow takes a naive datetime beside aware ones, or one whose tzinfo gives no
    # offset, as UTC, where put refuses it. Fixed offsets and IANA zones always give one.
    # By type: a zone need not be hashable (dateutil's are not).
    zones = set(map(type, map(operator.attrgetter("tzinfo"), values)))
    if zones == {type(None)} or all(issubclass(zone, _ZONES_WITH_OFFSETS) for zone in zones):
        return kind
    naive = list(map(operator.methodcaller("utcoffset"), values)).count(None)
    return kind if naive in (0, len(values)) else None


def _exact_in_arrow(dtype: Any, pd: Any) -> bool:
    """Whether pyarrow gives a column of this dtype (not object) its values as they are:
    numpy's dtypes, pandas' nullable numbers and booleans, strings, tz-aware datetimes,
    Arrow-backed columns, and categoricals of these. Other extension dtypes (periods,
    intervals, sparse arrays) are encoded from the Python objects they hold: pyarrow gives
    a period its ordinal and an interval a struct of its bounds."""
    if not isinstance(dtype, pd.api.extensions.ExtensionDtype):
        return True
    if isinstance(dtype, pd.CategoricalDtype):
        categories = dtype.categories
        if categories.dtype == object:
            return _one_kind(pd.Series(categories, dtype=object), pd) is not None
        return _exact_in_arrow(categories.dtype, pd)
    if isinstance(dtype, pd.SparseDtype):
        return False
    return isinstance(
        dtype, pd.StringDtype | pd.DatetimeTZDtype | pd.ArrowDtype | pd.BooleanDtype
    ) or bool(pd.api.types.is_numeric_dtype(dtype))


def _key_array(keys: Any, key_name: str, pd: Any, pa: Any) -> Any:
    """The key column as an Arrow array of one type, or an exception naming the row of the
    first key that cannot be stored or is of another type than the keys before it."""
    array = _to_arrow(keys, pd, pa)
    if array is not None:
        return array
    checked: list[str | bytes | int | None] = []
    first: type | None = None
    for row, value in enumerate(keys.tolist()):
        if pd.api.types.is_scalar(value) and pd.isna(value):
            checked.append(None)  # refused by the core, named by its row
            continue
        key = _key(value, key_name, row)
        first = first or type(key)
        if type(key) is not first:
            _refuse_key(
                TypeError,
                key_name,
                row,
                f"{key!r} is {type(key).__name__} where the keys before "
                f"it are {first.__name__}: a DataFrame's keys are stored as one column, of "
                "one type (put_many takes keys of mixed types)",
            )
        checked.append(key)
    return pa.array(checked)


def _key(value: Any, key_name: str, row: int) -> str | bytes | int:
    """``value`` as the key ``put`` would store it under: a str, bytes or 64-bit int."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError as err:
            _refuse_key(ValueError, key_name, row, f"cannot store this str: {err}")
        return str(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, bool):
        _refuse_key(
            TypeError, key_name, row, "bool is not a valid key type (use int, str or bytes)"
        )
    try:
        number = operator.index(value)
    except TypeError:
        _refuse_key(
            TypeError,
            key_name,
            row,
            f"keys must be str, bytes or int, not {type(value).__name__}",
        )
    if not -(2**63) <= number < 2**63:
        _refuse_key(OverflowError, key_name, row, "int keys must fit in 64 bits")
    return number


def _refuse_key(error: type[Exception], key_name: str, row: int, reason: str) -> NoReturn:
    raise error(f"the key column {key_name!r} at <row {row}>: {reason}")


def frame_from_stream(stream: Any, what: str, key_index: bool = True) -> Any:
    """A DataFrame of an ``ArrowStream`` or a ``ChangeStream``: nullable ints and bools as
    pandas' nullable dtypes, packed columns decoded into Python objects, and the first
    column (the key) as the index if ``key_index``."""
    from . import _core

    pd = require("pandas", "pandas", what)
    pa = require("pyarrow", "pandas", what)
    table = pa.table(stream)
    packed = set(stream.packed_columns)
    plain = table.drop_columns(list(packed))
    frame = plain.to_pandas(
        types_mapper={pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}.get
    )
    for name in plain.column_names:
        column = plain.column(name)
        if column.null_count == 0 and (
            pa.types.is_int64(column.type) or pa.types.is_boolean(column.type)
        ):
            frame[name] = frame[name].to_numpy(
                dtype="int64" if pa.types.is_int64(column.type) else "bool"
            )
    for position, name in enumerate(table.column_names):
        if name in packed:
            values = _core.decode_packed(table.column(name).combine_chunks())
            frame.insert(position, name, pd.Series(values, dtype=object, index=frame.index))
    return frame.set_index(table.column_names[0]) if key_index else frame
