//! `Store.stats()`: what a store holds and takes on disk, as a typed report.

use crate::python::display::quoted;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::display::{html, plain};
use super::value::ms_to_datetime;
use crate::store::StoreStats;

/// Rows per table and bytes on disk of a store, from :meth:`Store.stats`.
///
/// Sizes are allocated bytes (``st_blocks * 512``, as ``du`` counts them), not apparent
/// lengths: log segments are preallocated. They add up to every file in the directory.
#[pyclass(frozen, get_all, module = "replikv._core", name = "StoreStats")]
pub(crate) struct PyStoreStats {
    /// The store's directory.
    pub path: String,
    /// Row count of each table.
    pub tables: Py<PyDict>,
    /// Bytes of the log's segment files.
    pub log_bytes: u64,
    /// Bytes of the tables file.
    pub tables_bytes: u64,
    /// Bytes of every other file (lock, replication slots, staging areas).
    pub other_bytes: u64,
    /// ``log_bytes + tables_bytes + other_bytes``.
    pub total_bytes: u64,
    /// The oldest LSN the log retains.
    pub oldest_lsn: u64,
    /// Commit time of that entry (aware UTC), ``None`` if the log holds no entry.
    pub oldest_time: Option<Py<PyAny>>,
    /// The last LSN readers see (durable; on a replica, its own fdatasync may follow).
    pub last_lsn: u64,
}

impl PyStoreStats {
    pub(crate) fn new(py: Python<'_>, path: String, stats: &StoreStats) -> PyResult<Self> {
        let tables = PyDict::new(py);
        for (name, rows) in &stats.rows {
            tables.set_item(name, rows)?;
        }
        let oldest_time = stats
            .oldest_time_ms
            .map(|ms| ms_to_datetime(py, ms).map(Bound::unbind))
            .transpose()?;
        Ok(Self {
            path,
            tables: tables.unbind(),
            log_bytes: stats.log_bytes,
            tables_bytes: stats.tables_bytes,
            other_bytes: stats.other_bytes,
            total_bytes: stats.total_bytes(),
            oldest_lsn: stats.oldest_lsn,
            oldest_time,
            last_lsn: stats.last_lsn,
        })
    }
}

#[pymethods]
impl PyStoreStats {
    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let rows: u64 = self
            .tables
            .bind(py)
            .values()
            .iter()
            .map(|rows| rows.extract::<u64>())
            .sum::<PyResult<u64>>()?;
        let tables = self.tables.bind(py).len();
        let log = if self.last_lsn < self.oldest_lsn {
            "no log entries".to_owned()
        } else {
            format!("lsn {}..{}", self.oldest_lsn, self.last_lsn)
        };
        Ok(format!(
            "StoreStats(path={}, rows={rows} in {tables} table{}, total={} (log {}, tables {}, other {}), {log})",
            quoted(&self.path),
            if tables == 1 { "" } else { "s" },
            crate::human::bytes(self.total_bytes),
            crate::human::bytes(self.log_bytes),
            crate::human::bytes(self.tables_bytes),
            crate::human::bytes(self.other_bytes),
        ))
    }

    /// The stats as a plain dict of JSON-able values (`oldest_time` in ISO 8601), for
    /// logging, JSON or a row of a data frame.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("path", &self.path)?;
        dict.set_item("tables", self.tables.bind(py).copy()?)?;
        dict.set_item("log_bytes", self.log_bytes)?;
        dict.set_item("tables_bytes", self.tables_bytes)?;
        dict.set_item("other_bytes", self.other_bytes)?;
        dict.set_item("total_bytes", self.total_bytes)?;
        dict.set_item("oldest_lsn", self.oldest_lsn)?;
        dict.set_item("oldest_time", &self.oldest_time)?;
        dict.set_item("last_lsn", self.last_lsn)?;
        plain(&dict)
    }
}
