//! The store's log as history: reading entries as stored (for shipping and `changes()`),
//! their identities (for resume checks), hearing of new ones, and dropping old segments.

use std::sync::Arc;

use super::{Store, VisibleSubscription};
use crate::codec::Entry;
use crate::error::Result;
use crate::log::{LogPosition, RawEntry, SegmentInfo};

impl Store {
    /// Reads visible entries from `position` as stored, for shipping to replicas.
    ///
    /// # Errors
    /// As [`Store::read_log`].
    pub fn read_log_raw(
        &self,
        position: &mut LogPosition,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<RawEntry>> {
        let limits = (max_entries, max_bytes);
        self.read_log_until(position, self.last_lsn(), limits)
    }

    /// Reads entries from `position` up to `up_to` as stored, at most `(entries, bytes)`.
    pub(super) fn read_log_until(
        &self,
        position: &mut LogPosition,
        up_to: u64,
        (max_entries, max_bytes): (usize, usize),
    ) -> Result<Vec<RawEntry>> {
        self.with_open(|open| open.log.read_raw(position, up_to, max_entries, max_bytes))
    }

    /// The identity `(epoch, crc)` of the visible entry at `lsn`, or `None` past the end.
    /// LSN 0 (before the first entry) is `(0, 0)`.
    ///
    /// # Errors
    /// [`crate::error::LogError::Truncated`] if `lsn` is no longer retained, corruption, I/O.
    pub fn entry_id(&self, lsn: u64) -> Result<Option<(u64, u32)>> {
        if lsn == 0 {
            return Ok(Some((0, 0)));
        }
        if lsn > self.last_lsn() {
            return Ok(None);
        }
        // Right after a snapshot the log starts after its LSN: the snapshot recorded the
        // identity of the entry it was taken at.
        let base = self.with_open(|open| {
            if lsn >= open.log.oldest_lsn() || open.tables.meta("base_lsn")? != Some(lsn) {
                return Ok(None);
            }
            let epoch = open.tables.meta("base_epoch")?.unwrap_or(0);
            let crc = open.tables.meta("base_crc")?.unwrap_or(0);
            Ok(Some((epoch, u32::try_from(crc).unwrap_or(0))))
        })?;
        if base.is_some() {
            return Ok(base);
        }
        if let Some(id) = self.with_open(|open| Ok(open.log.last_entry_id(lsn)))? {
            return Ok(Some(id));
        }
        let mut position = LogPosition::after(lsn - 1);
        let entries = self.read_log_raw(&mut position, 1, usize::MAX)?;
        Ok(entries.first().map(|e| (e.epoch, e.crc)))
    }

    /// The oldest LSN the log still holds.
    ///
    /// # Errors
    /// A closed store.
    pub fn oldest_lsn(&self) -> Result<u64> {
        self.with_open(|open| Ok(open.log.oldest_lsn()))
    }

    /// The log's retained segments, oldest first.
    ///
    /// # Errors
    /// A closed store or an I/O failure.
    pub fn log_segments(&self) -> Result<Vec<SegmentInfo>> {
        self.with_open(|open| open.log.segments())
    }

    /// Reads visible entries from `position`, at most `max_entries` and about `max_bytes`.
    ///
    /// # Errors
    /// [`crate::error::LogError::Truncated`] below the retained log, corruption, I/O.
    pub fn read_log(
        &self,
        position: &mut LogPosition,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>> {
        let visible = self.last_lsn();
        self.with_open(|open| open.log.read(position, visible, max_entries, max_bytes))
    }

    /// Calls `listener` with the new visible LSN each time entries become visible, until
    /// the subscription is dropped: once per group-commit batch (not per writer), on the
    /// thread that led it, after its writers were woken and with no lock of the store held;
    /// and after a snapshot is swapped in. Calls may overlap and arrive out of order: keep
    /// the largest LSN. The listener runs on a writer's thread, so it must be quick (wake
    /// someone, read the newest records, write to a socket without blocking; never wait
    /// for I/O), and must not subscribe or unsubscribe.
    pub fn on_visible(
        &self,
        listener: impl Fn(u64) + Send + Sync + 'static,
    ) -> VisibleSubscription {
        let id = self.inner.pipeline.subscribe(Arc::new(listener));
        VisibleSubscription {
            store: self.clone(),
            id,
        }
    }

    /// Drops whole log segments before `lsn`, never past the tables' durable checkpoint:
    /// makes one first (writers keep going meanwhile). Returns how many segments were
    /// removed.
    ///
    /// # Errors
    /// A closed store or an I/O failure; [`crate::error::StoreError::WouldDeadlock`] from inside a
    /// streamed bulk load on this thread (its checkpoint would wait for the load).
    pub fn drop_log_before(&self, lsn: u64) -> Result<usize> {
        self.outside_bulk_load()?;
        self.with_open(|open| {
            let durable = open.overlay.move_to_tables(&open.tables, true)?;
            open.log
                .drop_before(lsn.min(durable + 1).min(self.last_lsn() + 1))
        })
    }
}
