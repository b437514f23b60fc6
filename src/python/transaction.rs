//! `Transaction`: a serializable transaction driven from Python, the warning for one that
//! is collected while it holds the writer lock, and the abort of those of a closed handle.

use crate::python::display::quoted;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use super::committing::{await_receipt, receipt_of, SIGNAL_CHECK};
use super::errors::{owned, run, run_detached};
use super::store::value_or;
use super::types::PyReceipt;
use super::value::{decode_py_value, encode_py_key, encode_row_value};
use crate::store::{Durability, Store, Transaction};

enum TxState {
    NotStarted,
    Open(Transaction),
    /// Taken out by a call in progress (the lock is never held across a GIL release).
    Busy,
    /// With the number of writes it committed (an empty one wrote no entry).
    Committed(PyReceipt, usize),
    Aborted,
    /// Aborted by the close of the handle that opened it, not by its user: a clean end of
    /// its ``with`` block raises ``StoreClosed``, as its ``commit()`` would, rather than
    /// end as if the block had chosen to discard its writes.
    Closed,
}

/// A serializable transaction: commits on a clean ``with`` exit, aborts on an exception.
///
/// It holds the store's writer lock from its first use until it ends; its reads see its
/// own pending writes. A ``KeyboardInterrupt`` that escapes the ``with`` block from its
/// commit comes after the commit point: it carries ``.receipt``, as does the transaction.
#[pyclass(frozen, module = "replikv._core", name = "Transaction")]
pub(crate) struct PyTransaction {
    store: Store,
    /// The durability its commit asks for (`None`: the default of the tables written).
    durability: Option<Durability>,
    /// Shared with the [`OpenTransactions`] of the handle that opened it.
    state: Arc<Mutex<TxState>>,
    /// `file:line` of the Python code that opened it, for the warning of a leaked one.
    opened_at: String,
}

/// `file:line` of the Python code calling into the module (native calls push no frame).
fn caller_location(py: Python<'_>) -> String {
    let location = py
        .import("sys")
        .and_then(|sys| sys.getattr("_getframe")?.call1((0,)))
        .and_then(|frame| {
            let file: String = frame.getattr("f_code")?.getattr("co_filename")?.extract()?;
            let line: u32 = frame.getattr("f_lineno")?.extract()?;
            Ok(format!("{file}:{line}"))
        });
    location.unwrap_or_else(|_| "an unknown place".to_owned())
}

/// The transactions opened through one store handle: closing the handle aborts those
/// still open, so that one that can never commit does not keep the writer lock from the
/// store's other handles until it is used again or collected.
#[derive(Default)]
pub(crate) struct OpenTransactions(Mutex<Vec<Weak<Mutex<TxState>>>>);

impl OpenTransactions {
    fn register(&self, state: &Arc<Mutex<TxState>>) {
        let mut states = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        states.retain(|state| state.strong_count() > 0);
        states.push(Arc::downgrade(state));
    }

    /// Aborts every transaction still open, releasing the writer lock it holds. One in
    /// use by a call at this moment is aborted when that call ends (see
    /// [`PyTransaction::put_back`]).
    pub(crate) fn abort_all(&self) {
        let states = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for state in states.iter().filter_map(Weak::upgrade) {
            let mut state = lock(&state);
            if matches!(*state, TxState::Open(_)) {
                *state = TxState::Closed;
            }
        }
    }
}

fn lock(state: &Mutex<TxState>) -> MutexGuard<'_, TxState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Drop for PyTransaction {
    fn drop(&mut self) {
        let open = matches!(*lock(&self.state), TxState::Open(_));
        if !open || self.store.check_process().is_err() {
            return;
        }
        let message = format!(
            "a Transaction opened at {} was garbage-collected without commit() or abort(): \
             it held the store's writer lock until now and its writes are discarded; use it \
             as a context manager ('with store.transaction() as tx:')",
            self.opened_at
        );
        Python::attach(|py| {
            let category = py.get_type::<pyo3::exceptions::PyResourceWarning>();
            let message = std::ffi::CString::new(message).unwrap_or_default();
            if let Err(err) = PyErr::warn(py, category.as_any(), &message, 1) {
                err.write_unraisable(py, None);
            }
        });
    }
}

impl PyTransaction {
    /// A transaction on `store`, not begun yet, remembering where Python opened it; the
    /// handle's `close()` aborts it through `open`.
    pub(crate) fn new(
        py: Python<'_>,
        store: Store,
        durability: Option<Durability>,
        open: &OpenTransactions,
    ) -> Self {
        let state = Arc::new(Mutex::new(TxState::NotStarted));
        open.register(&state);
        Self {
            store,
            durability,
            state,
            opened_at: caller_location(py),
        }
    }

