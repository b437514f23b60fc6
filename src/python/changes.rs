//! `Changes`, `Change` and `Ops`: the change feed, read lazily. A `Change` keeps its entry's
//! stored bytes; its `ops` decode one op at a time, when used.

use crate::python::display::quoted_list;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use pyo3::exceptions::{PyIndexError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDateTime, PyInt, PyList, PySlice};

use super::args::{int, limit as limit_arg, non_negative};
use super::errors::{owned, run, run_detached, to_py};
use super::feed_arrow::PyChangeStream;
use super::types::PyOp;
use super::value::{datetime_to_unix, ms_to_datetime, Location};
use crate::arrow::{FeedPlan, FEED_BATCH_ROWS};
use crate::feed::{Feed, FeedEntry, FeedRequest};
use crate::store::Store;

/// The millisecond since the Unix epoch that an aware datetime argument falls in: commit
/// times are kept to the millisecond, and compared at it (see [`FeedRequest::since_ms`]).
pub(crate) fn instant_ms(name: &str, value: &Bound<'_, PyAny>) -> PyResult<i64> {
    if value.cast::<PyDateTime>().is_err() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an aware datetime, not {}",
            value.get_type().name()?
        )));
    }
    if value.call_method0("utcoffset")?.is_none() {
        return Err(PyTypeError::new_err(format!(
            "{name} is a naive datetime, which is ambiguous: give it a timezone (for example \
             timezone.utc)"
        )));
    }
    let (secs, nanos) = datetime_to_unix(value, false, false)
        .map_err(|r| r.into_err(value.py(), &Location::Value))?;
    Ok(secs * 1_000 + i64::from(nanos / 1_000_000))
}

/// `until=`: an aware datetime (entries committed before it) or an LSN (entries up to and
/// including it). Returns `(last LSN, until millisecond)`.
pub(crate) fn until_arg(until: Option<&Bound<'_, PyAny>>) -> PyResult<(u64, Option<i64>)> {
    let Some(until) = until else {
        return Ok((u64::MAX, None));
    };
    if until.cast::<PyDateTime>().is_ok() {
        return Ok((u64::MAX, Some(instant_ms("until", until)?)));
    }
    // An LSN is taken as `since=` takes one: an int or what stands for one (`__index__`:
    // a numpy int such as `df["lsn"].max()`), never a bool.
    let int_like =
        until.cast::<PyInt>().is_ok() || until.hasattr(intern!(until.py(), "__index__"))?;
    if int_like && !until.is_instance_of::<PyBool>() {
        let lsn = non_negative("until", int(until)?)?;
        return Ok((lsn, None));
    }
    Err(PyTypeError::new_err(format!(
        "until must be an aware datetime or an LSN (int), not {}",
        until.get_type().name()?
    )))
}

/// The request behind `Store.changes(...)`: its LSN range is fixed now, at the visible LSN.
pub(crate) fn feed_request(
    py: Python<'_>,
    store: &Store,
    since: i128,
    limit: Option<i128>,
    tables: Option<Vec<String>>,
    since_time: Option<&Bound<'_, PyAny>>,
    until: Option<&Bound<'_, PyAny>>,
) -> PyResult<FeedRequest> {
    let since = non_negative("since", since)?;
    let (until_lsn, until_ms) = until_arg(until)?;
    // A replica applies before its fdatasync, and the log is read up to what is durable:
    // the feed waits for that sync, so that it holds every entry its readers see.
    let readable = if store.readable_lsn() > store.last_lsn() {
        run_detached(py, || store.sync_replicated())?
    } else {
        store.last_lsn()
    };
    let mut request = FeedRequest::new(since, until_lsn.min(readable));
    request.limit = limit_arg(limit)?;
    request.since_ms = since_time
        .map(|t| instant_ms("since_time", t))
        .transpose()?;
    request.until_ms = until_ms;
    if let Some(tables) = tables {
        for table in &tables {
            crate::store::validate_table_name(table).map_err(|e| to_py(py, e))?;
        }
        request.tables = Some(tables.into_iter().collect());
    }
    let oldest = run(py, || store.oldest_lsn())?;
    if since.saturating_add(1) < oldest {
        // Commit times never go back along the log: every dropped entry was committed no
        // later than the oldest kept one. If that one is older than `since_time`, the
        // filter would skip every dropped entry anyway, and the feed starts at the log.
        if let Some(since_ms) = request.since_ms {
            let oldest_ms =
                run(py, || store.commit_time_ms(oldest))?.and_then(|ms| i64::try_from(ms).ok());
            if oldest_ms.is_some_and(|ms| ms < since_ms) {
                request.since = oldest - 1;
                return Ok(request);
            }
        }
        return Err(super::errors::raise(
            py,
            "LogTruncated",
            (format!(
                "log entries after LSN {since} are no longer retained (oldest retained LSN is \
                 {oldest})"
            ),),
        ));
    }
    Ok(request)
}

