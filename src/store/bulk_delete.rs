//! Deleting a range of keys (a key prefix, a whole table) as one transaction.

use std::ops::Bound;

use super::{Committed, Durability, Store};
use crate::error::Result;

/// How many keys one read of the range takes while the deletes are recorded.
const PAGE_ROWS: usize = 4096;

impl Store {
    /// Deletes every row of `table` with a key between `lower` and `upper` (encoded keys)
    /// as one transaction: one log entry with a delete per key, so replicas, cache nodes
    /// and `changes()` see it like any other write. The rows are read under the writer
    /// lock, so no write can slip in between the read and the commit. Returns the commit
    /// (to wait on, as [`Store::commit_pending`]) and the number of rows deleted; a range
    /// without rows takes no LSN.
    ///
    /// # Errors
    /// An invalid table name, a closed or read-only store, or an entry over
    /// `max_transaction_bytes` (nothing is deleted).
    pub fn delete_range(
        &self,
        table: &str,
        lower: Bound<Vec<u8>>,
        upper: &Bound<Vec<u8>>,
        durability: Option<Durability>,
    ) -> Result<(Committed, u64)> {
        super::validate_table_name(table)?;
        let mut tx = self.begin()?;
        tx.ready_to_read()?;
        let mut from = lower;
        let mut deleted = 0u64;
        loop {
            let bounds = (
                from.as_ref().map(Vec::as_slice),
                upper.as_ref().map(Vec::as_slice),
            );
            let page = self.scan(table, bounds.0, bounds.1, false, PAGE_ROWS)?;
            let full = page.len() == PAGE_ROWS;
            for (key, _) in page {
                from = Bound::Excluded(key.clone());
                tx.delete(table, key)?;
                deleted += 1;
            }
            if !full {
                break;
            }
        }
        Ok((tx.commit_pending(durability)?, deleted))
    }
}
