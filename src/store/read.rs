//! Reading a store: point reads, ranges, the tables' sums and checksums, the LSNs readers
//! see, and a scrub of every row. Reads look in the overlay first, then in redb.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::overlay::Found;
use super::tables::{ScrubReport, Snapshot, TableSum};
use super::{validate_table_name, Checksum, Store};
use crate::error::Result;

impl Store {
    /// Calls `f` with the value of `key` (encoded) in `table`, or `None`.
    ///
    /// # Errors
    /// A closed store or a storage failure.
    pub fn get_with<R>(
        &self,
        table: &str,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        validate_table_name(table)?;
        // `f` runs with no lock of the store held: it may run code that needs the store
        // (a Python finalizer calling close(), another thread's write).
        match self.with_open(|open| open.overlay.lookup(&open.tables, table, key))? {
            Found::Pending(value) => Ok(f(value.as_deref())),
            Found::In(snapshot) => snapshot.get_with(table, key, f),
        }
    }

    /// Whether `key` (encoded) exists in `table`. Unlike a read it does not check the
    /// value's CRC: it never reads the value.
    ///
    /// # Errors
    /// A closed store or a storage failure.
    pub fn contains(&self, table: &str, key: &[u8]) -> Result<bool> {
        validate_table_name(table)?;
        match self.with_open(|open| open.overlay.lookup(&open.tables, table, key))? {
            Found::Pending(value) => Ok(value.is_some()),
            Found::In(snapshot) => snapshot.contains(table, key),
        }
    }

    /// Up to `limit` rows of `table` between two encoded-key bounds, in order or reversed.
    ///
    /// # Errors
    /// A closed store or a storage failure.
    pub fn scan(
        &self,
        table: &str,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        validate_table_name(table)?;
        self.with_open(|open| {
            open.overlay
                .scan(&open.tables, table, (lower, upper), reverse, limit)
        })
    }

    /// Row count and checksum of one table.
    ///
    /// # Errors
    /// A closed store or a storage failure.
    pub fn table_sum(&self, table: &str) -> Result<TableSum> {
        validate_table_name(table)?;
        self.with_open(|open| {
            Ok(open
                .overlay
                .sums()
                .1
                .get(table)
                .copied()
                .unwrap_or_default())
        })
    }

    /// Names of the tables that hold rows, in order (a table whose rows were all deleted,
    /// or that was dropped, is not listed).
    ///
    /// # Errors
    /// A closed store or a storage failure.
    pub fn tables(&self) -> Result<Vec<String>> {
        let tables = self.checksum()?.tables.into_iter();
        Ok(tables
            .filter(|(_, sum)| sum.rows > 0)
            .map(|(name, _)| name)
            .collect())
    }

    /// Per-table row counts and checksums at one LSN, read atomically: O(tables). Tables
    /// without rows are left out, as [`Store::tables`] leaves them out.
    ///
    /// # Errors
    /// A closed store or a storage failure.
    pub fn checksum(&self) -> Result<Checksum> {
        self.with_open(|open| {
            let (lsn, mut tables) = open.overlay.sums();
            // A table whose rows were all deleted (or that was dropped) keeps a sum of zero
            // here, where a copy made since never had it: like `tables()`, leave it out.
            tables.retain(|_, sum| sum.rows > 0);
            Ok(Checksum { lsn, tables })
        })
    }

    /// Per-table sums recorded as recent batches became visible (at `since_lsn` or later,
    /// oldest first, a bounded number): a primary and its replica compare them at an LSN
    /// both recorded.
    ///
    /// # Errors
    /// A closed store.
    pub fn recent_checksums(&self, since_lsn: u64) -> Result<Vec<Checksum>> {
        self.with_open(|open| Ok(open.overlay.history(since_lsn)))
    }

    /// The last LSN that is durable and visible to readers (and to the log's readers).
    #[must_use]
    pub fn last_lsn(&self) -> u64 {
        self.inner.pipeline.visible_lsn()
    }

    /// The last LSN whose entry readers of the tables see: [`Store::last_lsn`], except on a
    /// follower, which applies the entries it is sent before its own fdatasync (they are
    /// durable on its primary) and may run ahead of it by the entries being synced.
    #[must_use]
    pub fn readable_lsn(&self) -> u64 {
        self.inner.pipeline.readable_lsn()
    }

    /// A redb read view of every visible commit, with its LSN, epoch and table sums: the
    /// overlay is moved into redb first, holding writers only meanwhile.
    pub(super) fn flushed_snapshot(
        &self,
    ) -> Result<(u64, u64, BTreeMap<String, TableSum>, Snapshot)> {
        // The writer lock with nothing in flight: this thread alone touches the overlay.
        let mut exclusive = self.begin_exclusive()?;
        exclusive.ready_to_read()?;
        let flushed = self.with_open(|open| {
            open.overlay.move_to_tables(&open.tables, false)?;
            let (lsn, sums) = open.overlay.sums();
            Ok((lsn, self.epoch(), sums, open.tables.snapshot()?))
        });
        drop(exclusive);
        flushed
    }

    /// Reads every row of every table, checks each row's CRC and that a lookup of its key
    /// finds it, and recomputes each table's row count and checksum against the stats the
    /// store keeps. Writers (and replicated
    /// appends) are held only while pending writes move into redb; the check runs on a
    /// read snapshot. `progress` gets the rows checked so far now and then; returning
    /// `false` stops early (the report is then incomplete).
    ///
    /// # Errors
    /// A closed store, or a storage failure outside the rows.
    pub fn scrub(&self, progress: &mut dyn FnMut(u64) -> bool) -> Result<ScrubReport> {
        let (.., snapshot) = self.flushed_snapshot()?;
        let report = crate::error::corrupt_on_panic("scrubbing", || snapshot.scrub(progress))?;
        if report.damaged.is_empty() {
            tracing::info!(path = %self.inner.path.display(), rows = report.rows_checked(), "scrub found no damage");
        } else {
            tracing::error!(path = %self.inner.path.display(), damaged = report.damaged.len(), "scrub found damage");
        }
        Ok(report)
    }
}
