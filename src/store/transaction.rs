//! Serializable transactions: the writer lock is held from `begin` to commit or drop, and
//! reads see the transaction's own pending writes first.

use std::collections::HashMap;

use super::{Committed, Durability, Receipt, Store};
use crate::codec::Op;
use crate::error::Result;

/// An open transaction. Dropping it without [`Transaction::commit`] aborts it.
pub struct Transaction {
    store: Store,
    ops: Vec<Op>,
    /// For each `(table, key)` written, the index of its latest op in `ops`.
    latest: HashMap<(String, Vec<u8>), usize>,
    /// A lower bound of the encoded entry's size: a write that takes it over
    /// `max_transaction_bytes` is refused then, not after every write is in memory.
    bytes: usize,
    /// Set once every earlier commit is visible, so reads of the tables are current.
    drained: bool,
    finished: bool,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("store", &self.store.path())
            .field("ops", &self.ops.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Transaction {
    pub(super) fn new(store: Store) -> Self {
        Self {
            store,
            ops: Vec::new(),
            latest: HashMap::new(),
            bytes: 0,
            drained: false,
            finished: false,
        }
    }

    fn record(&mut self, op: Op) -> Result<()> {
        // Refuse bad input at the call that made it, not at commit.
        self.store.encode(std::slice::from_ref(&op))?;
        let bytes =
            self.bytes + op.table.len() + op.key.len() + op.value.as_ref().map_or(0, Vec::len);
        let limit = self.store.options().max_transaction_bytes;
        if bytes > limit {
            return Err(crate::error::StoreError::TooLarge {
                what: "transaction",
                size: bytes,
                limit,
            }
            .into());
        }
        self.bytes = bytes;
        self.latest
            .insert((op.table.clone(), op.key.clone()), self.ops.len());
        self.ops.push(op);
        Ok(())
    }

    /// Writes `value` under `key` (both encoded) in `table` when the transaction commits.
    ///
    /// # Errors
    /// An invalid table name or an oversized key or value.
    pub fn put(&mut self, table: &str, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.record(Op {
            table: table.to_owned(),
            key,
            value: Some(value),
        })
    }

    /// Deletes `key` from `table` when the transaction commits.
    ///
    /// # Errors
    /// An invalid table name or an oversized key.
    pub fn delete(&mut self, table: &str, key: Vec<u8>) -> Result<()> {
        self.record(Op {
            table: table.to_owned(),
            key,
            value: None,
        })
    }

    /// Reads `key`, seeing this transaction's own writes first.
    ///
    /// # Errors
    /// A closed store or a storage failure.
    pub fn get_with<R>(
        &mut self,
        table: &str,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        if let Some(&index) = self.latest.get(&(table.to_owned(), key.to_vec())) {
            return Ok(f(self.ops[index].value.as_deref()));
        }
        self.ready_to_read()?;
        self.store.get_with(table, key, f)
    }

    /// Waits (once) until every commit that started before this transaction is visible, so
    /// that reads of the tables see exactly the state this transaction serializes after.
    /// No commit can start meanwhile: the transaction holds the writer lock.
    ///
    /// # Errors
    /// A closed store or the failure that closed it.
    pub fn ready_to_read(&mut self) -> Result<()> {
        if !self.drained {
            self.store.drain()?;
            self.drained = true;
        }
        Ok(())
    }

    /// Number of operations recorded so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether no operation was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Commits as one log entry with `durability` (see [`Store::commit`]) and returns its
    /// receipt. A transaction without writes appends nothing: its receipt is for the
    /// visible LSN.
    ///
    /// # Errors
    /// As [`Store::commit`].
    pub fn commit(self, durability: Option<Durability>) -> Result<Receipt> {
        self.commit_pending(durability)?.finish()
    }

    /// Commits locally, like [`Transaction::commit`], without waiting for any replica.
    ///
    /// # Errors
    /// As [`Store::commit_pending`].
    pub fn commit_pending(mut self, durability: Option<Durability>) -> Result<Committed> {
        self.finished = true;
        let ops = std::mem::take(&mut self.ops);
        self.store.commit_inner(ops, durability, true)
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        // In a forked child the lock state is a copy that nobody else uses (and its mutex
        // may have been held by a thread that does not exist there).
        if !self.finished && !self.store.inner.owner.inherited() {
            self.store.inner.pipeline.release_writer();
        }
    }
}
