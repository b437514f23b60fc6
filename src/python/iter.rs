//! `Scan`: an iterator over rows, read in batches.

use std::collections::VecDeque;
use std::ops::Bound as Limit;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::display::quoted;
use super::errors::{owned, run};
use super::value::{decode_py_key, decode_py_value};
use crate::codec::{decode_key, KeyRef};
use crate::store::{describe_key, Store};

/// A lower and an upper bound of encoded keys.
pub(crate) type KeyBounds = (Limit<Vec<u8>>, Limit<Vec<u8>>);

/// The key arguments of a scan or an export (`prefix=`, `start=`, `end=`), encoded.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScanKeys {
    pub prefix: Option<Vec<u8>>,
    pub start: Option<Vec<u8>>,
    pub end: Option<Vec<u8>>,
}

impl ScanKeys {
    /// The bounds of the keys: `start` included, `end` excluded, and the narrowest range
    /// inside all that are given.
    pub(crate) fn bounds(&self) -> KeyBounds {
        let mut lower = self.start.clone().map_or(Limit::Unbounded, Limit::Included);
        let mut upper = self.end.clone().map_or(Limit::Unbounded, Limit::Excluded);
        if let Some(low) = &self.prefix {
            let high = prefix_end(low);
            if match &lower {
                Limit::Included(l) => l < low,
                _ => true,
            } {
                lower = Limit::Included(low.clone());
            }
            if match &upper {
                Limit::Excluded(u) => *u > high,
                _ => true,
            } {
                upper = Limit::Excluded(high);
            }
        }
        (lower, upper)
    }
}

/// An encoded key as Python's `repr()` shows it.
fn key_repr(key: &[u8]) -> String {
    match decode_key(key) {
        Ok(KeyRef::Str(text)) => quoted(text),
        _ => describe_key(key),
    }
}

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
    /// Rows handed out so far.
    given: u64,
}

/// Batch size of a scan: each batch is one read transaction.
const SCAN_BATCH: usize = 512;

/// An iterator of ``(key, value)`` rows in key order.
#[pyclass(frozen, module = "replikv._core", name = "Scan")]
pub(crate) struct PyScan {
    store: Store,
    /// The arguments it was made with, for its repr.
    keys: ScanKeys,
    /// At most this many rows (`usize::MAX`: no limit).
    limit: usize,
    state: Mutex<ScanState>,
}

impl PyScan {
    pub(crate) fn new(
        store: Store,
        table: &str,
        keys: ScanKeys,
        reverse: bool,
        limit: usize,
    ) -> Self {
        let (lower, upper) = keys.bounds();
        Self {
            store,
            keys,
            limit,
            state: Mutex::new(ScanState {
                table: table.to_owned(),
                lower,
                upper,
                reverse,
                remaining: limit,
                buffer: VecDeque::new(),
                exhausted: false,
                given: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ScanState> {
        // A poisoned lock only means a read panicked (reported as a bug): the bounds move
        // one whole batch at a time.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[pymethods]
impl PyScan {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        owned(py, &self.store)?;
        let mut state = self.lock();
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
        state.given += 1;
        drop(state);
        let pair = (decode_py_key(py, &key)?, decode_py_value(py, &value)?);
        Ok(Some(PyTuple::new(py, [pair.0, pair.1])?))
    }

    // `<Scan of 'users' prefix='ab' reverse=True limit=10: 3 rows so far>`: the table,
    // the arguments that narrow it, and how far it has been read.
    fn __repr__(&self) -> String {
        let state = self.lock();
        let mut parts = vec![format!("of {}", quoted(&state.table))];
        let keys = [
            ("prefix", &self.keys.prefix),
            ("start", &self.keys.start),
            ("end", &self.keys.end),
        ];
        for (name, key) in keys {
            if let Some(key) = key {
                parts.push(format!("{name}={}", key_repr(key)));
            }
        }
        if state.reverse {
            parts.push("reverse=True".to_owned());
        }
        if self.limit != usize::MAX {
            parts.push(format!("limit={}", self.limit));
        }
        let rows = if state.given == 1 { "row" } else { "rows" };
        let done = state.buffer.is_empty() && (state.exhausted || state.remaining == 0);
        let progress = if done && state.given > 0 {
            format!("done, {} {rows}", state.given)
        } else if done {
            "done, no rows".to_owned()
        } else {
            format!("{} {rows} so far", state.given)
        };
        format!("<Scan {}: {progress}>", parts.join(" "))
    }
}
