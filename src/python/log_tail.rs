//! `LogTail`: the change log of a store directory read without opening the store, so that
//! `replikv changes --follow` can tail a store another process holds.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;

use super::args::{int, limit as limit_arg, names, non_negative, opt_int};
use super::changes::PyChange;
use super::errors::{run_detached, to_py};
use crate::feed::{FeedEntry, FeedRequest};
use crate::log::LogTail;

/// Entries read from the log at a time.
const READ_ENTRIES: usize = 256;

/// The change log of a store directory, read without opening the store.
///
/// It takes no lock and writes nothing in the directory, so it reads a store that another
/// process holds and writes. It hands out only durable entries, in LSN order, each once:
/// it stops before a record still being written and syncs what it read before handing it
/// out. Used by ``replikv changes``.
///
/// Args:
///     path: The store's directory.
///     since: Entries after this LSN.
///     tables: Only ops of these tables; entries with none are skipped (``None``: all).
///
/// Raises:
///     LogTruncated: Entries after ``since`` are no longer retained.
///     OSError: The store's log directory cannot be read.
#[pyclass(frozen, module = "replikv._core", name = "LogTail")]
pub(crate) struct PyLogTail {
    tail: Mutex<LogTail>,
    request: FeedRequest,
}

#[pymethods]
impl PyLogTail {
    #[new]
    #[pyo3(signature = (path, since = 0, tables = None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        #[pyo3(from_py_with = int)] since: i128,
        tables: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let since = non_negative("since", since)?;
        let tables = names("tables", tables)?;
        let mut request = FeedRequest::new(since, u64::MAX);
        if let Some(tables) = tables {
            for table in &tables {
                crate::store::validate_table_name(table).map_err(|e| to_py(py, e))?;
            }
            request.tables = Some(tables.into_iter().collect());
        }
        let mut log_dir = path;
        log_dir.push("log");
        let tail = run_detached(py, move || LogTail::open(&log_dir, since))?;
        Ok(Self {
            tail: Mutex::new(tail),
            request,
        })
    }

    /// The LSN of the next entry it will read.
    #[getter]
    fn next_lsn(&self) -> u64 {
        self.lock().next_lsn()
    }

    /// The next entries that are durable in the log now, oldest first, without waiting.
    ///
    /// Args:
    ///     limit: At most this many (``None``: up to 256 at a time).
    ///
    /// Returns:
    ///     A list of :class:`Change`; empty when no further entry is durable yet.
    ///
    /// Raises:
    ///     LogTruncated: Retention removed the next entries, or a snapshot replaced the log.
    ///     CorruptionError: A gap in the log's LSNs.
    #[pyo3(signature = (limit = None))]
    fn read(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = opt_int)] limit: Option<i128>,
    ) -> PyResult<Vec<PyChange>> {
        let limit = limit_arg(limit)?.min(READ_ENTRIES);
        let request = &self.request;
        let selected = run_detached(py, || {
            let mut tail = self.lock();
            let mut selected: Vec<FeedEntry> = Vec::new();
            // Entries the filter skips do not count: read on until one is kept or the
            // log has no more (asking only for what is missing, so none is read past).
            while selected.is_empty() && limit > 0 {
                let raw = tail.read(limit)?;
                let caught_up = raw.len() < limit;
                for entry in raw {
                    selected.extend(request.select(entry)?);
                }
                if caught_up {
                    break;
                }
            }
            Ok(selected)
        })?;
        selected
            .into_iter()
            .map(|entry| PyChange::new(py, entry))
            .collect()
    }

    fn __repr__(&self) -> String {
        format!("<LogTail next_lsn={}>", self.next_lsn())
    }
}

impl PyLogTail {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogTail> {
        // A poisoned lock only means a read panicked (reported as a bug): the position
        // stays consistent, as it moves one whole record at a time.
        self.tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
