//! `Store`: the Python class of a store.

use crate::error::ReplicationError;
use crate::python::display::quoted;
use std::ops::Bound as Limit;
use std::path::PathBuf;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use super::args::{
    directory, durability as durability_arg, int, limit as limit_arg, names, non_negative, opt_int,
    seconds, size,
};
use super::arrow::{stream as arrow_stream, PyArrowStream};
use super::arrow_in::{put as put_arrow, Load};
use super::batch::PyBatch;
use super::changes::{feed_request, PyChanges};
use super::committing::{
    await_receipt, commit_ops, committed_anyway, sleep_interruptibly, wait_for_writer,
};
use super::display::html;
use super::errors::{not_inherited, owned, run, run_detached, to_py};
use super::iter::{KeyBounds, PyScan, ScanKeys};
use super::progress::Progress;
use super::put_many::{put_op, put_rows};
use super::stats::PyStoreStats;
use super::transaction::{OpenTransactions, PyTransaction};
use super::types::{PyChecksum, PyReceipt};
use super::value::{decode_py_value, encode_py_key};
use crate::arrow::{ExportRequest, Stop};
use crate::codec::Op;
use crate::store::{CompactionAttempts, Durability, Store, StoreOptions};

/// A replikv store: a directory with a durable change log and redb tables.
///
/// The directory (and its parents) is created if missing. An existing directory that
/// holds other files and none of a store's (a project folder given by mistake) raises
/// ``NotAStoreError`` (a ``FileExistsError``) naming one of them, and nothing is written
/// there; an empty one (or one of dotfiles and a volume's ``lost+found`` only) becomes a
/// store.
///
/// Args:
///     segment_bytes: the largest log segment. Segments start at 1 MiB and double up to
///         it (and to a quarter of ``retain_bytes``), so an empty store is small on disk.
///     retain_bytes: keep about this many bytes of log at most (64 MiB by default):
///         older whole segments are dropped in the background once the tables' durable
///         checkpoint covers them. ``None`` keeps the whole log.
///     retain_seconds: drop log segments whose entries are all older than this (a week
///         by default). ``None``: no age limit. ``changes()`` below the retained log
///         raises ``LogTruncated``; a replica that falls behind it is re-seeded.
///     cache_bytes: the bound of the tables' page cache (128 MiB by default).
///
/// Opening a directory this process already has open (re-running a notebook cell) returns
/// another handle to the same open store, if the options are equal; other options raise
/// ``StoreOptionsError`` naming the option and both values. Each handle is closed by its
/// own ``close()`` (or ``with`` block): later use of that handle raises ``StoreClosed``,
/// while the other handles work on. The store is flushed and its directory released when
/// its last handle is closed or garbage-collected. A directory a ``Replica`` of this
/// process holds raises ``StoreLockedError`` saying so; another process gets
/// ``StoreLockedError`` naming the owner's pid and command line.
#[pyclass(frozen, module = "replikv._core", name = "Store")]
pub(crate) struct PyStore {
    pub(crate) store: Store,
    /// The transactions opened through this handle, which its `close()` aborts.
    transactions: OpenTransactions,
}

/// The encoded-key bounds of `prefix=`, `start=` (included) and `end=` (excluded): the
/// narrowest range inside all that are given.
fn key_bounds(
    prefix: Option<&Bound<'_, PyAny>>,
    start: Option<&Bound<'_, PyAny>>,
    end: Option<&Bound<'_, PyAny>>,
) -> PyResult<KeyBounds> {
    Ok(scan_keys(prefix, start, end)?.bounds())
}

/// `prefix=`, `start=` and `end=`, encoded.
fn scan_keys(
    prefix: Option<&Bound<'_, PyAny>>,
    start: Option<&Bound<'_, PyAny>>,
    end: Option<&Bound<'_, PyAny>>,
) -> PyResult<ScanKeys> {
    if let Some(prefix) = prefix {
        if !(prefix.is_instance_of::<PyString>() || prefix.is_instance_of::<PyBytes>()) {
            return Err(PyTypeError::new_err("prefix must be str or bytes"));
        }
    }
    let encoded = |key: Option<&Bound<'_, PyAny>>| key.map(encode_py_key).transpose();
    Ok(ScanKeys {
        prefix: encoded(prefix)?,
        start: encoded(start)?,
        end: encoded(end)?,
    })
}

