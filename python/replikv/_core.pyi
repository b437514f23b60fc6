"""Type stubs for the native module ``replikv._core`` (checked by ``mypy.stubtest``)."""

import datetime
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, ParamSpec, SupportsIndex, TypeVar, final, overload

from typing_extensions import Self

from replikv._store import BatchTable, Table

__version__: str
__all__ = [
    "ArrowStream",
    "Batch",
    "Cache",
    "CacheNode",
    "CacheNodeStats",
    "CacheStats",
    "Change",
    "ChangeStream",
    "Changes",
    "Checksum",
    "Damage",
    "LogTail",
    "Op",
    "Ops",
    "OpsIterator",
    "Primary",
    "PrimaryStatus",
    "Promotion",
    "Receipt",
    "Replica",
    "ReplicaInfo",
    "ReplicaStatus",
    "ReplicaVerify",
    "Scan",
    "ScrubReport",
    "Slot",
    "Store",
    "StoreStats",
    "Switchover",
    "Transaction",
    "VerifyReport",
    "__version__",
    "_forward_logs",
    "_stop_logs",
    "decode_packed",
    "decode_value",
    "encode_value",
    "fetch_status",
    "fetch_verify",
    "promote_stopped",
    "read_diverged_report",
    "request_drop_slot",
    "request_follow",
    "request_switchover",
]

_Key = str | bytes | int
# What a key argument takes: numpy ints too (any int with ``__index__``), taken as ints.
_KeyArg = str | bytes | int | SupportsIndex
_P = ParamSpec("_P")
_R = TypeVar("_R")

@final
class Receipt:
    """What a write returns: its LSN, how durable it is (`durability`: "local" when no primary
    serves the store, "async" or "sync"), the replicas that acknowledged a sync write, and
    whether a sync write degraded (its quorum was not reached in time, or the wait was
    interrupted).
    """

    @property
    def lsn(self) -> int:
        """The write's log sequence number: its transaction's entry in the change log. A
        transaction or batch that wrote nothing takes none: its ``lsn`` is the last LSN
        committed before it (what a replica's ``wait_for`` needs to show what it read).
        """
    @property
    def durability(self) -> str:
        """``'local'`` (no primary serves the store), ``'async'`` or ``'sync'``."""
    @property
    def acked_by(self) -> list[str]:
        """Names of the replicas that held a sync write durably when the call returned."""
    @property
    def degraded(self) -> bool:
        """True if a sync write returned without its quorum: ``sync_timeout`` passed with
        ``on_timeout="degrade"``, or its wait was interrupted (Ctrl-C)."""
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    __hash__: None  # type: ignore[assignment]

@final
class Op:
    """One operation of a change: a put or a delete."""

    @property
    def kind(self) -> str:
        """``'put'`` or ``'delete'``."""
    @property
    def table(self) -> str:
        """The table the op writes."""
    @property
    def key(self) -> _Key:
        """The key it writes, as the type it was written as."""
    @property
    def value(self) -> Any:
        """The value written (``None`` for a delete)."""
    def __eq__(self, other: object, /) -> bool: ...
    __hash__: None  # type: ignore[assignment]

@final
class Change:
    """One committed transaction, read back from the change log."""

    @property
    def lsn(self) -> int:
        """The entry's log sequence number."""
    @property
    def epoch(self) -> int:
        """The epoch of the primary that committed it."""
    @property
    def timestamp(self) -> datetime.datetime:
        """Commit time, an aware UTC datetime (millisecond precision)."""
    @property
    def ops(self) -> Ops:
        """Its ops, a read-only sequence that decodes each op when it is used."""

@final
class Ops:
    """The ops of a :class:`Change`: ``len``, indexing (slices give a list), iteration.

    It holds the entry's stored bytes and decodes one op at a time, so iterating a
    million-op entry never holds a million ``Op`` objects. Equal to a list of the same ops.
    """

    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: SupportsIndex, /) -> Op: ...
    @overload
    def __getitem__(self, index: slice, /) -> list[Op]: ...
    def __iter__(self) -> OpsIterator: ...
    def __eq__(self, other: object, /) -> bool: ...

@final
class OpsIterator:
    """An iterator over the ops of a change, decoding one at a time."""

    def __iter__(self) -> OpsIterator: ...
    def __next__(self) -> Op: ...

@final
class Checksum:
    """Per-table checksums and row counts of a store at one LSN."""

    @property
    def lsn(self) -> int:
        """The LSN of the state that was summed."""
    @property
    def tables(self) -> dict[str, int]:
        """Order-independent checksum of each table's rows."""
    @property
    def rows(self) -> dict[str, int]:
        """Row count of each table."""
    def __eq__(self, other: object, /) -> bool: ...
    __hash__: None  # type: ignore[assignment]

@final
class StoreStats:
    """Rows per table and bytes on disk of a store, from :meth:`Store.stats`.

    Sizes are allocated bytes (``st_blocks * 512``, as ``du`` counts them), not apparent
    lengths: log segments are preallocated. They add up to every file in the directory.
    """

    @property
    def path(self) -> str:
        """The store's directory."""
    @property
    def tables(self) -> dict[str, int]:
        """Row count of each table."""
    @property
    def log_bytes(self) -> int:
        """Bytes of the log's segment files."""
    @property
    def tables_bytes(self) -> int:
        """Bytes of the tables file."""
    @property
    def other_bytes(self) -> int:
        """Bytes of every other file (lock, replication slots, staging areas)."""
    @property
    def total_bytes(self) -> int:
        """``log_bytes + tables_bytes + other_bytes``."""
    @property
    def oldest_lsn(self) -> int:
        """The oldest LSN the log retains."""
    @property
    def oldest_time(self) -> datetime.datetime | None:
        """Commit time of that entry (aware UTC), ``None`` if the log holds no entry."""
    @property
    def last_lsn(self) -> int:
        """The last LSN readers see (durable; on a replica, its own fdatasync may follow)."""
    def to_dict(self) -> dict[str, Any]:
        """The stats as a plain dict of JSON-able values (`oldest_time` in ISO 8601), for
        logging, JSON or a row of a data frame.
        """
    def _repr_html_(self) -> str:
        """An HTML table of it, for Jupyter."""

@final
class Scan:
    """An iterator of ``(key, value)`` rows in key order."""

    def __iter__(self) -> Scan: ...
    def __next__(self) -> tuple[_Key, Any]: ...

@final
class Changes:
    """An iterator of :class:`Change` entries, oldest first, read lazily.

    Its LSN range is fixed when ``Store.changes`` is called (up to the LSN visible then);
    entries committed later are read by a new ``changes(since=...)``.
    """

    def __iter__(self) -> Changes: ...
    def __next__(self) -> Change: ...
    def to_arrow_batches(self) -> ChangeStream:
        """The entries as Arrow record batches, one row per op; no pyarrow needed.

        Covers the whole range of the call, whatever iteration has consumed. Columns:
        ``lsn`` and ``epoch`` (uint64), ``timestamp`` (timestamp[us, UTC], the commit
        time), ``table`` (string), ``key`` (string, int64 or binary when all keys have that
        type, else packed MessagePack), ``op`` (``'put'`` or ``'delete'``), ``value``
        (packed MessagePack, null for a delete).

        The entries are read as the stream is: if retention drops them first, or the store
        is closed, the reader (pyarrow, polars, DuckDB) raises an error of its own whose
        message gives the cause (pyarrow: ``ArrowInvalid: External error: log entries
        after LSN ... are no longer retained``). ``to_arrow()`` and ``to_pandas()`` raise
        replikv's exception instead.
        """
    def to_arrow(self) -> Any:
        """The entries as a ``pyarrow.Table``, one row per op (see ``to_arrow_batches``).

        Raises:
            ImportError: pyarrow is not installed (``pip install 'replikv[arrow]'``).
            LogTruncated: retention dropped entries of the range before they were read.
            StoreClosed: the store was closed before they were read.
        """
    def to_pandas(self) -> Any:
        """The entries as a pandas DataFrame, one row per op, values decoded into Python
        objects (``None`` for deletes).

        Raises:
            ImportError: pandas is not installed (``pip install 'replikv[pandas]'``).
            LogTruncated: retention dropped entries of the range before they were read.
            StoreClosed: the store was closed before they were read.
        """

@final
class LogTail:
    """The change log of a store directory, read without opening the store.

    It takes no lock and writes nothing in the directory, so it reads a store that another
    process holds and writes. It hands out only durable entries, in LSN order, each once:
    it stops before a record still being written and syncs what it read before handing it
    out. Used by ``replikv changes``.

    Args:
        path: The store's directory.
        since: Entries after this LSN.
        tables: Only ops of these tables; entries with none are skipped (``None``: all).

    Raises:
        LogTruncated: Entries after ``since`` are no longer retained.
        OSError: The store's log directory cannot be read.
    """

    def __new__(
        cls, path: str | os.PathLike[str], since: int = 0, tables: list[str] | None = None
    ) -> Self: ...
    @property
    def next_lsn(self) -> int:
        """The LSN of the next entry it will read."""
    def read(self, limit: int | None = None) -> list[Change]:
        """The next entries that are durable in the log now, oldest first, without waiting.

        Args:
            limit: At most this many (``None``: up to 256 at a time).

        Returns:
            A list of :class:`Change`; empty when no further entry is durable yet.

        Raises:
            LogTruncated: Retention removed the next entries, or a snapshot replaced the log.
            CorruptionError: A gap in the log's LSNs.
        """