    fn lock(&self) -> MutexGuard<'_, TxState> {
        lock(&self.state)
    }

    /// Puts the transaction back after a call, or aborts it if its handle was closed
    /// meanwhile: the close could not abort it while the call had it out.
    fn put_back(&self, tx: Transaction) {
        let mut state = self.lock();
        *state = if self.store.is_closed() {
            TxState::Closed
        } else {
            TxState::Open(tx)
        };
    }

    /// Takes the open transaction out (beginning it if needed) for one call.
    fn take(&self, py: Python<'_>) -> PyResult<Transaction> {
        if let Err(refused) = owned(py, &self.store) {
            // A transaction of a closed handle can never commit: it gives the writer lock
            // back now rather than when it is collected.
            let mut state = self.lock();
            if !matches!(*state, TxState::Committed(..) | TxState::Aborted) {
                *state = TxState::Closed;
            }
            return Err(refused);
        }
        let previous = std::mem::replace(&mut *self.lock(), TxState::Busy);
        match previous {
            TxState::Open(tx) => Ok(tx),
            TxState::NotStarted => {
                let begun = loop {
                    let store = self.store.clone();
                    match run_detached(py, move || store.begin_within(SIGNAL_CHECK)) {
                        Ok(Some(tx)) => break Ok(tx),
                        Ok(None) => {
                            if let Err(interrupted) = py.check_signals() {
                                break Err(interrupted);
                            }
                        }
                        Err(err) => break Err(err),
                    }
                };
                begun.inspect_err(|_| *self.lock() = TxState::NotStarted)
            }
            other => {
                let message = match &other {
                    TxState::Busy => "the transaction is in use by another thread",
                    TxState::Committed(..) => "the transaction has already committed",
                    _ => "the transaction was aborted",
                };
                *self.lock() = other;
                Err(PyRuntimeError::new_err(message))
            }
        }
    }

    fn with_tx<R>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Transaction) -> PyResult<R>,
    ) -> PyResult<R> {
        let mut tx = self.take(py)?;
        let result = f(&mut tx);
        self.put_back(tx);
        result
    }
}

#[pymethods]
impl PyTransaction {
    fn __enter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Py<Self>> {
        slf.get().with_tx(py, |_| Ok(()))?;
        Ok(slf)
    }

    #[pyo3(signature = (exc_type, _exc = None, _tb = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let finished = matches!(&*self.lock(), TxState::Committed(..) | TxState::Aborted);
        if exc_type.is_some_and(|t| !t.is_none()) {
            self.abort();
        } else if !finished {
            // A block that already committed or aborted explicitly ends as it chose; one
            // whose store was closed under it fails as its commit does (`StoreClosed`).
            self.commit(py)?;
        }
        Ok(false)
    }

    /// Writes ``value`` under ``key`` when the transaction commits.
    fn put(
        &self,
        py: Python<'_>,
        table: &str,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let encoded_key = encode_py_key(key)?;
        let value = encode_row_value(table, key, value)?;
        self.with_tx(py, |tx| run(py, || tx.put(table, encoded_key, value)))
    }

    /// Deletes ``key`` when the transaction commits.
    fn delete(&self, py: Python<'_>, table: &str, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let key = encode_py_key(key)?;
        self.with_tx(py, |tx| run(py, || tx.delete(table, key)))
    }

    /// Reads ``key``, seeing this transaction's own writes first.
    #[pyo3(signature = (table, key, default = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        table: &str,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = encode_py_key(key)?;
        let mut tx = self.take(py)?;
        // Waiting for earlier commits to become visible is a wait: release the GIL for it.
        let (ready, mut tx) = py.detach(move || {
            let ready = tx.ready_to_read();
            (ready, tx)
        });
        let found = run(py, || ready).and_then(|()| {
            run(py, || {
                tx.get_with(table, &key, |v| v.map(|b| decode_py_value(py, b)))
            })
        });
        self.put_back(tx);
        value_or(py, found?, default)
    }

    /// Commits now (the context manager does this on a clean exit).
    ///
    /// A Ctrl-C during the commit (a large one takes seconds) does not stop it: the
    /// ``KeyboardInterrupt`` raised once it is committed carries the receipt as
    /// ``.receipt`` and a note saying so.
    fn commit(&self, py: Python<'_>) -> PyResult<PyReceipt> {
        let tx = self.take(py)?;
        let writes = tx.len();
        let durability = self.durability;
        let committed = match run_detached(py, move || tx.commit_pending(durability)) {
            Ok(committed) => committed,
            Err(err) => {
                *self.lock() = TxState::Aborted;
                return Err(err);
            }
        };
        // Committed from here, even if the wait for replicas fails or is interrupted.
        let receipt = await_receipt(py, &committed);
        let kept = receipt_of(py, &receipt).unwrap_or_else(|| committed.abandoned().into());
        *self.lock() = TxState::Committed(kept, writes);
        receipt
    }

    /// Discards every write of the transaction and releases the writer lock.
    fn abort(&self) {
        let previous = std::mem::replace(&mut *self.lock(), TxState::Aborted);
        if let TxState::Committed(receipt, writes) = previous {
            *self.lock() = TxState::Committed(receipt, writes);
        }
    }

    /// The receipt once committed, else ``None``.
    #[getter]
    fn receipt(&self) -> Option<PyReceipt> {
        match &*self.lock() {
            TxState::Committed(receipt, _) => Some(receipt.clone()),
            _ => None,
        }
    }

    fn __repr__(&self) -> String {
        let state = match &*self.lock() {
            TxState::NotStarted => "not started".to_owned(),
            TxState::Open(tx) => format!("open, {} pending op(s)", tx.len()),
            TxState::Busy => "busy".to_owned(),
            TxState::Committed(_, 0) => "committed, empty (no entry written)".to_owned(),
            TxState::Committed(receipt, writes) => {
                format!("{writes} write(s) committed at LSN {}", receipt.lsn)
            }
            TxState::Aborted => "aborted".to_owned(),
            TxState::Closed => "aborted by the close of its store".to_owned(),
        };
        format!(
            "<Transaction on {}: {state}>",
            quoted(&self.store.path().display().to_string())
        )
    }
}
