"""The Python face of ``Store``: progress bars for bulk loads and tables as mappings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from . import _core

Key = str | bytes | int
_MISSING = object()


class Store(_core.Store):
    """A replikv store: a directory with a durable change log and redb tables.

    Every write is one transaction and one log entry; it returns once it is durable
    (fdatasync'ed, shared between concurrent writers) and visible to readers.

    Args:
        path: the store's directory; created if missing (its parent must exist).
        fsync: make every commit durable. ``False`` is for scratch data only.
        max_key_bytes: largest encoded key.
        max_value_bytes: largest encoded value.
        max_transaction_bytes: largest transaction (one log entry).
        segment_bytes: size at which the log starts a new segment file.
        checkpoint_entries: a durable checkpoint of the tables after this many entries...
        checkpoint_seconds: ...or this many seconds; bounds the replay after a crash.

    Example:
        >>> import replikv, tempfile
        >>> with replikv.Store(tempfile.mkdtemp() + "/db") as store:
        ...     receipt = store.put("subscribers", "ana@example.com", {"opted_in": True})
        ...     store.get("subscribers", "ana@example.com")
        {'opted_in': True}
    """

    def table(self, name: str) -> Table:
        """A view of one table as a ``MutableMapping`` (the table need not exist yet)."""
        return Table(self, name)

    def put_many(
        self,
        table: str,
        rows: Iterable[tuple[Key, Any]] | Mapping[Any, Any],
        progress: bool | Callable[[int], object] | None = None,
    ) -> _core.Receipt:
        """Writes every ``(key, value)`` row in one transaction (one log entry).

        Args:
            table: the table to write.
            rows: an iterable of ``(key, value)`` pairs, or a mapping.
            progress: ``True`` shows a progress bar (tqdm, notebook-aware); a callable is
                called with the number of rows encoded so far.

        Returns:
            The receipt of the single transaction.
        """
        if progress is True:
            return self._put_many_with_bar(table, rows)
        callback = progress if callable(progress) else None
        return super().put_many(table, rows, progress=callback)

    def _put_many_with_bar(
        self, table: str, rows: Iterable[tuple[Key, Any]] | Mapping[Any, Any]
    ) -> _core.Receipt:
        from tqdm.auto import tqdm

        total = len(rows) if isinstance(rows, Mapping | list | tuple) else None
        with tqdm(total=total, desc=f"put_many {table}", unit="rows") as bar:
            last = 0

            def advance(done: int) -> None:
                nonlocal last
                bar.update(done - last)
                last = done

            return super().put_many(table, rows, progress=advance)


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