@final
class Transaction:
    """A serializable transaction: commits on a clean ``with`` exit, aborts on an exception.

    It holds the store's writer lock from its first use until it ends; its reads see its
    own pending writes. A ``KeyboardInterrupt`` that escapes the ``with`` block from its
    commit comes after the commit point: it carries ``.receipt``, as does the transaction.
    """

    def __enter__(self) -> Transaction: ...
    def __exit__(self, exc_type: object, _exc: object = None, _tb: object = None) -> bool: ...
    def put(self, table: str, key: _KeyArg, value: Any) -> None:
        """Writes ``value`` under ``key`` when the transaction commits."""
    def delete(self, table: str, key: _KeyArg) -> None:
        """Deletes ``key`` when the transaction commits."""
    def get(self, table: str, key: _KeyArg, default: Any = None) -> Any:
        """Reads ``key``, seeing this transaction's own writes first."""
    def commit(self) -> Receipt:
        """Commits now (the context manager does this on a clean exit).

        A Ctrl-C during the commit (a large one takes seconds) does not stop it: the
        ``KeyboardInterrupt`` raised once it is committed carries the receipt as
        ``.receipt`` and a note saying so.
        """
    def abort(self) -> None:
        """Discards every write of the transaction and releases the writer lock."""
    @property
    def receipt(self) -> Receipt | None:
        """The receipt once committed, else ``None``."""

@final
class Batch:
    """Writes collected in memory, committed as one transaction (one log entry, one fsync)
    when the ``with`` block ends; nothing is written if the block raises. Made by
    :meth:`Store.batch`."""

    def __enter__(self) -> Self: ...
    def __exit__(self, exc_type: object, _exc: object = None, _tb: object = None) -> bool: ...
    def put(self, table: str, key: _KeyArg, value: Any) -> None:
        """Writes ``value`` under ``key`` when the batch commits. The value is encoded now
        (a bad one raises here; later changes to the object are not seen)."""
    def put_many(self, table: str, rows: Iterable[tuple[_KeyArg, Any]]) -> None:
        """Writes every ``(key, value)`` of ``rows`` when the batch commits: all of them, or,
        if one is refused (a bad key or value raises here), none.
        """
    def delete(self, table: str, key: _KeyArg) -> None:
        """Deletes ``key`` when the batch commits."""
    def table(self, name: str) -> BatchTable:
        """A write-only view of one table for this batch: ``view[key] = value``,
        ``del view[key]``, ``view.update(mapping)``."""
    def commit(self) -> Receipt:
        """Commits the writes collected so far as one transaction (the `with` block does this
        on a clean exit). A batch without writes takes no LSN: its receipt's ``lsn`` is
        the last one committed before it, which names no entry of its own.
        """
    def discard(self) -> None:
        """Drops the writes collected so far and ends the batch: a later ``put``,
        ``put_many``, ``delete`` or ``commit`` raises ``RuntimeError`` (start a new batch
        with :meth:`Store.batch`), and a ``with`` block that ends cleanly after it writes
        nothing. The ``with`` block discards when it raises.
        """
    @property
    def receipt(self) -> Receipt | None:
        """The receipt once committed, else ``None``."""
    def __len__(self) -> int:
        """The number of writes collected and not yet committed."""

