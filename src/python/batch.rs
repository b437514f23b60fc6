//! `Batch`: writes collected in memory and committed as one transaction when its `with`
//! block ends.

use crate::python::display::quoted;
use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use super::committing::{commit_ops, receipt_of};
use super::errors::{owned, to_py};
use super::types::PyReceipt;
use super::value::{encode_py_key, encode_row_value};
use crate::codec::Op;
use crate::store::{validate_table_name, Durability, Store};

enum BatchState {
    Collecting(Vec<Op>),
    /// `commit` runs: the ops are with the store.
    Committing,
    /// Committed, with how many writes (none: no entry was written).
    Committed(PyReceipt, usize),
    /// The commit raised before its entry was written: nothing of the batch is stored.
    Failed,
    Discarded,
}

impl BatchState {
    /// Why a write or a commit is refused in this state (`None` while collecting).
    fn refusal(&self) -> Option<&'static str> {
        match self {
            Self::Collecting(_) => None,
            Self::Committing => Some("the batch is committing"),
            Self::Committed(..) => Some("the batch has already committed"),
            Self::Failed => Some("the batch's commit failed and wrote nothing"),
            Self::Discarded => Some("the batch was discarded"),
        }
    }
}

/// Writes collected in memory, committed as one transaction (one log entry, one fsync)
/// when the ``with`` block ends; nothing is written if the block raises. Made by
/// :meth:`Store.batch`.
#[pyclass(frozen, module = "replikv._core", name = "Batch")]
pub(crate) struct PyBatch {
    store: Store,
    durability: Option<Durability>,
    state: Mutex<BatchState>,
}

impl PyBatch {
    pub(crate) fn new(store: Store, durability: Option<Durability>) -> Self {
        Self {
            store,
            durability,
            state: Mutex::new(BatchState::Collecting(Vec::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BatchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds ops, all or none (already encoded: encoding runs Python code, never under the
    /// lock).
    fn push(&self, py: Python<'_>, new: Vec<Op>) -> PyResult<()> {
        owned(py, &self.store)?;
        for op in &new {
            validate_table_name(&op.table).map_err(|e| to_py(py, e))?;
        }
        let mut state = self.lock();
        if let BatchState::Collecting(ops) = &mut *state {
            ops.extend(new);
            return Ok(());
        }
        let refusal = state.refusal().unwrap_or_default();
        Err(PyRuntimeError::new_err(format!(
            "{refusal}: start a new one with store.batch()"
        )))
    }
}

#[pymethods]
impl PyBatch {
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (exc_type, _exc = None, _tb = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if exc_type.is_some_and(|t| !t.is_none()) {
            self.discard();
        } else if matches!(&*self.lock(), BatchState::Collecting(_)) {
            self.commit(py)?;
        }
        Ok(false)
    }

    /// Writes ``value`` under ``key`` when the batch commits. The value is encoded now
    /// (a bad one raises here; later changes to the object are not seen).
    fn put(
        &self,
        py: Python<'_>,
        table: &str,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let op = Op {
            table: table.to_owned(),
            key: encode_py_key(key)?,
            value: Some(encode_row_value(table, key, value)?),
        };
        self.push(py, vec![op])
    }

    /// Writes every ``(key, value)`` of ``rows`` when the batch commits: all of them, or,
    /// if one is refused (a bad key or value raises here), none.
    fn put_many(&self, py: Python<'_>, table: &str, rows: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut ops = Vec::new();
        for row in rows.try_iter()? {
            let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = row?.extract()?;
            ops.push(Op {
                table: table.to_owned(),
                key: encode_py_key(&key)?,
                value: Some(encode_row_value(table, &key, &value)?),
            });
        }
        self.push(py, ops)
    }

    /// Deletes ``key`` when the batch commits.
    fn delete(&self, py: Python<'_>, table: &str, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let op = Op {
            table: table.to_owned(),
            key: encode_py_key(key)?,
            value: None,
        };
        self.push(py, vec![op])
    }

    /// A write-only view of one table for this batch: ``view[key] = value``,
    /// ``del view[key]``, ``view.update(mapping)``.
    fn table<'py>(slf: &Bound<'py, Self>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        validate_table_name(name).map_err(|e| to_py(slf.py(), e))?;
        slf.py()
            .import("replikv._store")?
            .getattr("BatchTable")?
            .call1((slf, name))
    }

    /// Commits the writes collected so far as one transaction (the `with` block does this
    /// on a clean exit). A batch without writes takes no LSN: its receipt's ``lsn`` is
    /// the last one committed before it, which names no entry of its own.
    fn commit(&self, py: Python<'_>) -> PyResult<PyReceipt> {
        let ops = {
            let mut state = self.lock();
            if let Some(refusal) = state.refusal() {
                return Err(PyRuntimeError::new_err(refusal));
            }
            match std::mem::replace(&mut *state, BatchState::Committing) {
                BatchState::Collecting(ops) => ops,
                _ => unreachable!("refusal() is None only while collecting"),
            }
        };
        let writes = ops.len();
        let committed = commit_ops(py, &self.store, ops, self.durability);
        // A Ctrl-C while the commit waited for its fsync or its replicas comes after the
        // entry was written: the KeyboardInterrupt carries its receipt.
        let receipt = receipt_of(py, &committed);
        *self.lock() = receipt.map_or(BatchState::Failed, |r| BatchState::Committed(r, writes));
        committed
    }

    /// Drops the writes collected so far and ends the batch: a later ``put``,
    /// ``put_many``, ``delete`` or ``commit`` raises ``RuntimeError`` (start a new batch
    /// with :meth:`Store.batch`), and a ``with`` block that ends cleanly after it writes
    /// nothing. The ``with`` block discards when it raises.
    fn discard(&self) {
        let mut state = self.lock();
        if matches!(&*state, BatchState::Collecting(_)) {
            *state = BatchState::Discarded;
        }
    }

    /// The receipt once committed, else ``None``.
    #[getter]
    fn receipt(&self) -> Option<PyReceipt> {
        match &*self.lock() {
            BatchState::Committed(receipt, _) => Some(receipt.clone()),
            _ => None,
        }
    }

    /// The number of writes collected and not yet committed.
    fn __len__(&self) -> usize {
        match &*self.lock() {
            BatchState::Collecting(ops) => ops.len(),
            _ => 0,
        }
    }

    fn __repr__(&self) -> String {
        let state = match &*self.lock() {
            BatchState::Collecting(ops) => format!("{} pending write(s)", ops.len()),
            BatchState::Committed(_, 0) => "committed, empty (no entry written)".to_owned(),
            BatchState::Committed(receipt, writes) => {
                format!("{writes} write(s) committed at LSN {}", receipt.lsn)
            }
            BatchState::Committing => "committing".to_owned(),
            BatchState::Failed => "failed (nothing written)".to_owned(),
            BatchState::Discarded => "discarded".to_owned(),
        };
        format!(
            "<Batch on {}: {state}>",
            quoted(&self.store.path().display().to_string())
        )
    }
}
