//! `Primary.verify()` and `fetch_verify()`: how each replica's tables compare with the
//! primary's at one LSN.

use crate::python::display::{quoted, quoted_list};
use std::collections::BTreeMap;
use std::fmt::Write;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::args::seconds;
use super::display::html;
use super::errors::run_detached;
use crate::replication::verify::{ReplicaCheck, Verdict, VerifyReport};

/// How one replica's tables compare with the primary's.
#[pyclass(frozen, module = "replikv._core", name = "ReplicaVerify")]
pub(crate) struct PyReplicaVerify {
    check: ReplicaCheck,
}

#[pymethods]
impl PyReplicaVerify {
    /// The replica's name.
    #[getter]
    fn name(&self) -> &str {
        &self.check.name
    }

    /// ``'equal'``, ``'different'`` or ``'not comparable'``.
    #[getter]
    fn verdict(&self) -> &'static str {
        self.check.verdict.name()
    }

    /// The LSN both sides' checksums were taken at; ``None`` if not comparable.
    #[getter]
    fn lsn(&self) -> Option<u64> {
        self.check.lsn
    }

    /// Why it is not comparable (not connected, no answer, too far behind).
    #[getter]
    fn reason(&self) -> Option<&str> {
        self.check.reason.as_deref()
    }

    /// Per table: ``'equal'`` or ``'different'`` (empty when not comparable).
    #[getter]
    fn tables(&self) -> BTreeMap<String, &'static str> {
        self.check
            .tables
            .iter()
            .map(|t| (t.table.clone(), t.verdict.name()))
            .collect()
    }

    /// The comparison as plain dicts and lists, with each side's row count and checksum.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("name", &self.check.name)?;
        dict.set_item("verdict", self.check.verdict.name())?;
        dict.set_item("lsn", self.check.lsn)?;
        dict.set_item("reason", &self.check.reason)?;
        let tables = PyDict::new(py);
        for table in &self.check.tables {
            let row = PyDict::new(py);
            row.set_item("verdict", table.verdict.name())?;
            for (side, sum) in [("primary", table.primary), ("replica", table.replica)] {
                let (rows, checksum) = sum.unwrap_or_default();
                row.set_item(format!("{side}_rows"), rows)?;
                row.set_item(format!("{side}_checksum"), checksum)?;
            }
            tables.set_item(&table.table, row)?;
        }
        dict.set_item("tables", tables)?;
        Ok(dict)
    }

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    fn __repr__(&self) -> String {
        let mut out = format!(
            "ReplicaVerify(name={}, verdict={}",
            quoted(&self.check.name),
            quoted(self.check.verdict.name())
        );
        if let Some(lsn) = self.check.lsn {
            let _ = write!(out, ", lsn={lsn}");
        }
        if let Some(reason) = &self.check.reason {
            let _ = write!(out, ", reason={}", quoted(reason));
        }
        let different = different_tables(&self.check);
        if !different.is_empty() {
            let _ = write!(out, ", different={}", quoted_list(&different));
        }
        out.push(')');
        out
    }
}

fn different_tables(check: &ReplicaCheck) -> Vec<&str> {
    check
        .tables
        .iter()
        .filter(|t| t.verdict == Verdict::Different)
        .map(|t| t.table.as_str())
        .collect()
}

/// What `Primary.verify()` found: `ok` is true unless a replica's tables differ from the
/// primary's (replicas that could not be compared yet do not make it false).
#[pyclass(frozen, module = "replikv._core", name = "VerifyReport")]
pub(crate) struct PyVerifyReport {
    report: VerifyReport,
}

impl From<VerifyReport> for PyVerifyReport {
    fn from(report: VerifyReport) -> Self {
        Self { report }
    }
}

#[pymethods]
impl PyVerifyReport {
    /// No replica differs (replicas not comparable yet do not make it false).
    #[getter]
    fn ok(&self) -> bool {
        self.report.ok()
    }

    /// The primary's last LSN when it asked.
    #[getter]
    fn lsn(&self) -> u64 {
        self.report.lsn
    }

    /// How many replicas were compared (equal or different).
    #[getter]
    fn compared(&self) -> usize {
        self.report.compared()
    }

    /// Every replica with a slot or a connection, in name order.
    #[getter]
    fn replicas(&self) -> Vec<PyReplicaVerify> {
        self.report
            .replicas
            .iter()
            .map(|check| PyReplicaVerify {
                check: check.clone(),
            })
            .collect()
    }

    /// The report as plain dicts and lists (for JSON).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("ok", self.report.ok())?;
        dict.set_item("lsn", self.report.lsn)?;
        let replicas = self
            .replicas()
            .iter()
            .map(|replica| replica.to_dict(py))
            .collect::<PyResult<Vec<_>>>()?;
        dict.set_item("replicas", replicas)?;
        Ok(dict)
    }

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    fn __repr__(&self) -> String {
        let count = |verdict: Verdict| {
            self.report
                .replicas
                .iter()
                .filter(|r| r.verdict == verdict)
                .count()
        };
        format!(
            "<VerifyReport {} at LSN {}: {} equal, {} different, {} not comparable>",
            if self.report.ok() { "ok" } else { "DIFFERENT" },
            self.report.lsn,
            count(Verdict::Equal),
            count(Verdict::Different),
            count(Verdict::NotComparable)
        )
    }

    fn __str__(&self) -> String {
        self.report.to_string()
    }
}

/// Asks the primary at `address` to verify its replicas (it gives them 5 s to answer)
/// and returns its `VerifyReport`.
#[pyfunction]
#[pyo3(signature = (address, *, token = None, timeout = 10.0))]
pub(crate) fn fetch_verify(
    py: Python<'_>,
    address: &str,
    token: Option<String>,
    timeout: f64,
) -> PyResult<PyVerifyReport> {
    let timeout = seconds("timeout", timeout)?;
    let address = address.to_owned();
    let report = run_detached(py, move || {
        crate::replication::monitor::fetch_verify(&address, token.as_deref(), timeout)
            .map_err(crate::Error::from)
    })?;
    Ok(report.into())
}