/// An iterator of :class:`Change` entries, oldest first, read lazily.
///
/// Its LSN range is fixed when ``Store.changes`` is called (up to the LSN visible then);
/// entries committed later are read by a new ``changes(since=...)``.
#[pyclass(frozen, module = "replikv._core", name = "Changes")]
pub(crate) struct PyChanges {
    store: Store,
    request: FeedRequest,
    feed: Mutex<Feed>,
}

impl PyChanges {
    pub(crate) fn new(store: Store, request: FeedRequest) -> Self {
        Self {
            feed: Mutex::new(Feed::new(store.clone(), request.clone())),
            store,
            request,
        }
    }
}

#[pymethods]
impl PyChanges {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PyChange>> {
        owned(py, &self.store)?;
        let mut feed = self
            .feed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = run(py, || feed.next_entry())?;
        drop(feed);
        entry.map(|entry| PyChange::new(py, entry)).transpose()
    }

    /// The entries as Arrow record batches, one row per op; no pyarrow needed.
    ///
    /// Covers the whole range of the call, whatever iteration has consumed. Columns:
    /// ``lsn`` and ``epoch`` (uint64), ``timestamp`` (timestamp[us, UTC], the commit
    /// time), ``table`` (string), ``key`` (string, int64 or binary when all keys have that
    /// type, else packed MessagePack), ``op`` (``'put'`` or ``'delete'``), ``value``
    /// (packed MessagePack, null for a delete).
    ///
    /// The entries are read as the stream is: if retention drops them first, or the store
    /// is closed, the reader (pyarrow, polars, DuckDB) raises an error of its own whose
    /// message gives the cause (pyarrow: ``ArrowInvalid: External error: log entries
    /// after LSN ... are no longer retained``). ``to_arrow()`` and ``to_pandas()`` raise
    /// replikv's exception instead.
    fn to_arrow_batches(&self, py: Python<'_>) -> PyResult<PyChangeStream> {
        owned(py, &self.store)?;
        let (store, request) = (self.store.clone(), self.request.clone());
        let plan = run_detached(py, move || FeedPlan::new(store, request))?;
        Ok(PyChangeStream::new(plan, FEED_BATCH_ROWS))
    }

    /// The entries as a ``pyarrow.Table``, one row per op (see ``to_arrow_batches``).
    ///
    /// Raises:
    ///     ImportError: pyarrow is not installed (``pip install 'replikv[arrow]'``).
    ///     LogTruncated: retention dropped entries of the range before they were read.
    ///     StoreClosed: the store was closed before they were read.
    fn to_arrow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let pa = py
            .import("replikv._frames")?
            .call_method1("require", ("pyarrow", "arrow", "to_arrow"))?;
        let stream = Bound::new(py, self.to_arrow_batches(py)?)?;
        PyChangeStream::read(&stream, |stream| pa.call_method1("table", (stream,)))
    }

    /// The entries as a pandas DataFrame, one row per op, values decoded into Python
    /// objects (``None`` for deletes).
    ///
    /// Raises:
    ///     ImportError: pandas is not installed (``pip install 'replikv[pandas]'``).
    ///     LogTruncated: retention dropped entries of the range before they were read.
    ///     StoreClosed: the store was closed before they were read.
    fn to_pandas<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let frames = py.import("replikv._frames")?;
        frames.call_method1("require", ("pandas", "pandas", "to_pandas"))?;
        let stream = Bound::new(py, self.to_arrow_batches(py)?)?;
        PyChangeStream::read(&stream, |stream| {
            frames.call_method1("frame_from_stream", (stream, "to_pandas", false))
        })
    }

    fn __repr__(&self) -> String {
        let mut parts = vec![format!(
            "after LSN {} up to LSN {}",
            self.request.since, self.request.last
        )];
        if let Some(tables) = &self.request.tables {
            let mut names: Vec<&str> = tables.iter().map(String::as_str).collect();
            names.sort_unstable();
            parts.push(format!("tables={}", quoted_list(names)));
        }
        if self.request.since_ms.is_some() || self.request.until_ms.is_some() {
            parts.push("filtered by commit time".to_owned());
        }
        format!("<Changes {}>", parts.join(", "))
    }
}

