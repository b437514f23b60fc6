"""Pure-Python helpers of ``Store``: tables as mappings."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from . import _core

Key = str | bytes | int
_MISSING = object()


class Table(MutableMapping[Key, Any]):
    """One table of a store as a mapping: ``[]``, ``in``, ``len``, ``del`` and ordered scans.

    Writes through the mapping are single-row transactions, like ``Store.put``.
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
        if not isinstance(key, str | bytes | int) or isinstance(key, bool):
            return False
        return self.store.contains(self.name, key)

    def __iter__(self) -> Iterator[Key]:
        return (key for key, _ in self.store.scan(self.name))

    def __len__(self) -> int:
        return self.store.count(self.name)

    def __repr__(self) -> str:
        return f"<Table {self.name!r} of {self.store!r}: {len(self)} rows>"

    def items(  # type: ignore[override]
        self,
        prefix: str | bytes | None = None,
        start: Key | None = None,
        end: Key | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[Key, Any]]:
        """``(key, value)`` rows in key order; ``end`` is exclusive."""
        return self.store.scan(
            self.name, prefix=prefix, start=start, end=end, reverse=reverse, limit=limit
        )

    def keys(  # type: ignore[override]
        self,
        prefix: str | bytes | None = None,
        start: Key | None = None,
        end: Key | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[Key]:
        """Keys in order; same arguments as ``items``."""
        return (k for k, _ in self.items(prefix, start, end, reverse, limit))

    def values(  # type: ignore[override]
        self,
        prefix: str | bytes | None = None,
        start: Key | None = None,
        end: Key | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[Any]:
        """Values in key order; same arguments as ``items``."""
        return (v for _, v in self.items(prefix, start, end, reverse, limit))

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
        README for the type rule).
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
        """The rows as a ``pyarrow.Table`` (needs ``pip install 'replikv[arrow]'``)."""
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
