//! `Scan`: an iterator over rows, read in batches.

use std::collections::VecDeque;
use std::ops::Bound as Limit;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::errors::{owned, run};
use super::value::{decode_py_key, decode_py_value};
use crate::store::Store;

/// The smallest byte string greater than every string starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only reachable for an all-0xff prefix, which encoded keys never are (the tag is < 0xff).
    vec![0xff; prefix.len() + 1]
}

fn as_slice(bound: &Limit<Vec<u8>>) -> Limit<&[u8]> {
    bound.as_ref().map(Vec::as_slice)
}

struct ScanState {
    table: String,
    lower: Limit<Vec<u8>>,
    upper: Limit<Vec<u8>>,
    reverse: bool,
    remaining: usize,
    buffer: VecDeque<(Vec<u8>, Vec<u8>)>,
    exhausted: bool,
}

/// Batch size of a scan: each batch is one read transaction.
const SCAN_BATCH: usize = 512;

/// An iterator of ``(key, value)`` rows in key order.
#[pyclass(frozen, module = "replikv._core", name = "Scan")]
pub(crate) struct PyScan {
    store: Store,
    state: Mutex<ScanState>,
}

impl PyScan {
    pub(crate) fn new(
        store: Store,
        table: &str,
        (lower, upper): (Limit<Vec<u8>>, Limit<Vec<u8>>),
        reverse: bool,
        remaining: usize,
    ) -> Self {
        Self {
            store,
            state: Mutex::new(ScanState {
                table: table.to_owned(),
                lower,
                upper,
                reverse,
                remaining,
                buffer: VecDeque::new(),
                exhausted: false,
            }),
        }
    }
}

#[pymethods]
impl PyScan {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        owned(py, &self.store)?;
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.buffer.is_empty() && !state.exhausted && state.remaining > 0 {
            let want = state.remaining.min(SCAN_BATCH);
            let batch = run(py, || {
                self.store.scan(
                    &state.table,
                    as_slice(&state.lower),
                    as_slice(&state.upper),
                    state.reverse,
                    want,
                )
            })?;
            state.exhausted = batch.len() < want;
            state.remaining -= batch.len();
            if let Some((last, _)) = batch.last() {
                // The next batch starts after the last key seen.
                if state.reverse {
                    state.upper = Limit::Excluded(last.clone());
                } else {
                    state.lower = Limit::Excluded(last.clone());
                }
            }
            state.buffer.extend(batch);
        }
        let Some((key, value)) = state.buffer.pop_front() else {
            return Ok(None);
        };
        drop(state);
        let pair = (decode_py_key(py, &key)?, decode_py_value(py, &value)?);
        Ok(Some(PyTuple::new(py, [pair.0, pair.1])?))
    }
}
