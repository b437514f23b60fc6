//! Divergences in Python: the loss account as a dict, `DivergedError` carrying it, and the
//! reader of divergence report files (`replikv.read_diverged` builds on it).

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::changes::PyChange;
use super::errors::{raise, run_detached};
use super::value::{decode_py_key, ms_to_datetime};
use crate::feed::FeedEntry;
use crate::follow::Divergence;

/// `{table: [key, ...]}` of the keys a divergence touched, decoded to their Python types.
fn touched<'py>(py: Python<'py>, divergence: &Divergence) -> PyResult<Bound<'py, PyDict>> {
    let tables = PyDict::new(py);
    for (table, keys) in &divergence.touched {
        let keys = keys
            .iter()
            .map(|key| decode_py_key(py, key))
            .collect::<PyResult<Vec<_>>>()?;
        tables.set_item(table, PyList::new(py, keys)?)?;
    }
    Ok(tables)
}

/// The loss account as a dict: `fork_lsn`, `last_lsn`, `entries`, `tables`.
pub(crate) fn account<'py>(
    py: Python<'py>,
    divergence: &Divergence,
) -> PyResult<Bound<'py, PyDict>> {
    let account = PyDict::new(py);
    account.set_item("fork_lsn", divergence.fork_lsn)?;
    account.set_item("last_lsn", divergence.last_lsn)?;
    account.set_item("entries", divergence.entries)?;
    account.set_item("tables", touched(py, divergence)?)?;
    Ok(account)
}

/// `DivergedError(message, fork_lsn, entries, tables)` for a replica stopped on a fork.
pub(crate) fn diverged_error(py: Python<'_>, message: String, divergence: &Divergence) -> PyErr {
    match touched(py, divergence) {
        Ok(tables) => raise(
            py,
            "DivergedError",
            (message, divergence.fork_lsn, divergence.entries, tables),
        ),
        Err(err) => err,
    }
}

/// Reads a divergence report file: `(fork_lsn, primary, written_at, entries)`, the
/// entries as `Change` objects. `replikv.read_diverged` wraps it.
#[pyfunction]
pub(crate) fn read_diverged_report(
    py: Python<'_>,
    path: PathBuf,
) -> PyResult<(u64, String, Py<PyAny>, Vec<PyChange>)> {
    let report = run_detached(py, move || crate::store::read_divergence_report(&path))?;
    let written_at = ms_to_datetime(py, report.written_ms)?.unbind();
    let entries = report
        .entries
        .into_iter()
        .map(|entry| PyChange::new(py, FeedEntry::whole(&entry)))
        .collect::<PyResult<Vec<_>>>()?;
    Ok((report.fork_lsn, report.primary, written_at, entries))
}
