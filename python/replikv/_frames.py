"""pandas and pyarrow glue for the analysts' path (both are optional extras).

DataFrames go to Arrow column by column in pandas' and pyarrow's own code, and Arrow comes
back to pandas the same way; replikv's Rust core does the rest. No function here loops
over rows.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Arrow types stored cell by cell from Arrow buffers; other object columns (dicts, and
#: lists of dicts, which Arrow would turn into structs that give every dict every key)
#: are encoded from their Python objects.
_STRUCTLESS = (
    "null",
    "bool",
    "int",
    "uint",
    "float",
    "halffloat",
    "double",
    "string",
    "large_string",
    "binary",
    "large_binary",
    "timestamp",
    "date32",
    "date64",
    "decimal",
)


def require(module: str, extra: str, what: str) -> Any:
    """Imports an optional dependency, or raises an ImportError that names the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{what} needs {module}, which is not installed: pip install 'replikv[{extra}]'"
        ) from err


def _structless(data_type: Any, pa: Any) -> bool:
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return _structless(data_type.value_type, pa)
    return str(data_type).startswith(_STRUCTLESS)


def dataframe_columns(
    df: Any, key: str | None
) -> tuple[Any, str, list[tuple[str, list[Any]]], list[str]]:
    """Splits a DataFrame for ``Store.put_dataframe``.

    Returns an Arrow table of the key and every column Arrow can hold without structs, the
    other columns as lists of Python objects, the key column's name and the value columns'
    order.
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
        keys = df.index.to_series()
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
    arrays = [pa.Array.from_pandas(keys)]
    objects: list[tuple[str, list[Any]]] = []
    for name in names:
        column = df[name]
        array = _to_arrow(column, pa)
        if array is None:
            objects.append((name, column.tolist()))
        else:
            arrow_names.append(name)
            arrays.append(array)
    return pa.Table.from_arrays(arrays, names=arrow_names), key_name, objects, names


def _to_arrow(column: Any, pa: Any) -> Any:
    """The column as an Arrow array, or None if it must be stored from its Python objects."""
    if column.dtype != object:
        return pa.Array.from_pandas(column)
    try:
        array = pa.Array.from_pandas(column)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    return array if _structless(array.type, pa) else None


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
