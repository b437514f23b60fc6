//! Writing many rows as one transaction (`put_many`, and the DataFrame and Arrow loads):
//! past one chunk of rows held in memory the transaction streams (`Store::begin_streamed`),
//! so that the tables take the first chunks while the next ones are still being encoded.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::committing::{await_receipt, committed_anyway, wait_for_writer};
use super::errors::{run_detached, to_py};
use super::progress::PROGRESS_EVERY;
use super::types::PyReceipt;
use super::value::{encode_py_value_with, with_py_key, EncodeOptions, Location};
use crate::codec::{encode_key_into, EncodedOps, Op, OpRef};
use crate::store::{describe_key, Durability, Store, StreamedCommit};

/// How many rows `put_many` encodes between two checks for Ctrl-C (a few milliseconds).
const SIGNAL_EVERY: usize = 1024;
/// Rows per chunk handed to a streaming load; fewer rows in all commit as one plain batch.
const STREAM_CHUNK: usize = 4096;

/// The op that puts `value` under `key` (see [`encode_put`]).
pub(crate) fn put_op(
    table: &str,
    key: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
) -> PyResult<Op> {
    let mut buffers = RowBuffers::default();
    Ok(encode_put(table, key, value, &mut buffers, None)?.to_op())
}

/// Where one row's key and value are encoded: a bulk load reuses them for every row.
#[derive(Default)]
pub(crate) struct RowBuffers {
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
}

/// The op that puts `value` under `key`, encoded in `buffers`. `row`, the row's index
/// among many (`put_many`), names a refused key: the key itself cannot name it.
pub(crate) fn encode_put<'b>(
    table: &'b str,
    key: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
    buffers: &'b mut RowBuffers,
    row: Option<usize>,
) -> PyResult<OpRef<'b>> {
    with_py_key(key, |k| encode_key_into(&mut buffers.key, k)).map_err(|err| match row {
        Some(row) => at_row(key.py(), &err, table, row),
        None => err,
    })?;
    buffers.value.clear();
    let at = Location::Row { table, key };
    encode_py_value_with(value, EncodeOptions::default(), &mut buffers.value, &at)?;
    Ok(OpRef {
        table,
        key: &buffers.key,
        value: Some(&buffers.value),
    })
}

/// The ops of one transaction, as they are encoded: up to one chunk they are kept; past it
/// a streaming sink sends them on, so that the tables take the first chunks while later
/// ones are encoded (the transaction then holds the writer lock until it commits). A sink
/// that does not stream keeps every op until [`OpSink::commit`]: for rows from a source
/// of unknown speed, which must not hold other writers meanwhile. Dropping it before the
/// commit writes nothing. Past `max_transaction_bytes` it refuses at once, at the row that
/// crosses it, before the rest are read.
pub(crate) struct OpSink<'a> {
    store: &'a Store,
    durability: Option<Durability>,
    streams: bool,
    chunk: EncodedOps,
    load: Option<StreamedCommit>,
    count: usize,
    /// A lower bound of the entry's size so far.
    bytes: usize,
    /// What writes (`put_many`, `put_arrow`...), for a refusal.
    what: &'static str,
}

impl<'a> OpSink<'a> {
    pub(crate) fn new(
        store: &'a Store,
        durability: Option<Durability>,
        streams: bool,
        what: &'static str,
    ) -> Self {
        Self {
            store,
            durability,
            streams,
            chunk: EncodedOps::default(),
            load: None,
            count: 0,
            bytes: 0,
            what,
        }
    }

    /// Ops added so far.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Adds `op` (its name and sizes checked first); a full chunk goes to the tables (the
    /// first one waits for the writer lock).
    pub(crate) fn push(&mut self, py: Python<'_>, op: OpRef<'_>) -> PyResult<()> {
        if let Err(err) = self.store.check_ops([op]) {
            return Err(about_row(py, &to_py(py, err), op, self.count));
        }
        self.bytes += op.table.len() + op.key.len() + op.value.map_or(0, <[u8]>::len);
        let limit = self.store.options().max_transaction_bytes;
        if self.bytes > limit {
            let message = format!(
                "{} rows exceed max_transaction_bytes ({limit} bytes) at row {} (counting \
                 from 0): write them in smaller batches, or open the Store with a larger \
                 max_transaction_bytes",
                self.what, self.count
            );
            return Err(super::errors::raise(py, "ValueTooLarge", (message,)));
        }
        self.chunk.push(op);
        self.count += 1;
        if !self.streams || self.chunk.len() < STREAM_CHUNK {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.chunk);
        if let Some(load) = &mut self.load {
            return run_detached(py, || load.push(ops));
        }
        wait_for_writer(py, self.store)?;
        let (store, durability) = (self.store, self.durability);
        self.load = Some(run_detached(py, || store.begin_streamed(ops, durability))?);
        Ok(())
    }

