"""Pure-Python helpers of ``Store``: tables as mappings."""

from __future__ import annotations

from collections.abc import (
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from typing import Any

from . import _core
from .exceptions import InheritedHandleError, StoreClosed

Key = str | bytes | int
# What ``dict.update`` takes. Keys are ``Any``: ``Mapping`` is invariant in its key type, so a
# ``dict[str, int]`` would not be a ``Mapping[Key, Any]``; the store checks each key's type.
Rows = Mapping[Any, Any] | Iterable[tuple[Any, Any]]
_MISSING = object()


def _rows(other: Rows, extra: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """The ``(key, value)`` rows of ``dict.update``'s arguments: a mapping (or anything with
    ``keys()``), or an iterable of pairs, then keyword arguments."""
    if isinstance(other, Mapping):
        yield from other.items()
    elif hasattr(other, "keys"):
        # dict.update's rule: an object with keys() is read by key, even if not iterable.
        by_key: Any = other
        yield from ((key, by_key[key]) for key in by_key.keys())  # noqa: SIM118
    else:
        # Unpacked here so that a row that is not a pair fails as in dict.update.
        yield from ((key, value) for key, value in other)
    yield from extra.items()


class Table(MutableMapping[Key, Any]):
    """One table of a store as a mapping: ``[]``, ``in``, ``len``, ``del`` and ordered scans.

    Each ``table[key] = value`` and ``del table[key]`` is its own transaction and pays one
    fsync: a loop of them writes one key per disk flush. ``update()`` writes all its rows
    in one transaction (one fsync); so does ``store.batch()`` for writes to several tables.
    """

    __slots__ = ("name", "store")

    def __init__(self, store: _core.Store, name: str) -> None:
        self.store = store
        self.name = name

    def __getitem__(self, key: Key) -> Any:
        value = self.store.get(self.name, key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Key, value: Any) -> None:
        self.store.put(self.name, key, value)

    def __delitem__(self, key: Key) -> None:
        if not self.store.contains(self.name, key):
            raise KeyError(key)
        self.store.delete(self.name, key)

    def __contains__(self, key: object) -> bool:
        # Whatever a key can be (numpy ints too, as ``table[k]`` takes them) is looked up;
        # anything else is in no table, as ``in`` on a dict answers for a key of no type.
        if isinstance(key, bool):
            return False
        try:
            return self.store.contains(self.name, key)  # type: ignore[arg-type]
        except (TypeError, OverflowError):
            return False

    def __iter__(self) -> Iterator[Key]:
        return (key for key, _ in self.store.scan(self.name))

    def __len__(self) -> int:
        return self.store.count(self.name)

    def __repr__(self) -> str:
        # A repr never raises: a notebook shows a table of a closed store as one.
        try:
            rows = f": {len(self)} rows"
        except (StoreClosed, InheritedHandleError):
            rows = ""
        return f"<Table {self.name!r} of {self.store!r}{rows}>"

    def update(  # type: ignore[override]
        self,
        other: Rows = (),
        /,
        **kwargs: Any,
    ) -> None:
        """Writes every row, as ``dict.update`` takes them, in ONE transaction: one log entry
        and one fsync for all of them (a loop of ``table[k] = v`` pays one fsync per key).
        Nothing is written if a row is refused."""
        self.store.put_many(self.name, _rows(other, kwargs))

    def delete_prefix(self, prefix: str | bytes, *, durability: str | None = None) -> int:
        """Deletes every row whose key starts with ``prefix`` (str or bytes: int keys have no
        prefixes, a ``TypeError``) as ONE transaction and one log entry, which replicates,
        reaches caches and shows in ``changes()`` like any write. Returns how many rows."""
        return self.store.delete_prefix(self.name, prefix, durability=durability)

    def clear(self) -> None:
        """Deletes every row in ONE transaction (one log entry, one fsync), as
        ``store.drop_table`` does: ``MutableMapping``'s own deletes one row per entry."""
        self.store.drop_table(self.name)

    def items(
        self,
        prefix: str | bytes | None = None,
        start: Key | None = None,
        end: Key | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> ItemsView[Key, Any]:
        """``(key, value)`` rows in key order; ``end`` is exclusive. A view, as
        ``dict.items()`` gives (``len``, ``in``, ``==``, set operations), of the rows in
        that range, read again each time it is iterated."""
        return _Items(_Scan(self, prefix, start, end, reverse, limit))

    def keys(
        self,
        prefix: str | bytes | None = None,
        start: Key | None = None,
        end: Key | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> KeysView[Key]:
        """Keys in order; same arguments as ``items``, and a view as it is."""
        return KeysView(_Scan(self, prefix, start, end, reverse, limit))

    def values(
        self,
        prefix: str | bytes | None = None,
        start: Key | None = None,
        end: Key | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> ValuesView[Any]:
        """Values in key order; same arguments as ``items``, and a view as it is."""
        return _Values(_Scan(self, prefix, start, end, reverse, limit))

    def to_arrow_batches(
        self,
        columns: list[str] | None = None,
        prefix: str | bytes | None = None,
        start: Key | None = None,
        end: Key | None = None,
        *,
        key_name: str = "key",
        batch_rows: int = 65_536,
    ) -> _core.ArrowStream:
        """The rows as a stream of Arrow record batches, read at one LSN.

        The stream speaks the Arrow PyCapsule interface: ``pyarrow.table(s)``,
        ``polars.from_arrow(s)`` and ``duckdb.sql("select ... from s")`` read it batch by
        batch, so a table larger than memory can be queried. No pyarrow is needed.
        The key is the first column (``key_name``); each dict field is a column (see the
        README for the type rule). ``columns`` keeps only these value columns, in this
        order (``[]``: the key column alone); naming one twice is a ``ValueError``, and
        so is a field whose name holds a NUL character (Arrow cannot name a column so:
        leave it out with ``columns``). Ctrl-C stops the pass that finds the schema, and
        ``to_arrow``/``to_pandas`` at their next chunk of rows. The rows are read as the
        stream is: if the store is closed first, the reader raises
        an error of its own whose message gives the cause (pyarrow: ``ArrowInvalid:
        External error: ...``), where ``to_arrow`` and ``to_pandas`` raise ``StoreClosed``.
        """
        return self.store.arrow_stream(
            self.name,
            columns=columns,
            prefix=prefix,
            start=start,
            end=end,
            key_name=key_name,
            batch_rows=batch_rows,
        )

    def to_arrow(
        self,
        columns: list[str] | None = None,
        prefix: str | bytes | None = None,
        start: Key | None = None,
        end: Key | None = None,
        *,
        key_name: str = "key",
    ) -> Any:
        """The rows as a ``pyarrow.Table`` (needs ``pip install 'replikv[arrow]'``);
        ``columns`` as in ``to_arrow_batches`` (``[]``: the key column alone)."""
        from ._frames import require

        pa = require("pyarrow", "arrow", "to_arrow")
        return pa.table(self._built(columns, prefix, start, end, key_name))

    def to_pandas(
        self,
        columns: list[str] | None = None,
        prefix: str | bytes | None = None,
        start: Key | None = None,
        end: Key | None = None,
        *,
        key_name: str = "key",
    ) -> Any:
        """The rows as a pandas DataFrame indexed by key (``to_arrow().to_pandas()``, with
        nullable ints and bools kept as such and lists and dicts as Python objects; needs
        ``pip install 'replikv[pandas]'``)."""
        from ._frames import frame_from_stream

        return frame_from_stream(self._built(columns, prefix, start, end, key_name), "to_pandas")

    def _built(
        self,
        columns: list[str] | None,
        prefix: str | bytes | None,
        start: Key | None,
        end: Key | None,
        key_name: str,
    ) -> _core.ArrowStream:
        """Every batch built at once: one pass over the rows when their first 65,536
        predict the schema of the whole scan (a row that does not fit starts it over)."""
        return self.store.arrow_stream(
            self.name,
            columns=columns,
            prefix=prefix,
            start=start,
            end=end,
            key_name=key_name,
            build=True,
        )


class BatchTable:
    """One table inside a ``store.batch()``: writes only, committed with the batch.

    ``view[key] = value``, ``del view[key]`` and ``view.update(mapping)`` add to the batch;
    nothing is read, so ``del`` of an absent key is no error.
    """

    __slots__ = ("batch", "name")

    def __init__(self, batch: _core.Batch, name: str) -> None:
        self.batch = batch
        self.name = name

    def __setitem__(self, key: Key, value: Any) -> None:
        self.batch.put(self.name, key, value)

    def __delitem__(self, key: Key) -> None:
        self.batch.delete(self.name, key)

    def update(
        self,
        other: Rows = (),
        /,
        **kwargs: Any,
    ) -> None:
        """Adds every row, as ``dict.update`` takes them, to the batch: all of them, or none
        if one is refused."""
        self.batch.put_many(self.name, _rows(other, kwargs))

    def __repr__(self) -> str:
        return f"<BatchTable {self.name!r} of {self.batch!r}>"


class _Scan(Mapping[Key, Any]):
    """The rows of a table that a view shows, as a mapping: all of them, or the range that
    ``store.scan`` selects (read again each time it is iterated)."""

    def __init__(
        self,
        table: Table,
        prefix: str | bytes | None,
        start: Key | None,
        end: Key | None,
        reverse: bool,
        limit: int | None,
    ) -> None:
        self.table = table
        self.prefix, self.start, self.end = prefix, start, end
        self.reverse, self.limit = reverse, limit

    @property
    def whole(self) -> bool:
        """The whole table, in any order: ``len``, ``in`` and ``[]`` ask the table."""
        return (self.prefix, self.start, self.end, self.limit) == (None, None, None, None)

    def rows(self) -> Iterator[tuple[Key, Any]]:
        return self.table.store.scan(
            self.table.name,
            prefix=self.prefix,
            start=self.start,
            end=self.end,
            reverse=self.reverse,
            limit=self.limit,
        )

    def __iter__(self) -> Iterator[Key]:
        return (key for key, _ in self.rows())

    def __len__(self) -> int:
        return len(self.table) if self.whole else sum(1 for _ in self.rows())

    def __contains__(self, key: object) -> bool:
        # The table says which objects are keys at all (1.0 and True are not, though they
        # equal 1); a range then holds those of its keys that it scans.
        return key in self.table and (self.whole or any(key == held for held in self))

    def __getitem__(self, key: Key) -> Any:
        # A KeyError for whatever is not in the view, keys of no key type included:
        # ``ItemsView`` asks here and takes only a KeyError for "not in".
        if key not in self:
            raise KeyError(key)
        return self.table[key]


class _Items(ItemsView[Key, Any]):
    """``table.items(...)``: rows read in one scan (``ItemsView``'s own looks each key up)."""

    _mapping: _Scan

    def __iter__(self) -> Iterator[tuple[Key, Any]]:
        return iter(self._mapping.rows())


class _Values(ValuesView[Any]):
    """``table.values(...)``: values read in one scan."""

    _mapping: _Scan

    def __iter__(self) -> Iterator[Any]:
        return (value for _, value in self._mapping.rows())