@final
class Store:
    """A replikv store: a directory with a durable change log and redb tables.

    The directory (and its parents) is created if missing. An existing directory that
    holds other files and none of a store's (a project folder given by mistake) raises
    ``NotAStoreError`` (a ``FileExistsError``) naming one of them, and nothing is written
    there; an empty one (or one of dotfiles and a volume's ``lost+found`` only) becomes a
    store.

    Args:
        segment_bytes: the largest log segment. Segments start at 1 MiB and double up to
            it (and to a quarter of ``retain_bytes``), so an empty store is small on disk.
        retain_bytes: keep about this many bytes of log at most (64 MiB by default):
            older whole segments are dropped in the background once the tables' durable
            checkpoint covers them. ``None`` keeps the whole log.
        retain_seconds: drop log segments whose entries are all older than this (a week
            by default). ``None``: no age limit. ``changes()`` below the retained log
            raises ``LogTruncated``; a replica that falls behind it is re-seeded.
        cache_bytes: the bound of the tables' page cache (128 MiB by default).

    Opening a directory this process already has open (re-running a notebook cell) returns
    another handle to the same open store, if the options are equal; other options raise
    ``StoreOptionsError`` naming the option and both values. Each handle is closed by its
    own ``close()`` (or ``with`` block): later use of that handle raises ``StoreClosed``,
    while the other handles work on. The store is flushed and its directory released when
    its last handle is closed or garbage-collected. A directory a ``Replica`` of this
    process holds raises ``StoreLockedError`` saying so; another process gets
    ``StoreLockedError`` naming the owner's pid and command line.
    """

    def __new__(
        cls,
        path: str | os.PathLike[str],
        *,
        fsync: bool = True,
        max_key_bytes: int = 4096,
        max_value_bytes: int = 16777216,
        max_transaction_bytes: int = 268435456,
        segment_bytes: int = 67108864,
        checkpoint_entries: int = 10000,
        checkpoint_seconds: float = 5.0,
        retain_bytes: int | None = 67108864,
        retain_seconds: float | None = 604800.0,
        cache_bytes: int = 134217728,
    ) -> Self: ...
    @property
    def path(self) -> pathlib.Path:
        """The store's directory."""
    @property
    def last_lsn(self) -> int:
        """The last LSN readers see. On a primary's store it is durable; a replica's store
        applies the entries it is sent before its own fdatasync (they are durable on the
        primary), which follows within milliseconds.
        """
    @property
    def epoch(self) -> int:
        """The highest epoch the store has seen (promotions raise it; a store that has seen
        a newer epoch than its own entries carry is deposed and refuses writes)."""
    @property
    def epoch_history(self) -> list[tuple[int, int]]:
        """The epochs its log went through: ``(epoch, start_lsn)`` pairs, oldest first."""
    @property
    def closed(self) -> bool:
        """Whether this handle (or the store, after a fatal failure) is closed."""
    def put(
        self, table: str, key: _KeyArg, value: Any, *, durability: str | None = None
    ) -> Receipt:
        """Writes ``value`` under ``key``; returns once durable and visible.

        Args:
            table: the table to write.
            key: the key.
            value: the value.
            durability: ``"async"``, ``"sync"`` (returns once ``quorum`` replicas of the
                serving ``Primary`` hold the write durably) or ``None`` (the default of
                the table, set by the ``Primary``).

        A Ctrl-C during the commit, or while a sync write waits for its replicas, raises
        ``KeyboardInterrupt`` carrying the receipt as ``.receipt`` and a note: the write
        is committed locally.

        Raises:
            TypeError: a key or value of an unsupported type (a value's refusal names the
                row and the field: ``events[165260]['at']: naive datetime ...``).
            OverflowError: an int outside 64 bits.
            ValueTooLarge: a key or value over its limit.
            StoreClosed: the store is closed.
            ReplicationError: a sync write that no ``Primary`` serves, or with fewer
                replicas that fsync than the quorum (refused: nothing is written); or
                whose ``Primary`` stopped while it waited (committed locally: ``.lsn`` and
                ``.acked_by`` say where it stands).
            ReplicationTimeout: a sync write not acknowledged within ``sync_timeout``
                (committed locally; ``.lsn`` and ``.acked_by`` say where it stands).
        """
    def delete(self, table: str, key: _KeyArg, *, durability: str | None = None) -> Receipt:
        """Deletes `key` (a no-op on the data if it is absent, still one logged transaction)."""
    def get(self, table: str, key: _KeyArg, default: Any = None) -> Any:
        """The value under ``key``, or ``default``."""
    def contains(self, table: str, key: _KeyArg) -> bool:
        """Whether ``key`` exists in ``table`` (the value is not read, so not checked)."""
    def count(self, table: str) -> int:
        """Number of rows in ``table`` (0 for a table never written)."""
    def put_many(
        self,
        table: str,
        rows: Iterable[tuple[_KeyArg, Any]] | Mapping[Any, Any],
        progress: bool | Callable[[int], object] | None = None,
        *,
        durability: str | None = None,
    ) -> Receipt:
        """Writes every ``(key, value)`` row in one transaction (one log entry). A key given
        twice is stored once, with its later row's value (each row is an op of the entry,
        so ``changes()`` shows both).

        Args:
            table: the table to write.
            rows: an iterable of ``(key, value)`` tuples, or a mapping.
            progress: ``True`` shows a progress bar (a widget in Jupyter, one line in a
                terminal; its total is ``len(rows)`` when ``rows`` has one); a callable
                is called with the number of rows encoded so far.
            durability: as for ``put``.

        Ctrl-C while the rows are read and encoded raises ``KeyboardInterrupt`` with
        nothing written. Once the last row is read the write goes on to commit whatever
        happens (a generator's rows are then built into the log record, about 0.2 s per
        million rows, before its commit point): an exception raised from then on (Ctrl-C
        during the commit, a failing progress callback) carries the receipt as
        ``.receipt`` and a note saying so.

        Rows with a length (a list, a dict) past 4,096 stream: each chunk of rows goes
        into the tables' open transaction on a thread of its own while the next rows are
        encoded. It stays one transaction, invisible until it commits; from its first chunk
        it holds the writer lock, so other threads' writes wait for it. A generator's rows
        are all read first (its source may be slow), then committed.

        Raises:
            ValueTooLarge: the rows exceed ``max_transaction_bytes``; raised at the row
                that crosses it, before the rest are read.
            RuntimeError: the rows of a streamed load (see above) or its progress
                callback write to this store or close it. A generator's rows are read
                whole first: what it writes commits before them.
        """
    def delete_prefix(
        self, table: str, prefix: str | bytes, *, durability: str | None = None
    ) -> int:
        """Deletes every row of ``table`` whose key starts with ``prefix`` as one transaction
        (one log entry, one fsync); returns how many rows. A prefix that matches no row
        writes no entry and takes no LSN.

        The entry holds a delete per key, so replicas, cache nodes and ``changes()`` see it
        like any write (a very large prefix can exceed ``max_transaction_bytes``: then
        ``ValueTooLarge`` is raised and nothing is deleted). Writers wait while the rows
        are read. Ctrl-C does not stop it once it has the writer lock: the
        ``KeyboardInterrupt`` raised when the rows are deleted carries the receipt as
        ``.receipt`` and a note saying so.

        Raises:
            TypeError: ``prefix`` is not str or bytes (int keys have no prefixes).
            ValueError: an empty prefix (use :meth:`drop_table`), or a bad table name.
        """
    def drop_table(self, name: str, *, durability: str | None = None) -> int:
        """Deletes the whole table as one transaction (one log entry), like
        :meth:`delete_prefix` (Ctrl-C included); it is then no longer listed by
        :meth:`tables`. Returns how many rows it held: 0 for a table that does not exist
        (dropping is idempotent), which writes no entry and takes no LSN.

        Raises:
            ValueError: a bad table name.
        """
    def table(self, name: str) -> Table:
        """A view of one table as a mutable mapping (the table need not exist yet)."""
    def transaction(self, *, durability: str | None = None) -> Transaction:
        """A serializable transaction; use it as a context manager.

        ``durability`` applies to its commit, as for ``put``: ``None`` makes it sync if
        any table it writes is sync by default.

        From its first operation until it commits or aborts it holds the store's writer
        lock: other writers wait. One collected without commit or abort emits a
        ``ResourceWarning`` naming where it was opened.
        """
    def batch(self, *, durability: str | None = None) -> Batch:
        """Writes collected in memory and committed as ONE transaction (one log entry, one
        fsync) when the ``with`` block ends; nothing is written if the block raises::

            with store.batch() as b:
                b.put("subscribers", "ana@example.com", {"name": "Ana"})
                b.table("events")["e1"] = {"kind": "open"}
            b.receipt.lsn

        Unlike :meth:`transaction` it holds no lock while the block runs and cannot read.
        A loop of ``put`` calls pays one fsync per write; a batch pays one.
        """
    def tables(self) -> list[str]:
        """Names of the tables that hold rows, in order (a dropped table, or one whose
        rows were all deleted, is not listed)."""
    def scan(
        self,
        table: str,
        *,
        prefix: str | bytes | None = None,
        start: _KeyArg | None = None,
        end: _KeyArg | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Scan:
        """Rows of ``table`` in key order (ints, then str, then bytes); ``end`` is exclusive."""
    def arrow_stream(
        self,
        table: str,
        *,
        columns: list[str] | None = None,
        prefix: str | bytes | None = None,
        start: _KeyArg | None = None,
        end: _KeyArg | None = None,
        key_name: str = "key",
        batch_rows: int = 65536,
        build: bool = False,
    ) -> ArrowStream:
        """The rows of ``table`` as Arrow record batches read at one LSN (``Table.to_arrow``).

        By default batches are built as they are read (a first pass finds the schema);
        ``build=True`` builds them all now, in one pass when the first 65,536 rows predict
        the schema of the whole scan (``Table.to_arrow`` and ``Table.to_pandas`` do).
        ``columns`` names the value columns, in order (``[]``: the key column only).

        Raises:
            ValueError: a value column has the key column's name, ``columns`` names a
                column twice, or ``batch_rows`` is 0.
        """
    def put_arrow(
        self,
        table: str,
        data: Any,
        *,
        key: str,
        naive: str = "refuse",
        batch_rows: int | None = None,
        progress: bool | Callable[[int], object] | None = None,
        durability: str | None = None,
    ) -> Receipt:
        """Writes the rows of Arrow data (anything with ``__arrow_c_stream__``), keyed by the
        column ``key``, converted column by column in Rust.

        One transaction, or one per ``batch_rows`` rows (then the receipt is the last one's).
        Rows with the same key: the later row wins, silently.
        ``naive="utc"`` takes timestamps without a time zone as UTC; by default they are
        refused. ``progress=True`` shows a bar whose total is the data's ``num_rows`` (or
        ``len()``) when it has one; a callable is called with the rows written so far.

        A key column that ``to_arrow`` packed (keys of mixed types) gives the int, str or
        bytes keys it holds. A refused column or cell writes nothing (with ``batch_rows``,
        the transactions before the refused row stay).

        Raises:
            TypeError: a cell of a type that cannot be stored (the message names its key and
                field).
            OverflowError: a number out of range (named the same way).
            ValueError: two columns share a name, a value nests deeper than 128 levels
                (named the same way), or a column's name, as a pyarrow, polars or pandas
                source shows it, holds a NUL character (Arrow's C interface would cut it
                short there; a source that shows no names is read as the interface gives
                them).
        """
    def put_dataframe(
        self,
        table: str,
        df: Any,
        *,
        key: str | None = None,
        naive: str = "refuse",
        batch_rows: int | None = None,
        progress: bool | Callable[[int], object] | None = None,
        durability: str | None = None,
    ) -> Receipt:
        """Writes the rows of a pandas DataFrame keyed by the column ``key`` (the index if
        None); the other columns become each row's dict. A cell that is NaN, None, ``pd.NA``
        or ``pd.NaT`` is stored as None (a NaN inside a list or dict cell stays NaN); a numpy
        array in a cell (a parquet list column) as a list. Rows with the same key: the later
        row wins, silently. Needs ``pip install 'replikv[pandas]'``. ``progress=True``
        shows a bar out of the frame's rows; a callable is called with the rows so far.

        Raises:
            ImportError: pandas or pyarrow is not installed.
            TypeError: a cell of a type that cannot be stored, or a naive datetime (the
                message names its key and field); a key of another type than the keys
                before it (the message names its row and the key column).
            OverflowError: a number out of range (named the same way).
            ValueError: two columns share a name, a value nests deeper than 128 levels, or
                a str cannot be stored (named the same way).
        """
    def changes(
        self,
        since: SupportsIndex = 0,
        limit: SupportsIndex | None = None,
        *,
        tables: Sequence[str] | None = None,
        since_time: datetime.datetime | None = None,
        until: datetime.datetime | SupportsIndex | None = None,
    ) -> Changes:
        """Entries of the change log with LSN greater than ``since``, read lazily.

        Args:
            since: entries after this LSN.
            limit: at most this many entries (after filtering).
            tables: only ops of these tables; an entry with none of them is skipped.
            since_time: only entries committed at or after this aware datetime, compared at
                the millisecond commit times are kept to (a write made just after it, in
                the same millisecond, is kept).
            until: an aware datetime (entries committed before its millisecond, so that
                ``until=t`` and ``since_time=t`` split the log with no overlap) or an LSN
                (entries up to and including it, so that ``changes(since=a, until=b)`` and
                ``changes(since=b)`` do).

        Raises:
            LogTruncated: ``since`` is older than the retained log (unless ``since_time`` is
                later than the oldest retained entry's commit: the dropped entries, all
                committed no later, could not match).
            TypeError: a naive datetime, or ``until`` neither a datetime nor an int.
        """
    @property
    def oldest_lsn(self) -> int:
        """The oldest LSN the change log still holds (``changes(since=oldest_lsn - 1)``)."""
    def drop_log_before(self, lsn: SupportsIndex) -> int:
        """Removes whole log segments that hold only entries before ``lsn``.

        Never removes what the tables have not durably checkpointed; the store checkpoints
        first. Returns how many segments were removed. Readers asking for older entries
        get ``LogTruncated``.
        """
    def checksum(self) -> Checksum:
        """Per-table checksums and row counts at one LSN, read atomically (O(tables))."""
    def stats(self) -> StoreStats:
        """Rows per table and bytes on disk (log, tables, other files), the oldest retained
        LSN and its commit time, and the last LSN.
        """
    def compact(self) -> int:
        """Checkpoints, drops the log the retention policy lets go (and removes the
        dropped segments before it returns, where they are otherwise cut down gently in
        the background), then gives the free pages of the tables file back to the file
        system (after deletes and updates); returns the bytes reclaimed from the tables
        file.

        Writers wait while it runs; readers wait only while it runs and never get an error
        or a partial state. A long read holds the tables: an `ArrowStream` from
        `to_arrow_batches()` (until it is deleted), a snapshot sent to a replica, a scrub.
        Compaction then retries, and writers run between its attempts.

        Raises:
            ReplikvError: long reads kept the tables busy for a minute; nothing was
                changed.
            KeyboardInterrupt: Ctrl-C while it waits for another thread's transaction to
                end, or between its attempts: the tables file was not compacted.
        """
    def _repr_html_(self) -> str:
        """An HTML table of its tables, rows, LSN and disk use (or that it is closed), for
        Jupyter."""
    def close(self) -> None:
        """Closes this handle: its later use raises ``StoreClosed``, and the transactions
        opened through it that have not ended are aborted (their writer lock is released
        at once). A write another thread made through it that was already committing
        when ``close()`` was called may still commit and return its receipt (the other
        handles' writes never fail for it). With the last handle the store is flushed,
        checkpointed and every file released; closing twice is harmless.

        Raises:
            ReplicationError: this is the last handle of a store that a ``Primary`` serves
                (close the ``Primary`` first) or that a ``Replica`` follows into (close the
                ``Replica``, which closes its store): the store stays open.
        """
    def __enter__(self) -> Self: ...
    def __exit__(self, *_exc: object) -> bool: ...
    @property
    def read_only(self) -> bool:
        """Whether writes are refused: the store belongs to a replica (see :meth:`detach`)."""
    def scrub(self, *, progress: bool | Callable[[int], object] | None = None) -> ScrubReport:
        """Checks every stored row's CRC, that a lookup of its key finds it (as a read
        would), and each table's rows against its recorded stats.

        Pending writes move into the tables first; the check then runs on a read snapshot,
        so writers are not held while it reads.

        Args:
            progress: ``True`` shows a progress bar; a callable is called with the number
                of rows checked so far.

        Returns:
            A :class:`ScrubReport`; ``report.ok`` is false if anything is damaged. To
            recover a damaged store, re-seed it from a replica (see the README).

        Raises:
            KeyboardInterrupt: Ctrl-C stops the scrub (so does an exception raised by the
                progress callback).
        """
    @staticmethod
    def detach(path: str | os.PathLike[str]) -> bool:
        """Makes a replica's store at ``path`` a standalone, writable store that can never
        follow its primary again. Returns False if it was not a replica's store.

        Raises:
            StoreLockedError: the store is open, in this process or another: a ``Replica``
                runs on the directory (stop it first), or a ``Store`` handle holds it.
            StoreNotFoundError: there is no store at ``path``.
        """

@final
class ReplicaInfo:
    """One replica as the primary sees it."""

    @property
    def name(self) -> str:
        """The replica's name (its slot's name)."""
    @property
    def address(self) -> str:
        """The address it connected from."""
    @property
    def state(self) -> str:
        """``'snapshot'``, ``'catching_up'``, ``'streaming'`` or ``'disconnected'``."""
    @property
    def sent_lsn(self) -> int:
        """The last LSN shipped to it."""
    @property
    def acked_lsn(self) -> int:
        """The last LSN the replica reported durable."""
    @property
    def lag_lsn(self) -> int:
        """Entries the primary committed that it has not acknowledged."""
    @property
    def lag_bytes(self) -> int:
        """Bytes shipped but not yet acknowledged."""
    @property
    def lag_seconds(self) -> float:
        """Age of its oldest missing entry, on the primary's clock."""
    @property
    def last_seen(self) -> datetime.datetime | None:
        """When the primary last heard from it (an aware UTC datetime), or ``None`` if it has
        not heard from it since it started (a replica it knows from its slot only), or if
        the report names a time no datetime holds (past year 9999: a primary's broken
        clock, or a damaged report).
        """
    @property
    def sync_state(self) -> str:
        """``'quorum'`` if its acks count toward sync writes (a replica that fsyncs),
        ``'async'`` if they never do (``fsync=False``, or a consumer), ``'joining'`` for a
        replica that fsyncs and registered while this primary ran: its acks count once
        every replica that fsyncs has recorded that it joined."""
    @property
    def kind(self) -> str:
        """``'replica'``, or ``'consumer'`` for a peer that keeps no copy of the data (a
        cache node, a change-feed reader): it never counts toward the quorum."""
    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able values (``last_seen`` in ISO 8601, or ``None``)."""
    def _repr_html_(self) -> str:
        """An HTML table of it, for Jupyter."""

@final
class PrimaryStatus:
    """A primary's status, from :meth:`Primary.status` or :func:`fetch_status`: its
    position, whether sync writes can complete, and every replica seen since start.
    Iterating over it (or ``len()``) goes over ``replicas``."""

    @property
    def address(self) -> str:
        """The primary's ``host:port``."""
    @property
    def last_lsn(self) -> int:
        """The last LSN the primary committed."""
    @property
    def epoch(self) -> int:
        """The primary's epoch."""
    @property
    def sync_state(self) -> str:
        """``'ok'``, ``'degraded'`` or ``'unavailable'``, as :attr:`Primary.sync_state`."""
    @property
    def rejected(self) -> int:
        """Connections refused since start."""
    @property
    def last_rejection(self) -> str | None:
        """Why the last connection was refused, if one was."""
    @property
    def replicas(self) -> list[ReplicaInfo]:
        """Every replica seen since start, with its state and lag."""
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[ReplicaInfo]: ...
    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able values, each replica as its own `to_dict()`."""
    def _repr_html_(self) -> str:
        """An HTML table of it, for Jupyter."""

@final
class Slot:
    """A durable slot, from :meth:`Primary.slots`: the log is kept for this replica from
    ``acked_lsn`` on (a slot outlives its connection and the primary's restarts)."""

    @property
    def name(self) -> str:
        """The replica's name."""
    @property
    def acked_lsn(self) -> int:
        """The last LSN the replica acknowledged as durable: the log is kept from there."""
    @property
    def created(self) -> datetime.datetime:
        """When the slot was created (aware UTC)."""
    @property
    def fsync(self) -> bool:
        """Whether the replica said it fsyncs (only then does it count toward a quorum)."""
    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able values (``created`` in ISO 8601)."""
    def _repr_html_(self) -> str:
        """An HTML table of it, for Jupyter."""

@final
class ReplicaStatus:
    """A replica's status: its link to the primary, its position and lag, and what it did
    about a fork.
    """

    @property
    def name(self) -> str:
        """Its name on the primary."""
    @property
    def primary(self) -> str:
        """The primary's address it follows; once it is promoted (or handed over to), the
        address its own store serves at as the primary.
        """
    @property
    def state(self) -> str:
        """``'connecting'``, ``'snapshot'``, ``'catching_up'``, ``'streaming'``,
        ``'disconnected'``, ``'failed'`` (stopped for good: see ``last_error``),
        ``'promoted'`` or ``'closed'`` (by its ``close()``).
        """
    @property
    def applied_lsn(self) -> int:
        """What its readers see."""
    @property
    def flushed_lsn(self) -> int:
        """Durable in its log: what its acks carry. ``applied_lsn`` may be ahead by what the
        replica applied while its fdatasync ran, or behind by entries its primary shipped
        before its own fdatasync ended, held back until it says they are durable there.
        """
    @property
    def primary_last_lsn(self) -> int:
        """The primary's last LSN, as last heard."""
    @property
    def lag_lsn(self) -> int:
        """Entries the primary has that this replica has not applied."""
    @property
    def lag_seconds(self) -> float:
        """Age of its oldest missing entry on the primary's clock; NaN while behind with
        no heartbeat yet to say since when. While its link is down, at least the time
        since it last heard the primary, or since it started if it has not heard it since (it
        cannot know what it missed meanwhile). So too while the link is up but the primary's
        heartbeats are two intervals late (a frozen primary, a link that stopped
        forwarding), before the link times out.
        """
    @property
    def epoch(self) -> int:
        """The primary's epoch, as last heard; once it is promoted, the epoch it began."""
    @property
    def primary_quorum(self) -> int:
        """The primary's quorum, from its heartbeats."""
    @property
    def primary_members(self) -> int:
        """The primary's replicas that count toward its quorum: what a promotion must
        reach ``members - quorum + 1`` of."""
    @property
    def primary_peers(self) -> list[tuple[str, str]]:
        """``(name, address)`` of those members that listen: whom a promotion asks."""
    @property
    def connections(self) -> int:
        """Connections made to the primary so far."""
    @property
    def snapshots(self) -> int:
        """Snapshots installed so far."""
    @property
    def snapshot_progress(self) -> tuple[int, int] | None:
        """``(rows received, rows in all)`` while a snapshot arrives, else ``None``."""
    @property
    def last_error(self) -> str | None:
        """Why its link last failed, or ``None``."""
    @property
    def diverged(self) -> dict[str, Any] | None:
        """While stopped on a fork, the loss account: ``fork_lsn``, ``last_lsn``,
        ``entries``, ``tables`` (``{table: [key, ...]}``)."""
    @property
    def resyncs(self) -> int:
        """Resyncs done since start."""
    @property
    def last_resync(self) -> dict[str, Any] | None:
        """The last resync's loss account, with ``report`` (the path of its report file)."""
    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able values (NaN lag as ``None``, bytes keys as
        ``{"$base64": ...}``)."""
    def _repr_html_(self) -> str:
        """An HTML table of it, for Jupyter."""

@final
class Primary:
    """Serves a store's change log to replicas over TCP.

    Async writers never wait for the network: entries are shipped in batches at most
    every ``ship_interval`` seconds (``0``: within about a millisecond, so that a replica
    fsyncs once per batch rather than once per write). A sync write ships at once and
    returns once ``quorum`` replicas that fsync hold it durably. Without a ``token`` only
    loopback peers may connect.

    Args:
        listen: ``host:port`` to serve on (port 0 picks a free one; see ``address``).
        max_batch_bytes: bytes of entries shipped in one frame at most (4 MiB by default,
            from 4,096 to 64 MiB); an entry larger than that still ships, alone.
        heartbeat_interval: seconds between heartbeats on a link with nothing to ship
            (0.5 by default; at least 0.01, at most 2, as replicas drop a link silent for
            5 s). A replica's link that sends nothing for four heartbeats and a second is
            dropped.
        quorum: replicas that must acknowledge a sync write (1 or more).
        sync_timeout: seconds a sync write waits for them.
        on_timeout: ``"raise"`` (``ReplicationTimeout``) or ``"degrade"`` (a receipt
            with ``degraded=True``); the write is committed locally either way.
        table_modes: ``{table: "sync" | "async"}``, the default durability per table.
        default_durability: that of the other tables (``"async"`` or ``"sync"``).
        ship_ahead: ship a sync write's entry to replicas while this primary's own fsync
            runs, not after it, so that the fsyncs overlap. A replica holds such an entry
            (durable in its log, not yet shown: its ``flushed_lsn`` may pass its
            ``applied_lsn``) until it hears the entry is durable here, one frame later. A
            sync write returns once it is durable here and in ``quorum`` replicas' logs
            (a promotion shows all the new primary holds), before they may show it; a
            reader of those replicas sees it a moment later. Default ``False``: entries
            leave only once durable
            here and the two fsyncs run one after the other, but each sync write costs a
            replica one frame and one apply rather than two (async writers beside sync
            writers keep more of their rate when replicas share the primary's cores).
        retain_bytes, retain_seconds: caps on the log while this primary serves the store
            (``None``: the store's own). Within them the log is kept for every replica's
            slot; a replica being seeded by a snapshot keeps its log whatever the caps.

    Raises:
        ReplicationError: another ``Primary`` serves the store.
        ValueError: a setting out of range, or a ``listen`` that is not ``host:port``.
        NetworkError: ``listen`` cannot be listened on (in use, not local, a host name
            that does not resolve).
    """

    def __new__(
        cls,
        store: Store,
        *,
        listen: str = "127.0.0.1:0",
        token: str | None = None,
        ship_interval: float = 0.05,
        max_batch_bytes: int = 4194304,
        heartbeat_interval: float = 0.5,
        retain_bytes: int | None = None,
        retain_seconds: float | None = None,
        quorum: int = 1,
        sync_timeout: float = 5.0,
        on_timeout: str = "raise",
        table_modes: Mapping[str, str] | None = None,
        default_durability: str = "async",
        ship_ahead: bool = False,
    ) -> Self: ...
    @property
    def promotion(self) -> Promotion | None:
        """What the promotion that made this primary did, or `None` for a primary started
        as one.
        """
    @property
    def address(self) -> str:
        """``host:port`` replicas connect to (the real port if 0 was asked for)."""
    @property
    def ship_ahead(self) -> bool:
        """Whether a sync write's entry ships while this primary's own fsync runs
        (``Primary(ship_ahead=True)``)."""
    @property
    def settings(self) -> dict[str, Any]:
        """The settings it serves with, as ``Primary``'s keyword arguments (all but
        ``listen`` and ``token``): ``Primary(store, **primary.settings)`` serves alike. A
        promoted primary's are its old primary's, but for the arguments given to
        ``promote()``.
        """
    @property
    def store(self) -> Store:
        """The store being served."""
    @property
    def epoch(self) -> int:
        """The store's epoch."""
    @property
    def rejected(self) -> int:
        """Connections refused since start (bad token, garbage, wrong version, ...)."""
    @property
    def last_rejection(self) -> str | None:
        """Why the last connection was refused, if any was."""
    @property
    def sync_state(self) -> str:
        """Whether sync writes can complete now: "ok" (at least `quorum` replicas that fsync
        are connected), "degraded" (enough are registered but fewer are connected: sync
        writes wait and may time out) or "unavailable" (fewer are registered, or this
        primary is deposed: sync writes are refused).
        """
    def status(self) -> PrimaryStatus:
        """Its position and sync state, and every replica seen since start with its state
        and lag (iterate over it for the replicas)."""
    def slots(self) -> list[Slot]:
        """The durable slots, one `Slot` per replica the log is kept for."""
    def drop_slot(self, name: str) -> bool:
        """Drops a replica's slot (the log is no longer kept for it); returns whether it existed."""
    def retain(self) -> int:
        """Checkpoints and drops the log segments no slot needs (within ``retain_bytes``
        / ``retain_seconds``) now rather than at the next tick; returns how many."""
    def wait_for(self, lsn: int, replicas: int = 1, timeout: float = 2.0) -> int:
        """Waits until ``replicas`` replicas acknowledged ``lsn`` as durable; returns how
        many did. Only replicas that count toward the quorum are counted (never
        consumers or replicas with ``fsync=False``, nor a replica still ``'joining'``).
        With ``ship_ahead``, replicas may acknowledge an entry before this primary's own
        fsync of it ends.

        ``timeout`` is in seconds; ``float("inf")`` (or any timeout over a century) waits
        for ever, a negative or NaN one is a ``ValueError``.
        """
    def verify(self, timeout: float = 5.0) -> VerifyReport:
        """Compares each replica's per-table row counts and checksums with this primary's
        at an LSN both recorded recently.

        Replicas apply the same entries in other batches, so both sides keep the sums of
        their recent batches and the greatest LSN both hold is compared; this works under
        a steady write load. A replica that is not streaming, does not answer within
        ``timeout`` seconds (at most an hour), or is too far behind is reported as not
        comparable, with why.

        Raises:
            StoreClosed: the store was closed.
        """
    def switchover(
        self,
        to: str,
        *,
        timeout: float = 10.0,
        name: str | None = None,
        listen: str | None = None,
    ) -> Switchover:
        """Hands this primary's log to the replica named ``to`` (one that fsyncs and was
        started with ``listen=``), with zero loss and no resync.

        Writes pause (``WritesPausedError``, retryable) at an exact LSN; once ``to`` holds
        it, ``to`` becomes the primary of the next epoch, serving on its ``listen``
        address with this primary's settings (quorum, table modes, intervals), and this
        primary's other replicas are told to follow it. This primary is then closed and
        its store becomes a replica of the new primary, named ``name`` (default: the
        directory's name), answering members on ``listen`` (default: this primary's
        address): ``Switchover.replica``. On the replica's side, ``Replica.promoted`` is
        the new ``Primary``.

        Each step waits at most ``timeout`` seconds.

        Raises:
            ReplicationError: ``to`` does not listen, is not connected or does not catch
                up in time (writes resume here and nothing changed); or it was told to take
                over and did not answer in time (this primary is deposed anyway, as ``to``
                may have taken over: check it).
        """
    def serve_switchover_request(
        self, *, timeout: float = 10.0, name: str | None = None, listen: str | None = None
    ) -> Switchover | None:
        """Carries out the switchover an operator asked for from a shell
        (``replikv switchover ADDR --to NAME``), if one waits, as :meth:`switchover` does,
        and tells the operator how it went; ``None`` if none waits, or if it changed
        nothing (the operator is told why, :meth:`status` counts it as refused, and this
        primary serves on). ``replikv primary`` calls it every 0.2 s; a program serving a
        ``Primary`` calls it to take such requests (unanswered, a request is refused
        after 30 s).

        Raises:
            ReplicationError: ``to`` was told to take over and did not answer in time
                (this primary is deposed anyway, as ``to`` may have taken over: check it).
        """
    def _repr_html_(self) -> str:
        """An HTML table of its position and replicas, with their lag and sync state (or
        that it is closed), for Jupyter."""
    @property
    def closed(self) -> bool:
        """Whether it stopped serving: by its ``close()``, or at the end of a switchover from
        it. Its store stays open.
        """
    def close(self) -> None:
        """Stops serving; the store stays open."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *_exc: object) -> bool: ...

def request_switchover(
    address: str, to: str, *, token: str | None = None, timeout: float = 40.0
) -> str:
    """Asks the primary at ``address`` to hand over to its replica ``to`` (what ``replikv
    switchover`` does); returns the new primary's address once it serves.

    Raises:
        ReplicationError: the switchover failed (its reason), or the primary's owner took
            no request in time.
    """

def request_follow(
    address: str, primary: str, *, token: str | None = None, timeout: float = 5.0
) -> None:
    """Tells the replica whose ``listen`` address is ``address`` to follow the primary at
    ``primary`` from now on (what ``replikv follow`` does)."""

@final
class Switchover:
    """What a planned switchover did: who is the primary now and where, its epoch, the last
    LSN of the old primary, how long writes were paused, and the old primary's store as a
    replica of the new one.
    """
    def _repr_html_(self) -> str:
        """An HTML table of who serves now, where, its epoch and the pause, for Jupyter."""

    @property
    def to(self) -> str:
        """The replica that is the primary now."""
    @property
    def address(self) -> str:
        """Where it serves."""
    @property
    def epoch(self) -> int:
        """Its epoch."""
    @property
    def last_lsn(self) -> int:
        """The old primary's last LSN: the new epoch starts after it."""
    @property
    def paused(self) -> float:
        """Seconds writes were refused with ``WritesPausedError``."""
    @property
    def replica(self) -> Replica:
        """The old primary's store, following the new primary."""

@final
class Promotion:
    """What a promotion did: the new epoch, where it starts, the members reached, and the
    range of the old primary's entries that no reached member holds.
    """

    @property
    def epoch(self) -> int:
        """The new epoch."""
    @property
    def start_lsn(self) -> int:
        """The first LSN of the new epoch."""
    @property
    def reached(self) -> list[str]:
        """The members reached, by name (the promoted replica included)."""
    @property
    def needed(self) -> int:
        """How many members the rule asked for: ``members - quorum + 1``, and at least a
        majority of the members (0 if unknown).
        """
    @property
    def forced(self) -> bool:
        """Whether it was forced past the rule."""
    @property
    def possible_loss(self) -> tuple[int, int] | None:
        """``(first, last)``: the LSNs the old primary had committed (as last heard) that
        the new primary lacks (async writes; sync ones too only if forced), or ``None``."""
    @property
    def settings(self) -> dict[str, Any] | None:
        """The old primary's settings as its heartbeats last said (a new dict of
        ``Primary``'s keyword arguments: ``quorum``, ``table_modes``, ...), or ``None`` if
        none said.
        """
    def _repr_html_(self) -> str:
        """An HTML table of it, for Jupyter."""

@final
class Replica:
    """Follows a primary into a local store that readers can use while it applies.

    It reconnects by itself after any failure and resumes from its own log.

    Args:
        token: the primary's shared token.
        name: its slot on the primary (default: the directory's name).
        fsync: fdatasync what it applies; only replicas that fsync count toward a sync
            write's quorum.
        max_backoff: the longest wait, in seconds, between attempts to reach the
            primary (2.0 by default, at least 0.01): waits start at 0.05 s and double up
            to it, drawn at random between half a wait and a whole one.
    """

    def __new__(
        cls,
        path: str | os.PathLike[str],
        *,
        primary: str,
        token: str | None = None,
        name: str | None = None,
        fsync: bool = True,
        max_backoff: float = 2.0,
        on_diverge: Literal["stop", "resync"] = "stop",
        listen: str | None = None,
    ) -> Self:
        """``primary``: the primary's ``host:port`` (a name, an IPv4 address or a
        bracketed IPv6 one); anything else raises ``ValueError`` before the store is
        opened. A primary that does not answer yet is retried (see ``status()``).

        ``on_diverge``: what to do when this store's history forks from the
        primary's. ``"stop"`` (the default) stops following and raises ``DivergedError``
        with the loss account from ``wait_for`` and ``get``; ``"resync"`` writes the
        local-only entries to a report file in ``<path>/diverged/`` (see
        :func:`replikv.read_diverged`), discards everything and re-seeds.

        ``listen``: ``host:port`` (port 0 picks one) where this replica answers other
        members: a promotion of another replica asks it there to raise its epoch, and a
        promotion of this one serves there by default. Without it, no promotion can count
        this replica."""
    @property
    def listen_address(self) -> str | None:
        """Where it answers other members (and serves once promoted), if it listens."""
    @property
    def promoted(self) -> Primary | None:
        """The ``Primary`` a planned switchover made of this replica (serving on its
        ``listen`` address with the old primary's settings), or ``None``. Once asked for,
        it is the caller's; before that, closing the replica closes it too."""
    @property
    def store(self) -> Store:
        """The replica's store: readable while it applies; writes raise `ReadOnlyError`."""
    @property
    def name(self) -> str:
        """Its name: its slot on the primary (defaults to the directory's name)."""
    @property
    def applied_lsn(self) -> int:
        """The last LSN applied here (what reads see). The replica's own fdatasync of it may
        follow a moment later (it is durable on the primary), and entries its primary
        shipped before its own fdatasync ended show once it says they are durable there
        (``status().flushed_lsn`` is what is durable here).
        """
    def wait_for(
        self,
        lsn: int,
        timeout: float = 5.0,
        progress: bool | Callable[[str, int, int], object] | None = None,
    ) -> bool:
        """Waits until ``lsn`` is applied here; returns whether it was in time.

        ``timeout`` is in seconds; ``float("inf")`` waits for ever. ``progress=True`` shows
        the seeding (snapshot rows received of the snapshot's rows) and then the catch-up
        (log entries applied of those up to ``lsn``) as progress bars (a widget in Jupyter,
        one line each in a terminal); a callable is called a few times a second with
        ``(stage, done, total)``, ``stage`` being ``"snapshot"`` or ``"catch-up"``; a wait
        that reaches ``lsn`` ends on a call with ``done == total``.

        An LSN applied here counts only once the primary it follows has compared this
        directory's history with its own (the first handshake since it started, or since
        ``follow()`` re-pointed it): a directory that served as a primary, or followed
        another one, may hold other entries under the same LSNs. Until then it waits, even
        for an LSN it holds; a fork found then raises (below).

        A primary that cannot be reached is retried, not raised: the wait then returns
        ``False``, and ``status().last_error`` says why (``connection refused``, ...).

        Raises:
            DivergedError: this replica stopped on a fork (``on_diverge="stop"``): at once,
                whatever ``lsn``, even one applied here, since its store holds entries its
                primary does not.
            ReplicationError: the link failed for good (a wrong token, say): the primary's
                reason, rather than a wait for nothing.
            StoreClosed: the replica is closed, or was closed while it waited.
        """
    def get(
        self,
        table: str,
        key: _KeyArg,
        default: Any = None,
        *,
        min_lsn: int = 0,
        timeout: float = 1.0,
    ) -> Any:
        """Reads ``key`` once ``min_lsn`` is applied (read-your-writes).

        Raises:
            ReplicationTimeout: ``min_lsn`` was not applied within ``timeout`` (the message
                says what the link last failed on, if anything).
            DivergedError: this replica stopped on a fork: its store holds entries its
                primary does not, so no read of it is the primary's (``replica.store.get``
                still reads it, as it is).
            ReplicationError: the link failed for good, with the primary's reason.
            StoreClosed: the replica is closed.
        """
    def status(self) -> ReplicaStatus:
        """The link's state, position and lag, and what it did about a fork."""
    def promote(
        self,
        *,
        listen: str | None = None,
        token: str | None = None,
        force: bool = False,
        ship_interval: float | None = None,
        quorum: int | None = None,
        sync_timeout: float | None = None,
        on_timeout: str | None = None,
        table_modes: Mapping[str, str] | None = None,
        default_durability: str | None = None,
        ship_ahead: bool | None = None,
    ) -> Primary:
        """Makes this replica the primary of a new epoch, without reopening its store;
        returns the new :class:`Primary` (see its ``promotion``).

        It asks the members its primary's heartbeats named (replicas started with
        ``listen=``) to raise their epoch. A sync write is acknowledged once ``quorum`` of
        the primary's ``members`` replicas hold it, so any ``members - quorum + 1`` of them
        hold every acknowledged write; a promotion also needs a majority of the members,
        so that no two promotions win one epoch (the README's "Failover: promotion"). Once
        the larger number of those that fsync granted it (itself included), it adopts the
        newest log among them (fetching what it lacks) and serves it on ``listen``
        (default: its own ``listen`` address, else a free port) with ``token`` (default:
        its own). The members that granted then follow it, and the old primary is told it
        is deposed.

        It serves with the old primary's settings as its heartbeats last said (kept in
        this replica's directory): ``quorum``, ``table_modes``, ``default_durability``,
        ``sync_timeout``, ``on_timeout``, ``ship_interval``, ``ship_ahead``, the heartbeat
        interval, batch size and log caps, so that a table written synchronously stays so.
        Each argument given replaces its setting (``table_modes={}`` clears the table
        modes); with no heartbeat heard, ``Primary``'s defaults. ``Primary.settings`` shows
        what it serves with. The old primary's quorum may need more replicas than are left
        without it: sync writes are then refused until one joins, or pass ``quorum=``.

        Raises ``ReplicationError`` when too few members can be reached (nothing changes
        when that is known before asking), when another promotion got a member first,
        when a member that granted recorded a membership this replica never heard of and
        too few of its members granted (promote that member instead), or when a member
        holds a newer log that forked from this one; ``force=True``
        promotes with whoever granted and reports the possible loss. It also raises it,
        before anything changes, when the settings kept on disk are damaged and no heartbeat
        told them again, unless ``quorum``, ``table_modes`` and ``default_durability`` are
        all given: it never serves weaker than the old primary did. The store then
        belongs to the new primary: closing the replica leaves it open. ``ValueError``: an
        argument out of range.
        """
    def follow(self, address: str) -> None:
        """Follows the primary at ``address`` from now on (after a promotion elsewhere),
        continuing from its own position when its history matches the new primary's; a
        fork is handled as ``on_diverge`` says. Raises ``ReplicationError`` once this
        replica was itself promoted."""
    def _repr_html_(self) -> str:
        """An HTML table of its status, for Jupyter."""
    def close(self) -> None:
        """Stops following and closes the store (unless it was promoted)."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *_exc: object) -> bool: ...

def fetch_status(address: str, *, token: str | None = None, timeout: float = 5.0) -> PrimaryStatus:
    """Asks the primary at ``address`` for its status (as :meth:`Primary.status`)."""

def request_drop_slot(
    address: str, name: str, *, token: str | None = None, timeout: float = 5.0
) -> PrimaryStatus:
    """Asks the primary at ``address`` to drop the slot of its replica ``name``, gone for good
    (what ``replikv drop-slot`` does): it no longer keeps log for that replica, nor counts
    it among its members. Returns its status once the slot is dropped.

    Raises:
        ReplicationError: no slot has that name (the message lists those there are), or
            that replica is connected (stop it first).
    """

def promote_stopped(path: str | os.PathLike[str], *, force: bool = False) -> Promotion:
    """Makes a stopped replica's store the primary of a new epoch, by the rule
    :meth:`Replica.promote` follows (with what its primary's heartbeats last said), without
    serving it. Serve it next as its old primary served, so that the tables it wrote
    synchronously stay so: ``Primary(Store(path), **promotion.settings)`` (``settings`` is
    ``None`` if no heartbeat said them), or the ``replikv primary`` command that
    ``replikv promote DIR`` prints. ``Primary(Store(path))`` alone serves with the
    defaults: every table async.

    Raises ``ReplicationError`` (nothing changes) when the rule is not met and ``force`` is
    not set, or when the directory is not a replica's (force or not);
    ``StoreLockedError`` while a replica runs on it.
    """

def read_diverged_report(
    path: str | os.PathLike[str],
) -> tuple[int, str, datetime.datetime, list[Change]]:
    """Reads a divergence report file: `(fork_lsn, primary, written_at, entries)`, the
    entries as `Change` objects. `replikv.read_diverged` wraps it.
    """

def fetch_verify(address: str, *, token: str | None = None, timeout: float = 10.0) -> VerifyReport:
    """Asks the primary at `address` to verify its replicas (it gives them 5 s to answer)
    and returns its `VerifyReport`.
    """

@final
class ReplicaVerify:
    """How one replica's tables compare with the primary's."""

    @property
    def name(self) -> str:
        """The replica's name."""
    @property
    def verdict(self) -> str:
        """``'equal'``, ``'different'`` or ``'not comparable'``."""
    @property
    def lsn(self) -> int | None:
        """The LSN both sides' checksums were taken at; ``None`` if not comparable."""
    @property
    def reason(self) -> str | None:
        """Why it is not comparable (not connected, no answer, too far behind)."""
    @property
    def tables(self) -> dict[str, str]:
        """Per table: ``'equal'`` or ``'different'`` (empty when not comparable)."""
    def to_dict(self) -> dict[str, Any]:
        """The comparison as plain dicts and lists, with each side's row count and checksum."""
    def _repr_html_(self) -> str:
        """An HTML table of it, for Jupyter."""

@final
class VerifyReport:
    """What `Primary.verify()` found: `ok` is true unless a replica's tables differ from the
    primary's (replicas that could not be compared yet do not make it false).
    """

    @property
    def ok(self) -> bool:
        """No replica differs (replicas not comparable yet do not make it false)."""
    @property
    def lsn(self) -> int:
        """The primary's last LSN when it asked."""
    @property
    def compared(self) -> int:
        """How many replicas were compared (equal or different)."""
    @property
    def replicas(self) -> list[ReplicaVerify]:
        """Every replica with a slot or a connection, in name order."""
    def to_dict(self) -> dict[str, Any]:
        """The report as plain dicts and lists (for JSON)."""
    def _repr_html_(self) -> str:
        """An HTML table of it, for Jupyter."""

@final
class ArrowStream:
    """A table's rows at one LSN as Arrow record batches, behind the Arrow `PyCapsule` interface:
    `pyarrow.table(s)`, `polars.from_arrow(s)` and `DuckDB` read it without copies, batch by
    batch. Each `__arrow_c_stream__` call streams the same rows again.
    """

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """A new Arrow C stream of the rows (a PyCapsule named ``arrow_array_stream``)."""
    def __arrow_c_schema__(self) -> object:
        """The schema of the rows (a PyCapsule named ``arrow_schema``)."""
    @property
    def table(self) -> str:
        """The table the rows come from."""
    @property
    def lsn(self) -> int:
        """The LSN the rows were read at."""
    @property
    def num_rows(self) -> int:
        """How many rows a stream gives."""
    @property
    def column_names(self) -> list[str]:
        """The column names, key first."""
    @property
    def packed_columns(self) -> list[str]:
        """Names of the columns that hold each value's `MessagePack` bytes (lists, dicts and
        columns of mixed types).
        """

@final
class ChangeStream:
    """The ops of a change feed as Arrow record batches (the Arrow PyCapsule interface).

    Batches hold at most 65,536 rows, so a huge entry spans several. Each
    ``__arrow_c_stream__`` call streams the same rows again.
    """

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """A new Arrow C stream of the rows (a PyCapsule named ``arrow_array_stream``)."""
    def __arrow_c_schema__(self) -> object:
        """The schema of the rows (a PyCapsule named ``arrow_schema``)."""
    @property
    def num_rows(self) -> int:
        """How many rows (ops) a stream gives."""
    @property
    def packed_columns(self) -> list[str]:
        """Names of the columns that hold `MessagePack` bytes (`value`, and `key` when keys of
        several types are mixed).
        """

def _forward_logs() -> None:
    """Starts handing the core's events (INFO and above) to Python's `logging`, under
    loggers named `replikv.<module>` (once per process; called on import).
    """

def _stop_logs() -> None:
    """Stops logging the core's events (at interpreter exit)."""

def decode_packed(array: Any) -> list[Any]:
    """`replikv._core.decode_packed`: the values in a packed (`MessagePack`) Arrow column as a
    list of Python objects (`None` for nulls).
    """

def encode_value(
    value: Any, /, *, missing_as_none: bool = False, naive: Literal["refuse", "utc"] = "refuse"
) -> bytes:
    """The MessagePack bytes replikv stores for ``value`` (what a cache node's GET returns).

    numpy scalars are stored as the Python values they stand for, a ``date`` as extension
    type 1 (4 bytes: big-endian signed days since 1970-01-01), an aware ``pandas.Timestamp``
    as a datetime (nanoseconds truncated to microseconds).

    Args:
        value: the value.
        missing_as_none: store a NaN, ``pandas.NA`` or ``pandas.NaT`` value as ``None``
            (as the DataFrame paths store a cell), NA and NaT inside it too; a NaN inside a
            list or dict stays NaN. By default NaN is stored as NaN and NA/NaT are refused.
        naive: ``"utc"`` takes a naive datetime or Timestamp as UTC; ``"refuse"`` (the
            default, what ``put`` does) refuses it.

    Raises:
        TypeError: a type replikv does not store (nothing is ever pickled), a naive
            datetime, a ``Decimal``. The message names the path to the refused part
            (``value['at'][2]: ...``).
        OverflowError: an int outside 64 bits, a datetime outside years 1-9999 in UTC.
        ValueError: a value nested deeper than 128 levels, an unknown ``naive``.
        RuntimeError: a dict or list changed while it was encoded.
    """

def decode_value(data: bytes, /) -> Any:
    """`replikv.decode_value`: the value of `MessagePack` bytes as replikv stores them. Bytes
    that are not exactly one such value (trailing bytes included) are a `ValueError`.
    """

@final
class Damage:
    """One damaged row, or a table whose recorded stats disagree with its rows (`key` is None)."""

    @property
    def table(self) -> str:
        """The table the damage is in."""
    @property
    def key(self) -> _Key | None:
        """The damaged row's key; ``None`` for damage to the table as a whole."""
    @property
    def reason(self) -> str:
        """What is wrong, in words."""
    def to_dict(self) -> dict[str, Any]:
        """The damage as a plain dict (`table`, `key`, `reason`)."""

@final
class ScrubReport:
    """What `Store.scrub()` found: `ok` is true when no row is damaged. (A scrub that was
    stopped raises instead of returning a partial report.)
    """
    def _repr_html_(self) -> str:
        """An HTML table of the verdict, the rows checked per table and every problem, for
        Jupyter."""
    @property
    def path(self) -> str:
        """The store's directory."""
    @property
    def lsn(self) -> int:
        """The LSN of the state that was checked."""
    @property
    def ok(self) -> bool:
        """Nothing is damaged."""
    @property
    def rows_checked(self) -> int:
        """Rows read and checked, over every table."""
    @property
    def tables(self) -> dict[str, int]:
        """Rows checked per table."""
    @property
    def damaged(self) -> list[Damage]:
        """Every problem found, in table and key order."""
    def to_dict(self) -> dict[str, Any]:
        """The report as plain dicts and lists (for JSON or pandas)."""

@final
class CacheNode:
    """An LRU cache node that speaks the Redis protocol (redis-cli, redis-py and
    redis-benchmark work unchanged).

    With ``follow=`` it consumes that primary's change log: each write drops (or, with
    ``on_write="refresh"``, replaces) the keys it holds, so that once it has processed a
    write's entry no read returns an older value. A cache key on the wire is
    ``table:tag:key`` (tag ``i`` for an int, ``s`` for a str, ``b`` for bytes); ``GET``
    returns the value's MessagePack bytes.
    """

    def __new__(
        cls,
        listen: str = "127.0.0.1:0",
        *,
        capacity: int = 100_000,
        max_bytes: int | None = None,
        ttl: float | None = None,
        follow: str | None = None,
        token: str | None = None,
        name: str | None = None,
        on_write: Literal["drop", "refresh"] = "drop",
    ) -> Self:
        """``capacity``: entries at most; ``max_bytes``: bytes at most, counting keys,
        values and 96 bytes per entry; ``ttl``: seconds an entry stored without its own
        TTL lives (``None``: until evicted or invalidated). ``token``: what clients must
        give with ``AUTH`` (and what the followed primary expects). ``name``: its name on
        the primary, ``cache-<port>`` by default (nodes that follow one primary need
        different names)."""
    @property
    def address(self) -> str:
        """The address it listens on (`host:port`; the real port if 0 was asked)."""
    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
    def stats(self) -> CacheNodeStats:
        """Its counters and where it stands in the log it follows.

        Raises:
            CacheError: the node is closed.
        """
    def follow(self, address: str) -> None:
        """Follows the primary at ``address`` from now on (after a failover, say): the node
        resumes from its log position when its history matches the new primary's, and
        flushes on a fork or if the log it needs is gone there.

        Raises:
            CacheError: the node is closed, or follows no log (it was started without
                ``follow=``).
            ValueError: ``address`` is not ``host:port``, or is the node's own.
        """
    def _repr_html_(self) -> str:
        """An HTML table of its stats (or that it is closed), for Jupyter."""
    def close(self) -> None:
        """Stops following and serving; returns once the port is free. Idempotent."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> bool: ...

@final
class Cache:
    """A read-through cache in front of a store.

    With ``nodes`` it spreads keys over cache nodes by consistent hashing (``vnodes``
    points per node); without, it keeps an LRU of ``capacity`` entries in this process,
    invalidated directly by the source store's writes. On a miss it reads ``source`` (a
    ``Store``, a ``Replica`` or a callable ``(table, key) -> value``), caches the value
    with the version it was read at, and makes one load for concurrent misses of a key.
    """

    def __new__(
        cls,
        nodes: list[str] | None = None,
        *,
        source: Store | Replica | Callable[[str, _Key], Any] | None = None,
        capacity: int = 10_000,
        max_bytes: int | None = None,
        ttl: float | None = None,
        vnodes: int = 160,
        token: str | None = None,
        timeout: float = 1.0,
    ) -> Self:
        """``ttl``: seconds a cached value lives (``None``: until evicted or written).
        ``timeout``: how long a node may take to answer before it is left out, and how
        long a read through waits for a lagging replica. ``max_bytes``: bytes at most
        in-process, counting keys, values and 96 bytes per entry (so more than 96; a
        smaller bound is a ``ValueError``, as for ``CacheNode``)."""
    def get(
        self, table: str, key: _KeyArg, default: Any = None, *, read_through: bool = True
    ) -> Any:
        """The value of `key` in `table`: cached, or read through from the source (and
        cached), or `default`. `read_through=False` only looks in the cache. In-process,
        the cached object itself is returned: do not mutate it.

        Raises:
            AuthError: a node refused the cache's token (a node that fails otherwise is
                left out, and the source answers).
            ReplicationTimeout: the source (a replica) stayed behind the log position the
                cache nodes have processed for the cache's ``timeout``: its value could be
                older than one the cache already returned, so none is given.
            StoreClosed: in-process, its source store was closed (what it held is dropped:
                it no longer hears of the store's writes).
        """
    def get_many(self, table: str, keys: Iterable[_KeyArg]) -> dict[_Key, Any]:
        """The values of `keys` in `table`, as a dict holding the keys found (over nodes, one
        pipelined round trip per node, then one read through per miss).
        """
    def set(self, table: str, key: _KeyArg, value: Any, ttl: float | None = None) -> None:
        """Caches `value` for `key` (until a write of the key in the source's log, its TTL or
        eviction). Over nodes the value must be one a store can hold.

        Raises:
            ValueTooLarge: in-process, the value is larger than ``max_bytes``.
            ValueError: over nodes, the key and value are more than a node takes in one
                request (arguments of 64 MiB, requests of 96 MiB).
            StoreClosed: in-process, its source store was closed.
        """
    def invalidate(self, table: str, key: _KeyArg) -> bool:
        """Drops `key` from the cache; returns whether it was cached."""
    def invalidate_prefix(self, table: str, prefix: str | bytes | None = None) -> int:
        """Drops every cached key of `table` (starting with `prefix`, a str or bytes, when
        given); returns how many were dropped.
        """
    def stats(self) -> CacheStats:
        """Its lookups, loads from the source and what its backend dropped, as a
        `CacheStats` (over nodes: their sums, and each node's own figures).
        """
    @property
    def nodes(self) -> list[str]:
        """The addresses of the cache nodes that hold its values (empty for an in-process
        cache, which holds the Python objects themselves)."""
    def memoize(self, ttl: float | None = None) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
        """A decorator that caches a function's results by its arguments (the ``repr`` of plain
        ones, a
        digest of the pickle of any other, such as a DataFrame: an argument that cannot be pickled
        is a ``TypeError``), for ``ttl`` seconds (``None``: the cache's own ``ttl``) or until
        invalidated: the decorated function's ``invalidate(*args, **kwargs)`` drops one call's
        result, its ``invalidate_all()`` every result of the function. A result of ``None`` is not
        cached: the function runs again on the next call. Each function's results are its own (by
        its name, code, and the values it closes over and defaults to): two lambdas, or two closures
        of one factory over other values, never share them; the same function in another process
        over the same nodes does, if those values are plain (numbers, str, bytes, and lists, tuples
        and dicts of them; over any other, a function's results are its own decoration's).
        """
    def _repr_html_(self) -> str:
        """An HTML table of its stats, for Jupyter."""
    def close(self) -> None:
        """Stops watching the source and closes the connections to the nodes; later calls
        raise `CacheError`. Idempotent. A cache dropped without it does the same."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> bool: ...

@final
class CacheStats:
    """What a `Cache` counted: lookups, loads from its source, and what its backend dropped.
    Over cache nodes, `evictions`, `expirations`, `invalidations` and `keys` are the nodes'
    sums, and `nodes` holds each node's own figures by address (empty in-process).
    """

    @property
    def hits(self) -> int:
        """Reads answered from the cache."""
    @property
    def misses(self) -> int:
        """Reads that went to the source."""
    @property
    def hit_ratio(self) -> float:
        """``hits / (hits + misses)``; 0.0 before the first lookup."""
    @property
    def evictions(self) -> int:
        """Entries dropped to make room."""
    @property
    def expirations(self) -> int:
        """Entries dropped because their TTL passed."""
    @property
    def invalidations(self) -> int:
        """Cached keys dropped or refreshed by a write."""
    @property
    def stale_fills_refused(self) -> int:
        """Fills refused because a newer write was known (the stale-set race)."""
    @property
    def keys(self) -> int:
        """Keys cached now."""
    @property
    def loads(self) -> int:
        """Reads from the source on a miss."""
    @property
    def loads_coalesced(self) -> int:
        """Misses that waited for another reader's load of the same key."""
    @property
    def load_seconds(self) -> float:
        """Seconds spent loading from the source."""
    @property
    def errors(self) -> int:
        """Node failures a read or a fill survived (the source answered; 0 in-process)."""
    @property
    def last_error(self) -> str | None:
        """The last error of a cache node, or ``None``."""
    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        """Each node's figures by address: ``state``, ``evictions``, ``expirations``,
        ``invalidations``, ``hits``, ``misses``, ``keys``, ``processed_lsn``, ``errors``,
        ``last_error`` (empty in-process)."""
    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able values."""
    def _repr_html_(self) -> str:
        """An HTML table of it, for Jupyter."""

@final
class CacheNodeStats:
    """What a `CacheNode` counted and where it stands in the log it follows."""

    @property
    def address(self) -> str:
        """The ``host:port`` it serves on."""
    @property
    def hits(self) -> int:
        """``GET``s answered from its LRU."""
    @property
    def misses(self) -> int:
        """``GET``s of keys it did not hold."""
    @property
    def hit_ratio(self) -> float:
        """``hits / (hits + misses)``; 0.0 before the first lookup."""
    @property
    def evictions(self) -> int:
        """Values dropped to stay within its memory bound."""
    @property
    def expirations(self) -> int:
        """Values dropped when their TTL passed."""
    @property
    def invalidations(self) -> int:
        """Values dropped (or refreshed) because the log wrote their key."""
    @property
    def stale_fills_refused(self) -> int:
        """Fills refused because their value was older than a write it had seen."""
    @property
    def flushes(self) -> int:
        """Times everything was dropped: a ``FLUSHALL``, a fork of its primary's history, a
        lost log position (0 for a node that never flushed: starting to follow is not one).
        """
    @property
    def keys(self) -> int:
        """Keys it holds now."""
    @property
    def bytes(self) -> int:
        """What it counts against ``max_bytes``: the bytes of every cached key and value,
        plus 96 per entry for its bookkeeping.
        """
    @property
    def processed_lsn(self) -> int:
        """The last log entry it applied."""
    @property
    def processed_epoch(self) -> int:
        """The epoch of the last log entry it applied."""
    @property
    def log_lost(self) -> int:
        """Times the log it needed was gone (it flushed and resumed)."""
    @property
    def forks(self) -> int:
        """Times its primary's history forked from what it had seen (it flushed)."""
    @property
    def follow_state(self) -> str:
        """The state of its link to the primary (``'none'`` without ``follow``)."""
    @property
    def last_error(self) -> str | None:
        """Why its link to the primary last failed, or ``None``."""
    @property
    def clients(self) -> int:
        """Connections open now."""
    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able values."""
    def _repr_html_(self) -> str:
        """An HTML table of it, for Jupyter."""
