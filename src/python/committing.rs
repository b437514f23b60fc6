//! A write's way back to Python: its commit and its receipt waited for in slices that stay
//! interruptible (Ctrl-C), and the receipt carried on an exception raised past the commit
//! point.

use std::time::{Duration, Instant};

use pyo3::prelude::*;

use super::errors::{run, run_detached};
use super::types::PyReceipt;
use crate::codec::Op;
use crate::store::{Committed, Durability, Store};

/// How long a blocking wait runs before it checks for Ctrl-C.
pub(crate) const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// Waits while another thread's transaction holds the writer lock, staying interruptible
/// (Ctrl-C raises `KeyboardInterrupt`). The common case, a free lock, costs one atomic
/// load: no lock is taken while the GIL is held.
pub(crate) fn wait_for_writer(py: Python<'_>, store: &Store) -> PyResult<()> {
    if !store.writer_maybe_busy() {
        return Ok(());
    }
    loop {
        if run_detached(py, || store.writer_free_within(SIGNAL_CHECK))? {
            return Ok(());
        }
        py.check_signals()?;
    }
}

/// Sleeps for `pause` with the GIL released, checking for Ctrl-C every `SIGNAL_CHECK`.
pub(crate) fn sleep_interruptibly(py: Python<'_>, pause: Duration) -> PyResult<()> {
    let until = Instant::now() + pause;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        py.detach(|| std::thread::sleep(left.min(SIGNAL_CHECK)));
        py.check_signals()?;
    }
}

/// Commits `ops` once the writer lock is free, then waits for the durability asked for;
/// both waits stay interruptible.
pub(crate) fn commit_ops(
    py: Python<'_>,
    store: &Store,
    ops: Vec<Op>,
    durability: Option<Durability>,
) -> PyResult<PyReceipt> {
    wait_for_writer(py, store)?;
    let committed = run_detached(py, || store.commit_pending(ops, durability))?;
    await_receipt(py, &committed)
}

/// Waits for a committed write's receipt in slices, checking for Ctrl-C between them. A
/// `KeyboardInterrupt` then, or one pressed while the commit itself ran (seconds for a large
/// one, with the GIL released), carries the receipt so far (`.receipt`; a sync write not
/// yet acknowledged by its quorum is marked degraded), since the write is committed.
pub(crate) fn await_receipt(py: Python<'_>, committed: &Committed) -> PyResult<PyReceipt> {
    // Local and async writes settle at once: asking costs no GIL release, which a busy
    // interpreter can make cost up to its switch interval.
    let mut settled = run(py, || committed.wait(Duration::ZERO))?;
    loop {
        if let Err(interrupted) = py.check_signals() {
            let receipt = settled.unwrap_or_else(|| committed.abandoned());
            return Err(committed_anyway(py, interrupted, receipt.into()));
        }
        if let Some(receipt) = settled {
            return Ok(receipt.into());
        }
        settled = run_detached(py, || committed.wait(SIGNAL_CHECK))?;
    }
}

/// An exception raised after a write's commit point (Ctrl-C pressed during the commit, a
/// progress callback that failed): the interpreter raises a pending `KeyboardInterrupt` as
/// soon as the call returns, before the caller could store a returned receipt, so the
/// receipt travels on the exception (`.receipt`) with a note saying the rows are stored.
pub(crate) fn committed_anyway(py: Python<'_>, err: PyErr, receipt: PyReceipt) -> PyErr {
    let note = format!(
        "the write was already committed at LSN {} when this was raised: its changes are \
         stored, and its receipt is this exception's .receipt",
        receipt.lsn
    );
    annotated(py, err, receipt, note)
}

/// An exception raised in a write of several transactions (`batch_rows=`) after some of
/// them committed: their `rows` are stored, and the last one's receipt travels on the
/// exception (`.receipt`) with a note saying so.
pub(crate) fn partly_committed(
    py: Python<'_>,
    err: PyErr,
    receipt: PyReceipt,
    rows: usize,
) -> PyErr {
    let note = format!(
        "the first {rows} rows were already committed, in transactions up to LSN {}, when \
         this was raised: they are stored, and the last one's receipt is this exception's \
         .receipt",
        receipt.lsn
    );
    annotated(py, err, receipt, note)
}

/// The receipt of a write's outcome, if it committed: the one it returned, or the one an
/// exception raised past its commit point carries (see [`committed_anyway`]).
pub(crate) fn receipt_of(py: Python<'_>, outcome: &PyResult<PyReceipt>) -> Option<PyReceipt> {
    match outcome {
        Ok(receipt) => Some(receipt.clone()),
        Err(err) => {
            let receipt = err.value(py).getattr("receipt").ok()?;
            Some(receipt.cast_into::<PyReceipt>().ok()?.get().clone())
        }
    }
}

/// `err` with `receipt` as its `.receipt` and `note` added to its notes.
fn annotated(py: Python<'_>, err: PyErr, receipt: PyReceipt, note: String) -> PyErr {
    let value = err.value(py);
    let annotated = value.setattr("receipt", receipt).and_then(|()| {
        if value.hasattr("add_note")? {
            value.call_method1("add_note", (note,)).map(drop)
        } else {
            value.setattr("__notes__", vec![note])
        }
    });
    // An exception that refuses attributes is still raised as it is.
    drop(annotated);
    err
}
