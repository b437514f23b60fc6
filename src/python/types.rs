//! Small result types: Receipt, Op, Checksum.

use crate::python::display::quoted;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::value::{decode_py_key, decode_py_value};
use crate::codec::OpRef;
use crate::store::Receipt;

/// What a write returns: its LSN, how durable it is (`durability`: "local" when no primary
/// serves the store, "async" or "sync"), the replicas that acknowledged a sync write, and
/// whether a sync write degraded (its quorum was not reached in time, or the wait was
/// interrupted).
#[pyclass(frozen, get_all, eq, module = "replikv._core", name = "Receipt")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PyReceipt {
    /// The write's log sequence number: its transaction's entry in the change log. A
    /// transaction or batch that wrote nothing takes none: its ``lsn`` is the last LSN
    /// committed before it (what a replica's ``wait_for`` needs to show what it read).
    pub lsn: u64,
    /// ``'local'`` (no primary serves the store), ``'async'`` or ``'sync'``.
    pub durability: String,
    /// Names of the replicas that held a sync write durably when the call returned.
    pub acked_by: Vec<String>,
    /// True if a sync write returned without its quorum: ``sync_timeout`` passed with
    /// ``on_timeout="degrade"``, or its wait was interrupted (Ctrl-C).
    pub degraded: bool,
}

impl From<Receipt> for PyReceipt {
    fn from(receipt: Receipt) -> Self {
        Self {
            lsn: receipt.lsn,
            durability: receipt.durability.name().to_owned(),
            acked_by: receipt.acked_by,
            degraded: receipt.degraded,
        }
    }
}

#[pymethods]
impl PyReceipt {
    /// Written as Python writes the same values (replica names need no escaping: they are
    /// letters, digits, '_', '.' and '-').
    fn __repr__(&self) -> String {
        let acked_by: Vec<String> = self.acked_by.iter().map(|n| format!("'{n}'")).collect();
        format!(
            "Receipt(lsn={}, durability='{}', acked_by=[{}], degraded={})",
            self.lsn,
            self.durability,
            acked_by.join(", "),
            if self.degraded { "True" } else { "False" }
        )
    }
}

/// One operation of a change: a put or a delete.
#[pyclass(frozen, get_all, module = "replikv._core", name = "Op")]
pub(crate) struct PyOp {
    /// ``'put'`` or ``'delete'``.
    pub kind: &'static str,
    /// The table the op writes.
    pub table: String,
    /// The key it writes, as the type it was written as.
    pub key: Py<PyAny>,
    /// The value written (``None`` for a delete).
    pub value: Py<PyAny>,
}

impl PyOp {
    /// The Python op of a stored op (its key and value decoded).
    pub(crate) fn from_ref(py: Python<'_>, op: OpRef<'_>) -> PyResult<Self> {
        Ok(Self {
            kind: if op.value.is_some() { "put" } else { "delete" },
            table: op.table.to_owned(),
            key: decode_py_key(py, op.key)?.unbind(),
            value: match op.value {
                Some(bytes) => decode_py_value(py, bytes)?.unbind(),
                None => py.None(),
            },
        })
    }
}

#[pymethods]
impl PyOp {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let key = self.key.bind(py).repr()?;
        if self.kind == "put" {
            let value = self.value.bind(py).repr()?;
            Ok(format!(
                "Op(kind='put', table={}, key={key}, value={value})",
                quoted(&self.table)
            ))
        } else {
            Ok(format!(
                "Op(kind='delete', table={}, key={key})",
                quoted(&self.table)
            ))
        }
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(other) = other.cast::<Self>() else {
            return Ok(false);
        };
        let other = other.get();
        Ok(self.kind == other.kind
            && self.table == other.table
            && self.key.bind(py).eq(other.key.bind(py))?
            && self.value.bind(py).eq(other.value.bind(py))?)
    }
}

/// Per-table checksums and row counts of a store at one LSN.
#[pyclass(frozen, get_all, module = "replikv._core", name = "Checksum")]
pub(crate) struct PyChecksum {
    /// The LSN of the state that was summed.
    pub lsn: u64,
    /// Order-independent checksum of each table's rows.
    pub tables: Py<PyDict>,
    /// Row count of each table.
    pub rows: Py<PyDict>,
}

impl PyChecksum {
    pub(crate) fn new(py: Python<'_>, sums: crate::store::Checksum) -> PyResult<Self> {
        let tables = PyDict::new(py);
        let rows = PyDict::new(py);
        for (name, sum) in sums.tables {
            tables.set_item(&name, sum.checksum)?;
            rows.set_item(&name, sum.rows)?;
        }
        Ok(Self {
            lsn: sums.lsn,
            tables: tables.unbind(),
            rows: rows.unbind(),
        })
    }
}

#[pymethods]
impl PyChecksum {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let mut parts = Vec::new();
        for (name, sum) in self.tables.bind(py).iter() {
            parts.push(format!("{}: {:#018x}", name.repr()?, sum.extract::<u64>()?));
        }
        Ok(format!(
            "Checksum(lsn={}, tables={{{}}})",
            self.lsn,
            parts.join(", ")
        ))
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(other) = other.cast::<Self>() else {
            return Ok(false);
        };
        let other = other.get();
        Ok(self.lsn == other.lsn && self.tables.bind(py).eq(other.tables.bind(py))?)
    }
}
