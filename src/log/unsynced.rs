//! Segments written without their `fdatasync` yet: a follower's log makes entries readable
//! before they are durable (they are durable on its primary), and syncs them a moment
//! later, off the path that applies the next ones.
//!
//! The list is shared with the tables' file: a durable redb commit syncs these first, so
//! that redb is never durable past the log (recovery replays the log after the tables'
//! checkpoint, and a log that ends before it is corruption).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::fs::SegmentFile;
use super::synced::SyncedMark;

/// The files written since their last `fdatasync`, and the last LSN written to them.
#[derive(Default)]
struct Pending {
    files: Vec<Arc<dyn SegmentFile>>,
    last_lsn: u64,
}

/// The segment files written since their last `fdatasync`.
#[derive(Default)]
pub struct Unsynced {
    pending: Mutex<Pending>,
    /// Held through a sync: a second sync that finds the list empty must not return
    /// while the first one's `fdatasync` is still running.
    syncing: Mutex<()>,
    /// Set once a sync failed: the files' state is unknown, so no later sync may report
    /// them durable (a failed `fdatasync` is never retried).
    failed: AtomicBool,
    /// `fdatasync`s of the log so far, each of which flushed the disk's write cache: the
    /// tables' writeback reads it to know whether the disk was flushed lately.
    syncs: AtomicU64,
    /// Where the log records how far its syncs went (see [`SyncedMark`]).
    mark: OnceLock<Arc<SyncedMark>>,
}

impl std::fmt::Debug for Unsynced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Unsynced")
            .field("files", &pending.files.len())
            .field("failed", &self.failed.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl Unsynced {
    /// Notes that `file` holds bytes that are not durable yet, records up to `last_lsn`.
    pub(super) fn add(&self, file: &Arc<dyn SegmentFile>, last_lsn: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if !pending
            .files
            .last()
            .is_some_and(|last| Arc::ptr_eq(last, file))
        {
            pending.files.push(Arc::clone(file));
        }
        pending.last_lsn = pending.last_lsn.max(last_lsn);
    }

    /// The log is cut back to end at `lsn`: no sync may report anything past it any more
    /// (what was written past it and not synced is gone). `lower` (the mark's own cut)
    /// runs after any sync that took a higher LSN has ended, and before another starts.
    pub(super) fn cut_back<T>(&self, lsn: u64, lower: impl FnOnce() -> T) -> T {
        let _syncing = self.syncing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.last_lsn = pending.last_lsn.min(lsn);
        drop(pending);
        lower()
    }

    /// Each sync from now on records how far it went in `mark`.
    pub(super) fn record_in(&self, mark: Arc<SyncedMark>) {
        // A log is opened once per store: a second mark would be another log's.
        let _ = self.mark.set(mark);
    }

    /// Whether every byte written is durable: nothing listed, and no sync running (one
    /// that runs took its files off the list before its `fdatasync` ends).
    pub(super) fn is_empty(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .files
            .is_empty()
            && self.syncing.try_lock().is_ok()
    }

    /// Counts an `fdatasync` of a segment (which flushed the disk's write cache).
    pub(super) fn count_sync(&self) {
        self.syncs.fetch_add(1, Ordering::AcqRel);
    }

    /// How many `fdatasync`s of the log were made so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Acquire)
    }

    /// `fdatasync`s every file listed: whatever was written to them before this call is
    /// durable once it returns. Calls may overlap; each syncs what it took.
    ///
    /// # Errors
    /// A sync fails, now or did before.
    pub fn sync(&self) -> io::Result<()> {
        let _syncing = self.syncing.lock().unwrap_or_else(PoisonError::into_inner);
        let (files, last_lsn) = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            (std::mem::take(&mut pending.files), pending.last_lsn)
        };
        if self.failed.load(Ordering::Acquire) {
            return Err(io::Error::other("an earlier fdatasync of the log failed"));
        }
        for file in files {
            if let Err(err) = file.sync_data() {
                self.failed.store(true, Ordering::Release);
                return Err(err);
            }
            self.count_sync();
        }
        // Every record up to `last_lsn` was in a file synced now or by an earlier sync.
        if let Some(mark) = self.mark.get() {
            mark.synced(last_lsn);
        }
        Ok(())
    }
}
