//! Deleting a range of keys (a key prefix, a whole table) as one transaction.

use std::ops::Bound;

use super::{Committed, Durability, Store};
use crate::error::Result;

/// How many keys one read of the range takes at most while the deletes are recorded...
const PAGE_ROWS: usize = 4096;
/// ...and about how many bytes of rows: a read returns values too, and a table of large
/// ones (templates of a few hundred KiB) read 4096 rows at a time held a gigabyte.
const PAGE_BYTES: usize = 4 << 20;
/// The first read's rows, before the rows' size is known.
const FIRST_PAGE_ROWS: usize = 16;

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
        let mut rows = FIRST_PAGE_ROWS;
        loop {
            let bounds = (
                from.as_ref().map(Vec::as_slice),
                upper.as_ref().map(Vec::as_slice),
            );
            let page = self.scan(table, bounds.0, bounds.1, false, rows)?;
            let full = page.len() == rows;
            let bytes: usize = page.iter().map(|(k, v)| k.len() + v.len()).sum();
            rows = next_page_rows(page.len(), bytes);
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

/// The rows of the next read after one of `rows` rows holding `bytes`: about
/// [`PAGE_BYTES`] of rows that size, within 1 and [`PAGE_ROWS`].
fn next_page_rows(rows: usize, bytes: usize) -> usize {
    let per_row = bytes.div_ceil(rows.max(1)).max(1);
    (PAGE_BYTES / per_row).clamp(1, PAGE_ROWS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_of_large_rows_keeps_the_next_read_near_four_megabytes() {
        // Small rows: the most rows a read takes.
        assert_eq!(next_page_rows(16, 16 * 100), PAGE_ROWS);
        // Templates of 256 KiB: 16 at a time.
        assert_eq!(next_page_rows(16, 16 << 18), 16);
        // A value of 16 MiB: one at a time, never none.
        assert_eq!(next_page_rows(1, 16 << 20), 1);
        // An empty page (the range ended) or empty rows never divide by zero.
        assert_eq!(next_page_rows(0, 0), PAGE_ROWS);
    }
}
