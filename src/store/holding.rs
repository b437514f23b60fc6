//! Entries shipped before they are durable: a primary's store tells of each batch written
//! to its log before its fdatasync ([`Store::on_written`]) and reads the log that far; a
//! follower store holds such entries back from its readers (see [`super::held`]): marking
//! it so, releasing entries as the primary confirms them, cutting those it lost, and
//! naming what its log holds for a handshake.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use super::commit::Listener;
use super::Store;
use crate::error::{LogError, ReadOnlyReason, Result};
use crate::log::{LogPosition, RawEntry};

/// The meta key that marks a follower whose log may hold entries its primary did not
/// confirm (a primary that ships ahead sent them): its recovery holds back its last
/// [`MAX_HELD_ENTRIES`], not knowing which were confirmed.
pub(super) const HOLDS_BACK: &str = "holds_back";

/// The most entries a primary ships a holding follower past its durable LSN (so its
/// unconfirmed entries are always among the last this many of its log).
pub const MAX_HELD_ENTRIES: u64 = 64;

/// The listener set by [`Store::on_written`]; dropping it removes the listener.
#[must_use = "dropping the subscription removes the listener"]
pub struct WrittenSubscription {
    store: Store,
    id: u64,
}

impl Drop for WrittenSubscription {
    fn drop(&mut self) {
        let mut written = self
            .store
            .inner
            .written
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if written.as_ref().is_some_and(|(id, _)| *id == self.id) {
            *written = None;
        }
    }
}

/// Tells subscriptions apart.
static SUBSCRIPTIONS: AtomicU64 = AtomicU64::new(1);

impl Store {
    /// Calls `listener` with the last LSN of each batch a primary's commit writes to its
    /// log, before that batch's fdatasync (which then follows at once), until the
    /// subscription is dropped; a later call replaces it. With a listener, a commit's write
    /// and its fdatasync are two system calls, so that replicas that hold back can be
    /// shipped the batch while it is synced here. The listener runs on the leading
    /// writer's thread: it must be quick (wake someone, never do I/O).
    pub fn on_written(
        &self,
        listener: impl Fn(u64) + Send + Sync + 'static,
    ) -> WrittenSubscription {
        let id = SUBSCRIPTIONS.fetch_add(1, Ordering::Relaxed);
        *self
            .inner
            .written
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some((id, Arc::new(listener)));
        WrittenSubscription {
            store: self.clone(),
            id,
        }
    }

    /// The listener of [`Store::on_written`], if any.
    pub(super) fn written_listener(&self) -> Option<Listener> {
        self.inner
            .written
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(_, listener)| Arc::clone(listener))
    }

    /// The last LSN written to the log, durable or not.
    #[must_use]
    pub fn written_lsn(&self) -> u64 {
        self.with_open(|open| Ok(open.log.next_lsn() - 1))
            .unwrap_or_else(|_| self.last_lsn())
    }

    /// Reads entries as [`Store::read_log_raw`] does, up to `up_to` even past the visible
    /// LSN (as far as the log is written): what a primary ships a replica that holds back.
    ///
    /// # Errors
    /// As [`Store::read_log_raw`].
    pub fn read_log_written(
        &self,
        position: &mut LogPosition,
        up_to: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<RawEntry>> {
        let up_to = up_to.min(self.written_lsn());
        self.read_log_until(position, up_to, (max_entries, max_bytes))
    }

    /// The identity `(epoch, crc)` of the entry at `lsn` as written to the log, durable or
    /// not (`None` past its end): what a handshake with a replica that holds back compares.
    ///
    /// # Errors
    /// As [`Store::entry_id`].
    pub fn written_entry_id(&self, lsn: u64) -> Result<Option<(u64, u32)>> {
        if lsn <= self.last_lsn() {
            return self.entry_id(lsn);
        }
        let mut position = LogPosition::after(lsn - 1);
        let entry = self.read_log_written(&mut position, lsn, 1, usize::MAX)?;
        Ok(entry.first().map(|e| (e.epoch, e.crc)))
    }

    /// From now on, entries appended past the last one confirmed are held back from
    /// readers (and the log's readers) until [`Store::release_replicated`] covers them.
    /// Entries confirmed before they are appended (by a primary that ships only what is
    /// durable there) are shown as they are appended.
    ///
    /// # Errors
    /// [`crate::error::StoreError::ReadOnly`] unless this is a follower.
    pub fn hold_back(&self) -> Result<()> {
        if !self.is_follower() {
            return Err(self.read_only(ReadOnlyReason::NotAFollower));
        }
        self.inner.pipeline.hold(Vec::new());
        Ok(())
    }

    /// Entries its primary has not confirmed are about to be appended: marks, durably and
    /// before they reach the log, that a reopen as a follower after a crash must hold back
    /// the last [`MAX_HELD_ENTRIES`] entries until they are released again (or until it
    /// stops following), not knowing which were confirmed. Opened plainly, to look at it,
    /// the store shows its whole durable log. A follower that was never sent such entries
    /// shows its whole durable log after a crash too.
    ///
    /// # Errors
    /// [`crate::error::StoreError::ReadOnly`] unless this is a follower; a closed store or
    /// a storage failure.
    pub fn expect_unconfirmed(&self) -> Result<()> {
        if !self.is_follower() {
            return Err(self.read_only(ReadOnlyReason::NotAFollower));
        }
        self.mark_unconfirmed(true)
    }

    /// Clears the mark [`Store::expect_unconfirmed`] set once everything the log holds is
    /// shown (confirmed): a crash from now on holds nothing back, until entries that are
    /// not confirmed come again. Clearing needs no sync: a mark that survives a crash
    /// only holds back entries its primary confirms again.
    pub(super) fn forget_unconfirmed(&self) -> Result<()> {
        if self.readable_lsn() < self.synced_lsn() {
            return Ok(());
        }
        self.mark_unconfirmed(false)
    }

    fn mark_unconfirmed(&self, marked: bool) -> Result<()> {
        let value = u64::from(marked);
        let now = self.with_open(|open| Ok(open.tables.meta(HOLDS_BACK)?.unwrap_or(0)))?;
        if now == value {
            return Ok(());
        }
        let mut exclusive = self.begin_exclusive()?;
        exclusive.ready_to_read()?;
        let written = self.with_open(|open| open.tables.write_meta(&[(HOLDS_BACK, value)]));
        drop(exclusive);
        written
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
        self.read_log_until(position, self.synced_lsn(), (max_entries, max_bytes))
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
            let batch = self.read_log_until(&mut position, synced, (1024, usize::MAX))?;
            if batch.is_empty() {
                break;
            }
            ids.extend(batch.iter().map(|e| (e.lsn, (e.epoch, e.crc))));
        }
        Ok(ids)
    }
}