#[pymethods]
impl PyStore {
    #[new]
    #[pyo3(signature = (path, *, fsync = true, max_key_bytes = 4096, max_value_bytes = 16_777_216,
        max_transaction_bytes = 268_435_456, segment_bytes = 67_108_864, checkpoint_entries = 10_000,
        checkpoint_seconds = 5.0, retain_bytes = Some(67_108_864), retain_seconds = Some(604_800.0),
        cache_bytes = 134_217_728),
        text_signature = "(path, *, fsync=True, max_key_bytes=4096, max_value_bytes=16777216, \
            max_transaction_bytes=268435456, segment_bytes=67108864, checkpoint_entries=10000, \
            checkpoint_seconds=5.0, retain_bytes=67108864, retain_seconds=604800.0, \
            cache_bytes=134217728)")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        fsync: bool,
        #[pyo3(from_py_with = int)] max_key_bytes: i128,
        #[pyo3(from_py_with = int)] max_value_bytes: i128,
        #[pyo3(from_py_with = int)] max_transaction_bytes: i128,
        #[pyo3(from_py_with = int)] segment_bytes: i128,
        #[pyo3(from_py_with = int)] checkpoint_entries: i128,
        checkpoint_seconds: f64,
        #[pyo3(from_py_with = opt_int)] retain_bytes: Option<i128>,
        retain_seconds: Option<f64>,
        #[pyo3(from_py_with = int)] cache_bytes: i128,
    ) -> PyResult<Self> {
        let checkpoint_interval = seconds("checkpoint_seconds", checkpoint_seconds)?;
        let retain_seconds = retain_seconds
            .map(|s| seconds("retain_seconds", s))
            .transpose()?;
        let options = StoreOptions {
            fsync,
            max_key_bytes: size("max_key_bytes", max_key_bytes)?,
            max_value_bytes: size("max_value_bytes", max_value_bytes)?,
            max_transaction_bytes: size("max_transaction_bytes", max_transaction_bytes)?,
            segment_bytes: non_negative("segment_bytes", segment_bytes)?,
            retain_bytes: retain_bytes
                .map(|b| non_negative("retain_bytes", b))
                .transpose()?,
            retain_seconds,
            cache_bytes: size("cache_bytes", cache_bytes)?,
            checkpoint_entries: non_negative("checkpoint_entries", checkpoint_entries)?,
            checkpoint_interval,
            follower: false,
        };
        let path = directory(path.extract()?)?;
        let store = run_detached(py, || Store::open_shared(&path, options))?;
        Ok(Self::of(store))
    }

    /// The store's directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.store.path().to_path_buf()
    }

    /// The last LSN readers see. On a primary's store it is durable; a replica's store
    /// applies the entries it is sent before its own fdatasync (they are durable on the
    /// primary), which follows within milliseconds.
    #[getter]
    fn last_lsn(&self, py: Python<'_>) -> PyResult<u64> {
        owned(py, &self.store)?;
        Ok(self.store.readable_lsn())
    }

    /// The highest epoch the store has seen (promotions raise it; a store that has seen
    /// a newer epoch than its own entries carry is deposed and refuses writes).
    #[getter]
    fn epoch(&self, py: Python<'_>) -> PyResult<u64> {
        owned(py, &self.store)?;
        Ok(self.store.epoch())
    }

    /// The epochs its log went through: ``(epoch, start_lsn)`` pairs, oldest first.
    #[getter]
    fn epoch_history(&self, py: Python<'_>) -> PyResult<Vec<(u64, u64)>> {
        owned(py, &self.store)?;
        Ok(self.store.epoch_history().pairs().to_vec())
    }

    /// Whether this handle (or the store, after a fatal failure) is closed.
    #[getter]
    fn closed(&self, py: Python<'_>) -> PyResult<bool> {
        run(py, || self.store.check_process())?;
        Ok(self.store.is_closed())
    }

    /// Writes ``value`` under ``key``; returns once durable and visible.
    ///
    /// Args:
    ///     table: the table to write.
    ///     key: the key.
    ///     value: the value.
    ///     durability: ``"async"``, ``"sync"`` (returns once ``quorum`` replicas of the
    ///         serving ``Primary`` hold the write durably) or ``None`` (the default of
    ///         the table, set by the ``Primary``).
    ///
    /// A Ctrl-C during the commit, or while a sync write waits for its replicas, raises
    /// ``KeyboardInterrupt`` carrying the receipt as ``.receipt`` and a note: the write
    /// is committed locally.
    ///
    /// Raises:
    ///     TypeError: a key or value of an unsupported type (a value's refusal names the
    ///         row and the field: ``events[165260]['at']: naive datetime ...``).
    ///     OverflowError: an int outside 64 bits.
    ///     ValueTooLarge: a key or value over its limit.
    ///     StoreClosed: the store is closed.
    ///     ReplicationError: a sync write that no ``Primary`` serves, or with fewer
    ///         replicas that fsync than the quorum (refused: nothing is written); or
    ///         whose ``Primary`` stopped while it waited (committed locally: ``.lsn`` and
    ///         ``.acked_by`` say where it stands).
    ///     ReplicationTimeout: a sync write not acknowledged within ``sync_timeout``
    ///         (committed locally; ``.lsn`` and ``.acked_by`` say where it stands).
    #[pyo3(signature = (table, key, value, *, durability = None))]
    fn put(
        &self,
        py: Python<'_>,
        table: &str,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        durability: Option<&str>,
    ) -> PyResult<PyReceipt> {
        let durability = durability_arg(durability)?;
        let op = put_op(table, key, value)?;
        commit_ops(py, &self.store, vec![op], durability)
    }

    /// Deletes `key` (a no-op on the data if it is absent, still one logged transaction).
    #[pyo3(signature = (table, key, *, durability = None))]
    fn delete(
        &self,
        py: Python<'_>,
        table: &str,
        key: &Bound<'_, PyAny>,
        durability: Option<&str>,
    ) -> PyResult<PyReceipt> {
        let durability = durability_arg(durability)?;
        let op = Op {
            table: table.to_owned(),
            key: encode_py_key(key)?,
            value: None,
        };
        commit_ops(py, &self.store, vec![op], durability)
    }

    /// The value under ``key``, or ``default``.
    #[pyo3(signature = (table, key, default = None))]
    pub(crate) fn get<'py>(
        &self,
        py: Python<'py>,
        table: &str,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = encode_py_key(key)?;
        // Decoding runs Python code (a finalizer, a thread switch): `get_with` calls it
        // with none of the store's locks held.
        let found = run(py, || {
            self.store
                .get_with(table, &key, |v| v.map(|bytes| decode_py_value(py, bytes)))
        })?;
        value_or(py, found, default)
    }

    /// Whether ``key`` exists in ``table`` (the value is not read, so not checked).
    fn contains(&self, py: Python<'_>, table: &str, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = encode_py_key(key)?;
        run(py, || self.store.contains(table, &key))
    }

    /// Number of rows in ``table`` (0 for a table never written).
    fn count(&self, py: Python<'_>, table: &str) -> PyResult<u64> {
        run(py, || self.store.table_sum(table)).map(|sum| sum.rows)
    }

    /// Writes every ``(key, value)`` row in one transaction (one log entry). A key given
    /// twice is stored once, with its later row's value (each row is an op of the entry,
    /// so ``changes()`` shows both).
    ///
    /// Args:
    ///     table: the table to write.
    ///     rows: an iterable of ``(key, value)`` tuples, or a mapping.
    ///     progress: ``True`` shows a progress bar (a widget in Jupyter, one line in a
    ///         terminal; its total is ``len(rows)`` when ``rows`` has one); a callable
    ///         is called with the number of rows encoded so far.
    ///     durability: as for ``put``.
    ///
    /// Ctrl-C while the rows are read and encoded raises ``KeyboardInterrupt`` with
    /// nothing written. Once the last row is read the write goes on to commit whatever
    /// happens (a generator's rows are then built into the log record, about 0.2 s per
    /// million rows, before its commit point): an exception raised from then on (Ctrl-C
    /// during the commit, a failing progress callback) carries the receipt as
    /// ``.receipt`` and a note saying so.
    ///
    /// Rows with a length (a list, a dict) past 4,096 stream: each chunk of rows goes
    /// into the tables' open transaction on a thread of its own while the next rows are
    /// encoded. It stays one transaction, invisible until it commits; from its first chunk
    /// it holds the writer lock, so other threads' writes wait for it. A generator's rows
    /// are all read first (its source may be slow), then committed.
    ///
    /// Raises:
    ///     ValueTooLarge: the rows exceed ``max_transaction_bytes``; raised at the row
    ///         that crosses it, before the rest are read.
    ///     RuntimeError: the rows of a streamed load (see above) or its progress
    ///         callback write to this store or close it. A generator's rows are read
    ///         whole first: what it writes commits before them.
    #[pyo3(signature = (table, rows, progress = None, *, durability = None))]
    fn put_many(
        &self,
        py: Python<'_>,
        table: &str,
        rows: &Bound<'_, PyAny>,
        progress: Option<&Bound<'_, PyAny>>,
        durability: Option<&str>,
    ) -> PyResult<PyReceipt> {
        let durability = durability_arg(durability)?;
        crate::store::validate_table_name(table).map_err(|e| super::errors::to_py(py, e))?;
        let rows = if rows.hasattr("items")? {
            rows.call_method0("items")?
        } else {
            rows.clone()
        };
        let total = rows.len().ok();
        let progress = Progress::new(py, progress, &format!("put_many {table}"), || total)?;
        let result = put_rows(
            py,
            &self.store,
            table,
            &rows,
            total,
            progress.callback(),
            durability,
        );
        match (result, progress.finish()) {
            (Ok(receipt), Err(err)) => Err(committed_anyway(py, err, receipt)),
            (result, _) => result,
        }
    }

    /// Deletes every row of ``table`` whose key starts with ``prefix`` as one transaction
    /// (one log entry, one fsync); returns how many rows. A prefix that matches no row
    /// writes no entry and takes no LSN.
    ///
    /// The entry holds a delete per key, so replicas, cache nodes and ``changes()`` see it
    /// like any write (a very large prefix can exceed ``max_transaction_bytes``: then
    /// ``ValueTooLarge`` is raised and nothing is deleted). Writers wait while the rows
    /// are read. Ctrl-C does not stop it once it has the writer lock: the
    /// ``KeyboardInterrupt`` raised when the rows are deleted carries the receipt as
    /// ``.receipt`` and a note saying so.
    ///
    /// Raises:
    ///     TypeError: ``prefix`` is not str or bytes (int keys have no prefixes).
    ///     ValueError: an empty prefix (use :meth:`drop_table`), or a bad table name.
    #[pyo3(signature = (table, prefix, *, durability = None))]
    fn delete_prefix(
        &self,
        py: Python<'_>,
        table: &str,
        prefix: &Bound<'_, PyAny>,
        durability: Option<&str>,
    ) -> PyResult<u64> {
        let durability = durability_arg(durability)?;
        if !(prefix.is_instance_of::<PyString>() || prefix.is_instance_of::<PyBytes>()) {
            return Err(PyTypeError::new_err(format!(
                "prefix must be str or bytes, not {} (int keys have no prefixes: delete \
                 them by key, or use drop_table)",
                prefix.get_type().name()?
            )));
        }
        if prefix.len()? == 0 {
            return Err(PyValueError::new_err(
                "an empty prefix would delete every str (or bytes) key of the table: use \
                 drop_table(name) to delete the whole table",
            ));
        }
        let (lower, upper) = key_bounds(Some(prefix), None, None)?;
        self.delete_range(py, table, lower, &upper, durability)
    }

    /// Deletes the whole table as one transaction (one log entry), like
    /// :meth:`delete_prefix` (Ctrl-C included); it is then no longer listed by
    /// :meth:`tables`. Returns how many rows it held: 0 for a table that does not exist
    /// (dropping is idempotent), which writes no entry and takes no LSN.
    ///
    /// Raises:
    ///     ValueError: a bad table name.
    #[pyo3(signature = (name, *, durability = None))]
    fn drop_table(&self, py: Python<'_>, name: &str, durability: Option<&str>) -> PyResult<u64> {
        let durability = durability_arg(durability)?;
        self.delete_range(py, name, Limit::Unbounded, &Limit::Unbounded, durability)
    }

    /// A view of one table as a mutable mapping (the table need not exist yet).
    fn table<'py>(slf: &Bound<'py, Self>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        slf.py()
            .import("replikv._store")?
            .getattr("Table")?
            .call1((slf, name))
    }

    /// A serializable transaction; use it as a context manager.
    ///
    /// ``durability`` applies to its commit, as for ``put``: ``None`` makes it sync if
    /// any table it writes is sync by default.
    ///
    /// From its first operation until it commits or aborts it holds the store's writer
    /// lock: other writers wait. One collected without commit or abort emits a
    /// ``ResourceWarning`` naming where it was opened.
    #[pyo3(signature = (*, durability = None))]
    fn transaction(&self, py: Python<'_>, durability: Option<&str>) -> PyResult<PyTransaction> {
        Ok(PyTransaction::new(
            py,
            self.store.clone(),
            durability_arg(durability)?,
            &self.transactions,
        ))
    }

    /// Writes collected in memory and committed as ONE transaction (one log entry, one
    /// fsync) when the ``with`` block ends; nothing is written if the block raises::
    ///
    ///     with store.batch() as b:
    ///         b.put("subscribers", "ana@example.com", {"name": "Ana"})
    ///         b.table("events")["e1"] = {"kind": "open"}
    ///     b.receipt.lsn
    ///
    /// Unlike :meth:`transaction` it holds no lock while the block runs and cannot read.
    /// A loop of ``put`` calls pays one fsync per write; a batch pays one.
    #[pyo3(signature = (*, durability = None))]
    fn batch(&self, durability: Option<&str>) -> PyResult<PyBatch> {
        Ok(PyBatch::new(
            self.store.clone(),
            durability_arg(durability)?,
        ))
    }

    /// Names of the tables that hold rows, in order (a dropped table, or one whose
    /// rows were all deleted, is not listed).
    fn tables(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        run(py, || self.store.tables())
    }

    /// Rows of ``table`` in key order (ints, then str, then bytes); ``end`` is exclusive.
    #[pyo3(signature = (table, *, prefix = None, start = None, end = None, reverse = false, limit = None))]
    #[allow(clippy::too_many_arguments)]
    fn scan(
        &self,
        table: &str,
        prefix: Option<&Bound<'_, PyAny>>,
        start: Option<&Bound<'_, PyAny>>,
        end: Option<&Bound<'_, PyAny>>,
        reverse: bool,
        #[pyo3(from_py_with = opt_int)] limit: Option<i128>,
    ) -> PyResult<PyScan> {
        let limit = limit_arg(limit)?;
        let keys = scan_keys(prefix, start, end)?;
        Ok(PyScan::new(self.store.clone(), table, keys, reverse, limit))
    }

    #[pyo3(signature = (table, *, columns = None, prefix = None, start = None, end = None,
                        key_name = "key", batch_rows = 65_536, build = false))]
    /// The rows of ``table`` as Arrow record batches read at one LSN (``Table.to_arrow``).
    ///
    /// By default batches are built as they are read (a first pass finds the schema);
    /// ``build=True`` builds them all now, in one pass when the first 65,536 rows predict
    /// the schema of the whole scan (``Table.to_arrow`` and ``Table.to_pandas`` do).
    /// ``columns`` names the value columns, in order (``[]``: the key column only).
    ///
    /// Raises:
    ///     ValueError: a value column has the key column's name, ``columns`` names a
    ///         column twice, or ``batch_rows`` is 0.
    #[allow(clippy::too_many_arguments)]
    fn arrow_stream(
        &self,
        py: Python<'_>,
        table: &str,
        columns: Option<&Bound<'_, PyAny>>,
        prefix: Option<&Bound<'_, PyAny>>,
        start: Option<&Bound<'_, PyAny>>,
        end: Option<&Bound<'_, PyAny>>,
        key_name: &str,
        #[pyo3(from_py_with = int)] batch_rows: i128,
        build: bool,
    ) -> PyResult<PyArrowStream> {
        owned(py, &self.store)?;
        let request = ExportRequest {
            table: table.to_owned(),
            bounds: key_bounds(prefix, start, end)?,
            columns: names("columns", columns)?,
            key_name: key_name.to_owned(),
            batch_rows: size("batch_rows", batch_rows)?,
            stop: Stop::default(),
        };
        arrow_stream(py, &self.store, request, build)
    }

    #[pyo3(signature = (table, data, *, key, naive = "refuse", batch_rows = None,
                        progress = None, durability = None))]
    /// Writes the rows of Arrow data (anything with ``__arrow_c_stream__``), keyed by the
    /// column ``key``, converted column by column in Rust.
    ///
    /// One transaction, or one per ``batch_rows`` rows (then the receipt is the last one's).
    /// Rows with the same key: the later row wins, silently.
    /// ``naive="utc"`` takes timestamps without a time zone as UTC; by default they are
    /// refused. ``progress=True`` shows a bar whose total is the data's ``num_rows`` (or
    /// ``len()``) when it has one; a callable is called with the rows written so far.
    ///
    /// A key column that ``to_arrow`` packed (keys of mixed types) gives the int, str or
    /// bytes keys it holds. A refused column or cell writes nothing (with ``batch_rows``,
    /// the transactions before the refused row stay).
    ///
    /// Raises:
    ///     TypeError: a cell of a type that cannot be stored (the message names its key and
    ///         field).
    ///     OverflowError: a number out of range (named the same way).
    ///     ValueError: two columns share a name, a value nests deeper than 128 levels
    ///         (named the same way), or a column's name, as a pyarrow, polars or pandas
    ///         source shows it, holds a NUL character (Arrow's C interface would cut it
    ///         short there; a source that shows no names is read as the interface gives
    ///         them).
    #[allow(clippy::too_many_arguments)]
    fn put_arrow(
        &self,
        py: Python<'_>,
        table: &str,
        data: &Bound<'_, PyAny>,
        key: &str,
        naive: &str,
        #[pyo3(from_py_with = opt_int)] batch_rows: Option<i128>,
        progress: Option<Bound<'_, PyAny>>,
        durability: Option<&str>,
    ) -> PyResult<PyReceipt> {
        let load = Load::new(table, key, naive, batch_rows, progress, durability)?;
        put_arrow(py, &self.store, data, &load)
    }

    #[pyo3(signature = (table, df, *, key = None, naive = "refuse", batch_rows = None,
                        progress = None, durability = None))]
    /// Writes the rows of a pandas DataFrame keyed by the column ``key`` (the index if
    /// None); the other columns become each row's dict. A cell that is NaN, None, ``pd.NA``
    /// or ``pd.NaT`` is stored as None (a NaN inside a list or dict cell stays NaN); a numpy
    /// array in a cell (a parquet list column) as a list. Rows with the same key: the later
    /// row wins, silently. Needs ``pip install 'replikv[pandas]'``. ``progress=True``
    /// shows a bar out of the frame's rows; a callable is called with the rows so far.
    ///
    /// Raises:
    ///     ImportError: pandas or pyarrow is not installed.
    ///     TypeError: a cell of a type that cannot be stored, or a naive datetime (the
    ///         message names its key and field); a key of another type than the keys
    ///         before it (the message names its row and the key column).
    ///     OverflowError: a number out of range (named the same way).
    ///     ValueError: two columns share a name, a value nests deeper than 128 levels, or
    ///         a str cannot be stored (named the same way).
    #[allow(clippy::too_many_arguments)]
    fn put_dataframe(
        &self,
        py: Python<'_>,
        table: &str,
        df: &Bound<'_, PyAny>,
        key: Option<&str>,
        naive: &str,
        #[pyo3(from_py_with = opt_int)] batch_rows: Option<i128>,
        progress: Option<Bound<'_, PyAny>>,
        durability: Option<&str>,
    ) -> PyResult<PyReceipt> {
        let (data, key, objects, order): (Bound<'_, PyAny>, String, _, Vec<String>) = py
            .import("replikv._frames")?
            .call_method1("dataframe_columns", (df, key))?
            .extract()?;
        let mut load = Load::new(table, &key, naive, batch_rows, progress, durability)?;
        load.objects = objects;
        load.order = Some(order);
        put_arrow(py, &self.store, &data, &load)
    }

    #[pyo3(signature = (since = 0, limit = None, *, tables = None, since_time = None,
                        until = None))]
    /// Entries of the change log with LSN greater than ``since``, read lazily.
    ///
    /// Args:
    ///     since: entries after this LSN.
    ///     limit: at most this many entries (after filtering).
    ///     tables: only ops of these tables; an entry with none of them is skipped.
    ///     since_time: only entries committed at or after this aware datetime, compared at
    ///         the millisecond commit times are kept to (a write made just after it, in
    ///         the same millisecond, is kept).
    ///     until: an aware datetime (entries committed before its millisecond, so that
    ///         ``until=t`` and ``since_time=t`` split the log with no overlap) or an LSN
    ///         (entries up to and including it, so that ``changes(since=a, until=b)`` and
    ///         ``changes(since=b)`` do).
    ///
    /// Raises:
    ///     LogTruncated: ``since`` is older than the retained log (unless ``since_time`` is
    ///         later than the oldest retained entry's commit: the dropped entries, all
    ///         committed no later, could not match).
    ///     TypeError: a naive datetime, or ``until`` neither a datetime nor an int.
    fn changes(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = int)] since: i128,
        #[pyo3(from_py_with = opt_int)] limit: Option<i128>,
        tables: Option<&Bound<'_, PyAny>>,
        since_time: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyChanges> {
        let tables = names("tables", tables)?;
        let request = feed_request(py, &self.store, since, limit, tables, since_time, until)?;
        Ok(PyChanges::new(self.store.clone(), request))
    }

    /// The oldest LSN the change log still holds (``changes(since=oldest_lsn - 1)``).
    #[getter]
    fn oldest_lsn(&self, py: Python<'_>) -> PyResult<u64> {
        run(py, || self.store.oldest_lsn())
    }

    /// Removes whole log segments that hold only entries before ``lsn``.
    ///
    /// Never removes what the tables have not durably checkpointed; the store checkpoints
    /// first. Returns how many segments were removed. Readers asking for older entries
    /// get ``LogTruncated``.
    fn drop_log_before(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = int)] lsn: i128,
    ) -> PyResult<usize> {
        let lsn = non_negative("lsn", lsn)?;
        run_detached(py, || self.store.drop_log_before(lsn))
    }

    /// Rows per table and bytes on disk (log, tables, other files), the oldest retained
    /// LSN and its commit time, and the last LSN.
    fn stats(&self, py: Python<'_>) -> PyResult<PyStoreStats> {
        let stats = run_detached(py, || self.store.stats())?;
        PyStoreStats::new(py, self.store.path().display().to_string(), &stats)
    }

    /// Checkpoints, drops the log the retention policy lets go (and removes the
    /// dropped segments before it returns, where they are otherwise cut down gently in
    /// the background), then gives the free pages of the tables file back to the file
    /// system (after deletes and updates); returns the bytes reclaimed from the tables
    /// file.
    ///
    /// Writers wait while it runs; readers wait only while it runs and never get an error
    /// or a partial state. A long read holds the tables: an `ArrowStream` from
    /// `to_arrow_batches()` (until it is deleted), a snapshot sent to a replica, a scrub.
    /// Compaction then retries, and writers run between its attempts.
    ///
    /// Raises:
    ///     ReplikvError: long reads kept the tables busy for a minute; nothing was
    ///         changed.
    ///     KeyboardInterrupt: Ctrl-C while it waits for another thread's transaction to
    ///         end, or between its attempts: the tables file was not compacted.
    fn compact(&self, py: Python<'_>) -> PyResult<u64> {
        // Each attempt takes the writer lock: a transaction of another thread, begun before
        // the first or between two of them, is waited for interruptibly. The minute of
        // attempts starts once the first has the lock: it bounds the wait for long reads.
        wait_for_writer(py, &self.store)?;
        let mut attempts = CompactionAttempts::new();
        loop {
            if let Some(compaction) = run_detached(py, || self.store.try_compact(&mut attempts))? {
                return Ok(compaction.reclaimed());
            }
            sleep_interruptibly(py, attempts.pause())?;
            wait_for_writer(py, &self.store)?;
        }
    }

    /// Per-table checksums and row counts at one LSN, read atomically (O(tables)).
    fn checksum(&self, py: Python<'_>) -> PyResult<PyChecksum> {
        let sums = run(py, || self.store.checksum())?;
        PyChecksum::new(py, sums)
    }

    /// Closes this handle: its later use raises ``StoreClosed``, and the transactions
    /// opened through it that have not ended are aborted (their writer lock is released
    /// at once). A write another thread made through it that was already committing
    /// when ``close()`` was called may still commit and return its receipt (the other
    /// handles' writes never fail for it). With the last handle the store is flushed,
    /// checkpointed and every file released; closing twice is harmless.
    ///
    /// Raises:
    ///     ReplicationError: this is the last handle of a store that a ``Primary`` serves
    ///         (close the ``Primary`` first) or that a ``Replica`` follows into (close the
    ///         ``Replica``, which closes its store): the store stays open.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        // Closed under a Primary or a Replica, the store stopped them while their status
        // still said they streamed. (A forked child's copy is refused as such first.)
        not_inherited(py, &self.store)?;
        if let (false, Some(user)) = (self.store.is_closed(), self.store.in_use_by()) {
            let reason = format!("store {} stays open: {user}", self.store.path().display());
            return Err(to_py(py, ReplicationError::Refused { reason }.into()));
        }
        run_detached(py, || {
            let closed = self.store.close();
            // Only a close refused from inside a bulk load leaves the handle open.
            if self.store.is_closed() {
                self.transactions.abort_all();
            }
            closed
        })
    }

    // A closed handle is refused at once: the block would only fail at its first use.
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let py = slf.py();
        slf.get()
            .store
            .check_usable()
            .map_err(|err| to_py(py, err))?;
        Ok(slf)
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let this = slf.get();
        let class = slf.get_type().name()?;
        let path = quoted(&this.store.path().display().to_string());
        if let Err(err) = this.store.check_process() {
            return Ok(format!("<{class} {path}: {err}>"));
        }
        if this.store.is_closed() {
            return Ok(format!("<{class} {path} closed>"));
        }
        Ok(format!(
            "<{class} {path} last_lsn={} epoch={}>",
            this.store.readable_lsn(),
            this.store.epoch()
        ))
    }

    /// Whether writes are refused: the store belongs to a replica (see :meth:`detach`).
    #[getter]
    fn read_only(&self) -> bool {
        self.store.read_only_reason().is_some()
    }

    /// Checks every stored row's CRC, that a lookup of its key finds it (as a read
    /// would), and each table's rows against its recorded stats.
    ///
    /// Pending writes move into the tables first; the check then runs on a read snapshot,
    /// so writers are not held while it reads.
    ///
    /// Args:
    ///     progress: ``True`` shows a progress bar; a callable is called with the number
    ///         of rows checked so far.
    ///
    /// Returns:
    ///     A :class:`ScrubReport`; ``report.ok`` is false if anything is damaged. To
    ///     recover a damaged store, re-seed it from a replica (see the README).
    ///
    /// Raises:
    ///     KeyboardInterrupt: Ctrl-C stops the scrub (so does an exception raised by the
    ///         progress callback).
    #[pyo3(signature = (*, progress = None))]
    fn scrub(
        &self,
        py: Python<'_>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<super::scrub::PyScrubReport> {
        super::scrub::scrub(py, &self.store, progress)
    }

    /// Makes a replica's store at ``path`` a standalone, writable store that can never
    /// follow its primary again. Returns False if it was not a replica's store.
    ///
    /// Raises:
    ///     StoreLockedError: the store is open, in this process or another: a ``Replica``
    ///         runs on the directory (stop it first), or a ``Store`` handle holds it.
    ///     StoreNotFoundError: there is no store at ``path``.
    #[staticmethod]
    fn detach(py: Python<'_>, path: &Bound<'_, PyAny>) -> PyResult<bool> {
        let path: PathBuf = path.extract()?;
        run_detached(py, || Store::detach(&path))
    }
}

impl PyStore {
    /// The Python object of a store handle.
    pub(crate) fn of(store: Store) -> Self {
        Self {
            store,
            transactions: OpenTransactions::default(),
        }
    }

    /// Deletes the rows of `table` in a key range as one transaction (see
    /// [`Store::delete_range`]); returns how many once the write has its durability.
    fn delete_range(
        &self,
        py: Python<'_>,
        table: &str,
        lower: Limit<Vec<u8>>,
        upper: &Limit<Vec<u8>>,
        durability: Option<Durability>,
    ) -> PyResult<u64> {
        wait_for_writer(py, &self.store)?;
        let (committed, deleted) = run_detached(py, || {
            self.store.delete_range(table, lower, upper, durability)
        })?;
        await_receipt(py, &committed)?;
        Ok(deleted)
    }
}

/// A stored value (decoded, or the error decoding it), or the caller's default.
pub(crate) fn value_or<'py>(
    py: Python<'py>,
    found: Option<PyResult<Bound<'py, PyAny>>>,
    default: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    match found {
        Some(value) => value,
        None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
    }
}
