//! `Store.scrub()`: its report types, and the run that stays interruptible and shows progress.

use crate::python::display::{html, quoted};
use std::fmt::Write;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use super::committing::wait_for_writer;
use super::errors::run_detached;
use super::progress::Progress;
use super::value::decode_py_key;
use crate::store::{ScrubReport, Store};

/// One damaged row, or a table whose recorded stats disagree with its rows (`key` is None).
#[pyclass(frozen, get_all, module = "replikv._core", name = "Damage")]
pub(crate) struct PyDamage {
    /// The table the damage is in.
    pub table: String,
    /// The damaged row's key; ``None`` for damage to the table as a whole.
    pub key: Option<Py<PyAny>>,
    /// What is wrong, in words.
    pub reason: String,
}

#[pymethods]
impl PyDamage {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let key = match &self.key {
            Some(key) => key.bind(py).repr()?.to_string(),
            None => "None".to_owned(),
        };
        Ok(format!(
            "Damage(table={}, key={key}, reason={})",
            quoted(&self.table),
            quoted(&self.reason)
        ))
    }

    /// The damage as a plain dict (`table`, `key`, `reason`).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("table", &self.table)?;
        dict.set_item("key", &self.key)?;
        dict.set_item("reason", &self.reason)?;
        Ok(dict)
    }
}

/// What `Store.scrub()` found: `ok` is true when no row is damaged. (A scrub that was
/// stopped raises instead of returning a partial report.)
#[pyclass(frozen, get_all, module = "replikv._core", name = "ScrubReport")]
pub(crate) struct PyScrubReport {
    /// The store's directory.
    pub path: String,
    /// The LSN of the state that was checked.
    pub lsn: u64,
    /// Nothing is damaged.
    pub ok: bool,
    /// Rows read and checked, over every table.
    pub rows_checked: u64,
    /// Rows checked per table.
    pub tables: Py<PyDict>,
    /// Every problem found, in table and key order.
    pub damaged: Py<PyList>,
}

impl PyScrubReport {
    fn new(py: Python<'_>, store: &Store, report: &ScrubReport) -> PyResult<Self> {
        let tables = PyDict::new(py);
        for (name, rows) in &report.tables {
            tables.set_item(name, rows)?;
        }
        let damaged = PyList::empty(py);
        for damage in &report.damaged {
            // A key too damaged to decode is shown as its raw bytes.
            let key = damage.key.as_deref().map(|key| {
                decode_py_key(py, key)
                    .unwrap_or_else(|_| PyBytes::new(py, key).into_any())
                    .unbind()
            });
            damaged.append(PyDamage {
                table: damage.table.clone(),
                key,
                reason: damage.reason.clone(),
            })?;
        }
        Ok(Self {
            path: store.path().display().to_string(),
            lsn: report.lsn,
            ok: report.ok(),
            rows_checked: report.rows_checked(),
            tables: tables.unbind(),
            damaged: damaged.unbind(),
        })
    }
}

/// How many problems `repr` lists before it summarises the rest.
const REPR_DAMAGE: usize = 5;

#[pymethods]
impl PyScrubReport {
    /// An HTML table of the verdict, the rows checked per table and every problem, for
    /// Jupyter.
    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let damaged = self.damaged.bind(py);
        let tables = self.tables.bind(py).len();
        let mut out = format!(
            "<ScrubReport {} {}: {} rows in {tables} table{} checked at LSN {}",
            quoted(&self.path),
            if self.ok { "ok" } else { "DAMAGED" },
            self.rows_checked,
            if tables == 1 { "" } else { "s" },
            self.lsn
        );
        if !damaged.is_empty() {
            let _ = write!(out, ", {} problem(s):", damaged.len());
            for damage in damaged.iter().take(REPR_DAMAGE) {
                let _ = write!(out, "\n  {}", damage.repr()?);
            }
            if damaged.len() > REPR_DAMAGE {
                let _ = write!(out, "\n  ... and {} more", damaged.len() - REPR_DAMAGE);
            }
        }
        out.push('>');
        Ok(out)
    }

    /// The report as plain dicts and lists (for JSON or pandas).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("path", &self.path)?;
        dict.set_item("lsn", self.lsn)?;
        dict.set_item("ok", self.ok)?;
        dict.set_item("rows_checked", self.rows_checked)?;
        dict.set_item("tables", self.tables.bind(py).copy()?)?;
        let damaged = PyList::empty(py);
        for damage in self.damaged.bind(py).iter() {
            damaged.append(damage.cast::<PyDamage>()?.get().to_dict(py)?)?;
        }
        dict.set_item("damaged", damaged)?;
        Ok(dict)
    }
}

/// Runs a scrub without the GIL. `progress` is `True` (a progress bar), a callable (called
/// with the rows checked so far) or None; Ctrl-C stops the scrub either way.
pub(crate) fn scrub(
    py: Python<'_>,
    store: &Store,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyScrubReport> {
    // Its snapshot is taken under the writer lock: a long transaction of another thread
    // is waited for interruptibly.
    wait_for_writer(py, store)?;
    let description = format!("scrub {}", store.path().display());
    let progress = Progress::new(py, progress, &description, || {
        store
            .checksum()
            .map_or(0, |sums| sums.tables.values().map(|s| s.rows).sum::<u64>())
    })?;
    let callback_ref = progress.callback().map(|c| c.clone().unbind());
    let mut stopped: Option<PyErr> = None;
    let report = run_detached(py, || {
        store.scrub(&mut |checked| {
            // Every SCRUB_PROGRESS_EVERY rows: cheap next to reading them.
            Python::attach(|py| {
                let outcome = py.check_signals().and_then(|()| match &callback_ref {
                    Some(callback) => callback.bind(py).call1((checked,)).map(drop),
                    None => Ok(()),
                });
                match outcome {
                    Ok(()) => true,
                    Err(err) => {
                        stopped = Some(err);
                        false
                    }
                }
            })
        })
    });
    progress.finish()?;
    let report = report?;
    if let Some(err) = stopped {
        return Err(err);
    }
    PyScrubReport::new(py, store, &report)
}
