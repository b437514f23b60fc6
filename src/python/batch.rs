//! `Batch`: writes collected in memory and committed as one transaction when its `with`
//! block ends.

use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use super::errors::{owned, to_py};
use super::store::commit_ops;
use super::types::PyReceipt;
use super::value::{encode_py_key, encode_row_value};
use crate::codec::Op;
use crate::store::{validate_table_name, Durability, Store};

enum BatchState {
    Collecting(Vec<Op>),
    Committed(PyReceipt),
    Discarded,
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

    /// Adds an op (already encoded: encoding runs Python code, never under the lock).
    fn push(&self, py: Python<'_>, op: Op) -> PyResult<()> {
        owned(py, &self.store)?;
        validate_table_name(&op.table).map_err(|e| to_py(py, e))?;
        match &mut *self.lock() {
            BatchState::Collecting(ops) => {
                ops.push(op);
                Ok(())
            }
            BatchState::Committed(_) => Err(PyRuntimeError::new_err(
                "the batch has already committed: start a new one with store.batch()",
            )),
            BatchState::Discarded => Err(PyRuntimeError::new_err(
                "the batch was discarded: start a new one with store.batch()",
            )),
        }
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
        self.push(py, op)
    }

    /// Deletes ``key`` when the batch commits.
    fn delete(&self, py: Python<'_>, table: &str, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let op = Op {
            table: table.to_owned(),
            key: encode_py_key(key)?,
            value: None,
        };
        self.push(py, op)
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
    /// on a clean exit). A batch without writes takes no LSN.
    fn commit(&self, py: Python<'_>) -> PyResult<PyReceipt> {
        let ops = match std::mem::replace(&mut *self.lock(), BatchState::Discarded) {
            BatchState::Collecting(ops) => ops,
            BatchState::Committed(receipt) => {
                *self.lock() = BatchState::Committed(receipt);
                return Err(PyRuntimeError::new_err("the batch has already committed"));
            }
            BatchState::Discarded => {
                return Err(PyRuntimeError::new_err("the batch was discarded"));
            }
        };
        let receipt = commit_ops(py, &self.store, ops, self.durability)?;
        *self.lock() = BatchState::Committed(receipt.clone());
        Ok(receipt)
    }

    /// Drops the writes collected so far (the ``with`` block does this when it raises).
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
            BatchState::Committed(receipt) => Some(receipt.clone()),
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
            BatchState::Committed(receipt) => format!("committed at LSN {}", receipt.lsn),
            BatchState::Discarded => "discarded".to_owned(),
        };
        format!(
            "<Batch on {:?}: {state}>",
            self.store.path().display().to_string()
        )
    }
}
