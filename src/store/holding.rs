//! A follower store that holds back from its readers the entries its primary shipped
//! before they were durable there (see [`super::held`]): marking it so, releasing entries
//! as the primary confirms them, cutting those it lost, and naming what its log holds for
//! a handshake.

use super::Store;
use crate::error::{LogError, ReadOnlyReason, Result};
use crate::log::{LogPosition, RawEntry};

/// The meta key that marks a follower that holds back: its recovery holds back its last
/// [`MAX_HELD_ENTRIES`], not knowing which its primary confirmed.
pub(super) const HOLDS_BACK: &str = "holds_back";

/// The most entries a primary ships a holding follower past its durable LSN (so its
/// unconfirmed entries are always among the last this many of its log).
pub const MAX_HELD_ENTRIES: u64 = 64;

impl Store {
    /// From now on, entries appended past the last one confirmed are held back from
    /// readers (and the log's readers) until [`Store::release_replicated`] covers them.
    /// The mark is durable: reopened as a follower after a crash, the store holds back its
    /// last [`MAX_HELD_ENTRIES`] entries until they are released again (or until it stops
    /// following); opened plainly, to look at it, it shows its whole durable log.
    ///
    /// # Errors
    /// [`crate::error::StoreError::ReadOnly`] unless this is a follower; a closed store or a
    /// storage failure.
    pub fn hold_back(&self) -> Result<()> {
        if !self.is_follower() {
            return Err(self.read_only(ReadOnlyReason::NotAFollower));
        }
        let marked = self.with_open(|open| Ok(open.tables.meta(HOLDS_BACK)? == Some(1)))?;
        if !marked {
            let mut exclusive = self.begin_exclusive()?;
            exclusive.ready_to_read()?;
            let written = self.with_open(|open| open.tables.write_meta(&[(HOLDS_BACK, 1)]));
            drop(exclusive);
            written?;
        }
        self.inner.pipeline.hold(Vec::new());
        Ok(())
    }

    /// Entries up to `lsn` are durable at the primary: they are applied (those this log
    /// holds). Returns the last LSN readers see.
    ///
    /// # Errors
    /// A closed store, or a failure applying them (the store closes itself).
    pub fn release_replicated(&self, lsn: u64) -> Result<u64> {
        if self.inner.pipeline.release(lsn) {
            let written = self.inner.pipeline.last_assigned();
            self.wait(lsn.min(written), super::commit::Until::Readable)?;
        }
        Ok(self.readable_lsn())
    }

    /// The last LSN durable in the log, held back or not: what a follower acknowledges.
    #[must_use]
    pub fn synced_lsn(&self) -> u64 {
        self.inner.pipeline.synced_lsn()
    }

    /// Cuts the entries after `lsn` off a follower's log, durably: held back entries its
    /// primary lost. Entries readers were shown are never cut.
    ///
    /// # Errors
    /// [`crate::error::StoreError::ReadOnly`] unless this is a follower,
    /// [`crate::error::StoreError::OutOfOrder`] below the last LSN readers see or while
    /// entries are being appended; a closed store or an I/O failure (the store closes
    /// itself).
    pub fn cut_replicated(&self, lsn: u64) -> Result<()> {
        if !self.is_follower() {
            return Err(self.read_only(ReadOnlyReason::NotAFollower));
        }
        self.sync_replicated()?;
        self.inner
            .pipeline
            .cut_held(lsn)
            .map_err(|r| self.refused(r))?;
        let cut = self.with_open(|open| open.log.cut_after(lsn));
        if let Err(err) = &cut {
            self.inner.pipeline.fail_outside(err, "cutting the log");
        }
        cut
    }

    /// Reads entries as [`Store::read_log_raw`] does, up to the end of the durable log
    /// rather than the visible LSN: a promotion adopts entries held back too (they may
    /// hold an acknowledged sync write).
    ///
    /// # Errors
    /// As [`Store::read_log_raw`].
    pub fn read_log_held(
        &self,
        position: &mut LogPosition,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<RawEntry>> {
        let synced = self.synced_lsn();
        self.with_open(|open| open.log.read_raw(position, synced, max_entries, max_bytes))
    }

    /// The identity `(lsn, (epoch, crc))` of each entry of the log from `from` to its
    /// durable end, held back or not: what a holding follower's hello names.
    ///
    /// # Errors
    /// `from` is no longer retained, corruption, I/O.
    pub fn held_ids(&self, from: u64) -> Result<Vec<(u64, (u64, u32))>> {
        let synced = self.synced_lsn();
        let oldest = self.with_open(|open| Ok(open.log.oldest_lsn()))?;
        let mut ids = Vec::new();
        let mut position = LogPosition::after(from.saturating_sub(1));
        if from == 0 || from < oldest {
            // Before the log (LSN 0, or the LSN of the snapshot it starts after): its
            // identity was recorded.
            let id = self.entry_id(from)?.ok_or(LogError::Truncated {
                requested: from,
                oldest,
            })?;
            ids.push((from, id));
            position = LogPosition::after(from);
        }
        while position.next_lsn() <= synced {
            let batch =
                self.with_open(|open| open.log.read_raw(&mut position, synced, 1024, usize::MAX))?;
            if batch.is_empty() {
                break;
            }
            ids.extend(batch.iter().map(|e| (e.lsn, (e.epoch, e.crc))));
        }
        Ok(ids)
    }
}