/// One committed transaction, read back from the change log.
#[pyclass(frozen, get_all, module = "replikv._core", name = "Change")]
pub(crate) struct PyChange {
    /// The entry's log sequence number.
    pub lsn: u64,
    /// The epoch of the primary that committed it.
    pub epoch: u64,
    /// Commit time, an aware UTC datetime (millisecond precision).
    pub timestamp: Py<PyAny>,
    /// Its ops, a read-only sequence that decodes each op when it is used.
    pub ops: Py<PyOps>,
}

impl PyChange {
    pub(crate) fn new(py: Python<'_>, entry: FeedEntry) -> PyResult<Self> {
        let timestamp = ms_to_datetime(py, entry.timestamp_ms)?.unbind();
        Ok(Self {
            lsn: entry.lsn,
            epoch: entry.epoch,
            timestamp,
            ops: Py::new(py, PyOps { entry })?,
        })
    }
}

#[pymethods]
impl PyChange {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let when = self.timestamp.bind(py).call_method0("isoformat")?;
        let count = self.ops.get().entry.len();
        Ok(format!(
            "Change(lsn={}, epoch={}, timestamp='{when}', ops=<{count} op{}>)",
            self.lsn,
            self.epoch,
            if count == 1 { "" } else { "s" }
        ))
    }
}

/// The ops of a :class:`Change`: ``len``, indexing (slices give a list), iteration.
///
/// It holds the entry's stored bytes and decodes one op at a time, so iterating a
/// million-op entry never holds a million ``Op`` objects. Equal to a list of the same ops.
#[pyclass(frozen, sequence, module = "replikv._core", name = "Ops")]
pub(crate) struct PyOps {
    entry: FeedEntry,
}

impl PyOps {
    fn op(&self, py: Python<'_>, index: usize) -> PyResult<PyOp> {
        let op = self.entry.op(index).map_err(|err| to_py(py, err.into()))?;
        PyOp::from_ref(py, op)
    }
}

#[pymethods]
impl PyOps {
    fn __len__(&self) -> usize {
        self.entry.len()
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let len = self.entry.len();
        if let Ok(slice) = index.cast::<PySlice>() {
            let indices = slice.indices(isize::try_from(len).unwrap_or(isize::MAX))?;
            let list = PyList::empty(py);
            let mut at = indices.start;
            for _ in 0..indices.slicelength {
                // `indices` keeps every position it gives within 0..len.
                list.append(self.op(py, at.unsigned_abs())?)?;
                at += indices.step;
            }
            return Ok(list.into_any());
        }
        let index: isize = index.extract()?;
        let at = if index < 0 {
            index + isize::try_from(len).unwrap_or(isize::MAX)
        } else {
            index
        };
        match usize::try_from(at) {
            Ok(at) if at < len => Ok(Bound::new(py, self.op(py, at)?)?.into_any()),
            _ => Err(PyIndexError::new_err("op index out of range")),
        }
    }

    fn __iter__(slf: Py<Self>) -> PyOpsIter {
        PyOpsIter {
            ops: slf,
            next: AtomicUsize::new(0),
        }
    }

    /// Equal to another sequence of the same ops in the same order (a list, for example).
    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(len) = other.len() else {
            return Ok(false);
        };
        if len != self.entry.len() || other.is_instance_of::<pyo3::types::PyString>() {
            return Ok(false);
        }
        for (index, theirs) in other.try_iter()?.enumerate() {
            if !Bound::new(py, self.op(py, index)?)?.eq(theirs?)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        const SHOWN: usize = 3;
        let len = self.entry.len();
        let mut parts = Vec::new();
        for index in 0..len.min(SHOWN) {
            parts.push(Bound::new(py, self.op(py, index)?)?.repr()?.to_string());
        }
        if len > SHOWN {
            parts.push(format!("... {} more", len - SHOWN));
        }
        Ok(format!(
            "<Ops of LSN {}: {len} op{} [{}]>",
            self.entry.lsn,
            if len == 1 { "" } else { "s" },
            parts.join(", ")
        ))
    }
}

/// An iterator over the ops of a change, decoding one at a time.
#[pyclass(frozen, module = "replikv._core", name = "OpsIterator")]
pub(crate) struct PyOpsIter {
    ops: Py<PyOps>,
    next: AtomicUsize,
}

#[pymethods]
impl PyOpsIter {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PyOp>> {
        let ops = self.ops.get();
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        if index >= ops.entry.len() {
            // Stay exhausted whatever other threads do.
            self.next.store(ops.entry.len(), Ordering::Relaxed);
            return Ok(None);
        }
        ops.op(py, index).map(Some)
    }
}