    /// Commits every op added as one transaction and waits for its durability.
    pub(crate) fn commit(mut self, py: Python<'_>) -> PyResult<PyReceipt> {
        let chunk = std::mem::take(&mut self.chunk);
        let committed = match self.load.take() {
            None => {
                wait_for_writer(py, self.store)?;
                let (store, durability) = (self.store, self.durability);
                run_detached(py, || store.commit_pending(chunk.to_ops(), durability))?
            }
            Some(mut load) => {
                if !chunk.is_empty() {
                    if let Err(err) = run_detached(py, || load.push(chunk)) {
                        give_up(py, load);
                        return Err(err);
                    }
                }
                run_detached(py, move || load.commit())?
            }
        };
        await_receipt(py, &committed)
    }
}

impl Drop for OpSink<'_> {
    fn drop(&mut self) {
        if let Some(load) = self.load.take() {
            Python::attach(|py| give_up(py, load));
        }
    }
}

/// Gives up a streamed load (an error, Ctrl-C) without the GIL: clearing its log record
/// and waiting for the tables to let go of what they took can take seconds for a large
/// one, which the process's other Python threads need not wait for.
fn give_up(py: Python<'_>, load: StreamedCommit) {
    py.detach(move || drop(load));
}

/// Encodes `rows` and commits them as one transaction; returns its receipt. Before the
/// commit point (an error, Ctrl-C) nothing is written. `total` is `len(rows)` if known:
/// rows with a length are in memory, so encoding them is quick and the write streams; a
/// generator may wait on anything (a network, a slow file), so its rows are all read
/// before the transaction takes the writer lock.
pub(crate) fn put_rows(
    py: Python<'_>,
    store: &Store,
    table: &str,
    rows: &Bound<'_, PyAny>,
    total: Option<usize>,
    progress: Option<&Bound<'_, PyAny>>,
    durability: Option<Durability>,
) -> PyResult<PyReceipt> {
    let mut buffers = RowBuffers::default();
    let mut sink = OpSink::new(store, durability, total.is_some(), "put_many");
    for row in rows.try_iter()? {
        let row = row?;
        let index = sink.len();
        let pair = row
            .cast::<PyTuple>()
            .ok()
            .filter(|t| t.len() == 2)
            .ok_or_else(|| {
                let what = match row.cast::<PyTuple>() {
                    Ok(tuple) => format!("a tuple of {} item(s)", tuple.len()),
                    Err(_) => row
                        .get_type()
                        .name()
                        .map_or_else(|_| "?".to_owned(), |n| n.to_string()),
                };
                let not = pyo3::exceptions::PyTypeError::new_err(format!(
                    "each row must be a (key, value) tuple, not {what}"
                ));
                at_row(py, &not, table, index)
            })?;
        let (key, value) = (pair.get_item(0)?, pair.get_item(1)?);
        let op = encode_put(table, &key, &value, &mut buffers, Some(index))?;
        sink.push(py, op)?;
        let count = sink.len();
        // Before the commit point Ctrl-C aborts with nothing written.
        if count.is_multiple_of(SIGNAL_EVERY) {
            py.check_signals()?;
        }
        if let Some(callback) = progress {
            if count.is_multiple_of(PROGRESS_EVERY) {
                callback.call1((count,))?;
            }
        }
    }
    py.check_signals()?;
    let count = sink.len();
    let receipt = sink.commit(py)?;
    // Past the commit point the rows are stored: anything raised now (Ctrl-C during the
    // commit, a failing progress callback) carries the receipt.
    let finished = match progress {
        Some(callback) => callback.call1((count,)).map(drop),
        None => Ok(()),
    };
    match finished.and_then(|()| py.check_signals()) {
        Ok(()) => Ok(receipt),
        Err(err) => Err(committed_anyway(py, err, receipt)),
    }
}

/// `err` with the row it is about in front of its message (`events[<row 3>]: ...`), of the
/// same exception type and with the same cause.
fn at_row(py: Python<'_>, err: &PyErr, table: &str, row: usize) -> PyErr {
    let message = format!("{table}[<row {row}>]: {}", err.value(py));
    if let Ok(value) = err.get_type(py).call1((message.clone(),)) {
        let named = PyErr::from_value(value);
        named.set_cause(py, err.cause(py));
        return named;
    }
    // A type that takes more than a message (one raised by a key's own `__index__`): the
    // ValueError or TypeError it is, with the original as its cause.
    let named = if err.is_instance_of::<PyValueError>(py) {
        PyValueError::new_err(message)
    } else {
        PyTypeError::new_err(message)
    };
    named.set_cause(py, Some(err.clone_ref(py)));
    named
}

/// `err` (a refused op) again, its message saying which row it is: `table[key] (row n)`,
/// counted from 0 as `<row n>` is (what `df.iloc[n]` finds). A key too long to show is cut.
fn about_row(py: Python<'_>, err: &PyErr, op: OpRef<'_>, row: usize) -> PyErr {
    const SHOWN: usize = 80;
    let mut key = describe_key(op.key);
    if key.chars().count() > SHOWN {
        key = key.chars().take(SHOWN).chain("…".chars()).collect();
    }
    let message = format!("{}[{key}] (row {row}): {}", op.table, err.value(py));
    err.get_type(py)
        .call1((message,))
        .map_or_else(|failed| failed, PyErr::from_value)
}
