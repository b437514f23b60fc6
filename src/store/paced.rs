//! The tables' file as redb reaches it: redb's own file backend, except that a
//! checkpoint's sync writes the pages back a chunk at a time, spread over time, before the
//! fsync.
//!
//! A checkpoint hands the disk tens of megabytes at once (redb copies every page it
//! changes; the first after a bulk load, hundreds). The disks measured serve one request
//! at a time, and a cache flush covers everything written before it: a log `fdatasync`
//! issued meanwhile pays for whatever of the checkpoint reached the disk since the last
//! one. With one fsync for all of it a writer's put took 30 to 40 ms while the median is
//! 0.1 ms (`benches/bench_latency.py`, random existing keys). Written back one chunk at a
//! time, back to back, each log sync found a chunk or two ahead of it: every put during
//! the writeback, hundreds in a row, took ten times the median.
//!
//! So the writeback keeps a schedule, as the checkpointer of Postgres does
//! (`checkpoint_completion_target`): it aims to be done when the next checkpoint is half
//! way due (by entries, bytes of log or time, whichever is furthest along), and sleeps
//! between chunks while it is ahead of that. A log sync then finds at most a small chunk
//! ahead of it, and only now and then. A writer that loads fast moves the schedule fast,
//! so a bulk load's checkpoints go at the disk's speed, as before; an idle store's finish
//! within a few seconds. Only the checkpointer's thread keeps a schedule, during its
//! own durable moves ([`Pace::follow`]); any other thread's sync (close, a snapshot for a
//! replica) goes at full speed, and so does the sync redb makes right after growing the
//! file (it holds the lock its readers begin under). A paced writeback hurries as soon as
//! another thread waits to write the tables (a bulk load, a snapshot, a promotion:
//! [`Pace::waiting`]) or its store begins to close, and never waits after its last chunk.
//!
//! A disk's write cache holds what was written since its last flush, and the next flush
//! (any `fdatasync`) waits for all of it. While writers put, their log syncs flush it every
//! fraction of a millisecond, a chunk or two at a time. While none does (a notebook between
//! cells, a script freeing what it loaded), the writeback piles megabytes up, and the first
//! put after that paid for them: 10 to 50 ms after a 1M-row load. So a paced writeback
//! that saw no log sync for [`FLUSH_DEBT_BYTES`] flushes the cache itself ([`FlushDebt`]),
//! with an `fdatasync` of the store's `LOCK` file: a regular file with nothing to write,
//! whose sync is a cache flush on ext4 and XFS alike (a directory's is not, on XFS).
//!
//! Durability does not depend on any of this: the fsync that follows is the one redb
//! issues, and it still covers every page. Writing back early only leaves it less to do.
//!
//! Before any of it, a sync makes the log's unsynced segments durable (a follower's log
//! makes entries readable before it syncs them): redb is never durable past the log.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

use super::dirlock::LOCK_FILE;
use super::pace::Pace;
use crate::log::Unsynced;

/// The unit of early writeback: what a log sync may find ahead of it. At 64 KiB that is
/// about a tenth of a millisecond on the disks measured; the checkpoint after 10,000
/// random-key puts (about 35 MiB) then takes about 560 calls.
const CHUNK_BYTES: u64 = 64 << 10;

/// At most this much written back since the disk's write cache was last flushed: what
/// the first put after a quiet spell pays for (about 2 ms on the disks measured).
const FLUSH_DEBT_BYTES: u64 = 1 << 20;

/// What a writeback wrote since the disk's write cache was last flushed, by the log's
/// syncs or by its own.
struct FlushDebt {
    /// The log's sync count when the debt was last cleared.
    syncs: u64,
    bytes: u64,
}

impl FlushDebt {
    fn new(syncs: u64) -> Self {
        Self { syncs, bytes: 0 }
    }

    /// Counts `bytes` more written back, with the log's sync count now: whether the
    /// writeback must flush the cache itself (no log sync came for too long).
    fn wrote(&mut self, bytes: u64, syncs: u64) -> bool {
        if syncs != self.syncs {
            // A log sync flushed the cache meanwhile.
            *self = Self::new(syncs);
            return false;
        }
        self.bytes += bytes;
        if self.bytes < FLUSH_DEBT_BYTES {
            return false;
        }
        self.bytes = 0;
        true
    }
}

/// redb's file backend, keeping track of the chunks written since the last sync.
#[derive(Debug)]
pub(super) struct PacedFile {
    inner: FileBackend,
    /// A second descriptor of the same file, for the writeback calls.
    file: File,
    /// Indexes of the chunks written since the last sync, in file order. Bounded by the
    /// file's size over [`CHUNK_BYTES`] (a store that never syncs keeps at most that).
    dirty: Mutex<BTreeSet<u64>>,
    /// The log's segments written without their fdatasync, synced before this file is.
    log: Arc<Unsynced>,
    /// The schedule a writeback keeps, if any.
    pace: Arc<Pace>,
    /// The file grew since the last sync.
    resized: AtomicBool,
    /// The store's `LOCK` file beside it, whose `fdatasync` flushes the disk's write
    /// cache and writes nothing else; none where there is no store (an install's staging).
    flusher: Option<File>,
    /// `false` for a store opened with `fsync=False`: a sync writes nothing back and
    /// syncs nothing. redb's durable commits still order their writes through the page
    /// cache, which a crash of the process keeps (a power loss may not: what such a store
    /// promises).
    sync: bool,
}

impl PacedFile {
    /// Opens (or creates) the file at `path`, whose syncs first sync what `log` lists and
    /// keep to the schedule `pace` holds (none at all unless `sync`).
    pub(super) fn open(
        path: &Path,
        log: Arc<Unsynced>,
        pace: Arc<Pace>,
        sync: bool,
    ) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let second = file.try_clone()?;
        let flusher = File::open(path.with_file_name(LOCK_FILE)).ok();
        let inner = FileBackend::new(file).map_err(io::Error::other)?;
        Ok(Self {
            inner,
            file: second,
            dirty: Mutex::new(BTreeSet::new()),
            log,
            pace,
            resized: AtomicBool::new(false),
            flusher,
            sync,
        })
    }

    /// Flushes the disk's write cache. A failure is the writeback's: what it wrote may
    /// have been lost from the cache, and the tables' own fsync would not know.
    fn flush_cache(&self) -> io::Result<()> {
        match self.flusher.as_ref().map(File::sync_data) {
            Some(Err(err)) if !is_unsupported(&err) => Err(err),
            _ => Ok(()),
        }
    }

    /// Writes back the chunks written since the last sync, one at a time, on schedule if
    /// `paced` (and the calling thread follows one, see [`Pace::follow`]).
    fn write_back(&self, paced: bool) -> io::Result<()> {
        let chunks =
            std::mem::take(&mut *self.dirty.lock().unwrap_or_else(PoisonError::into_inner));
        let started = Instant::now();
        let chunks_len = chunks.len();
        #[allow(clippy::cast_precision_loss)] // a fraction: a few chunks' error is nothing
        let total = chunks_len as f64;
        let mut debt = FlushDebt::new(self.log.syncs());
        for (index, chunk) in chunks.into_iter().enumerate() {
            match write_back_range(&self.file, chunk * CHUNK_BYTES, CHUNK_BYTES) {
                Ok(()) => {}
                // A file system without it: the fsync does it all, as redb alone would.
                Err(err) if is_unsupported(&err) => return Ok(()),
                Err(err) => return Err(err),
            }
            if paced && debt.wrote(CHUNK_BYTES, self.log.syncs()) {
                self.flush_cache()?;
            }
            // After the last chunk nothing is left to spread: the fsync follows at once.
            if paced && index + 1 < chunks_len {
                #[allow(clippy::cast_precision_loss)]
                self.pace
                    .keep_to_schedule((index + 1) as f64 / total, started);
            }
        }
        Ok(())
    }
}

fn is_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP | libc::ESPIPE)
    )
}

/// Starts writing back the dirty pages of `len` bytes at `offset` and waits until they are
/// on the device (not durably: no cache flush, no metadata; the fsync does those).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn write_back_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: the descriptor belongs to `file`, which outlives the call; no memory is
    // passed.
    if unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere the fsync does all of it.
#[cfg(not(target_os = "linux"))]
fn write_back_range(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

impl StorageBackend for PacedFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)?;
        self.resized.store(true, Ordering::Release);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        if !self.sync {
            return Ok(());
        }
        self.log.sync()?;
        // redb syncs a file it grew while holding the lock its readers begin under: that
        // sync must not keep a schedule.
        let paced = !self.resized.swap(false, Ordering::AcqRel);
        self.write_back(paced)?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write(offset, data)?;
        if !self.sync {
            // Nothing is ever written back here: nothing to remember.
            return Ok(());
        }
        if let Some(last) = data.len().checked_sub(1) {
            let end = offset.saturating_add(last as u64);
            self.dirty
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(offset / CHUNK_BYTES..=end / CHUNK_BYTES);
        }
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use redb::{Builder, DatabaseError, ReadableDatabase, TableDefinition};

    use super::*;

    fn dirty(file: &PacedFile) -> Vec<u64> {
        file.dirty.lock().unwrap().iter().copied().collect()
    }

    #[test]
    fn a_writeback_flushes_the_cache_itself_only_after_a_megabyte_with_no_log_sync() {
        let chunks_per_flush = FLUSH_DEBT_BYTES / CHUNK_BYTES;
        let mut debt = FlushDebt::new(7);
        // No log sync: every megabyte written back is flushed by the writeback.
        let flushes: Vec<u64> = (1..=3 * chunks_per_flush)
            .filter(|_| debt.wrote(CHUNK_BYTES, 7))
            .collect();
        assert_eq!(flushes.len(), 3);
        // A log sync after every few chunks flushes the cache for it: never again.
        let mut syncs = 7;
        for chunk in 0..10 * chunks_per_flush {
            if chunk % (chunks_per_flush / 2) == 0 {
                syncs += 1;
            }
            assert!(!debt.wrote(CHUNK_BYTES, syncs), "flushed at chunk {chunk}");
        }
        // The debt counts again from the last log sync seen.
        let flushed_at = (1..=chunks_per_flush).find(|_| debt.wrote(CHUNK_BYTES, syncs));
        assert!(flushed_at.is_some_and(|at| at < chunks_per_flush));
    }

    #[test]
    fn a_write_marks_every_chunk_it_touches_and_a_sync_clears_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = PacedFile::open(
            &dir.path().join("t.redb"),
            Arc::default(),
            Arc::default(),
            true,
        )
        .unwrap();
        file.set_len(4 * CHUNK_BYTES).unwrap();
        file.write(CHUNK_BYTES - 1, b"ab").unwrap();
        file.write(3 * CHUNK_BYTES, b"c").unwrap();
        file.write(2 * CHUNK_BYTES, b"").unwrap();
        assert_eq!(dirty(&file), [0, 1, 3]);
        file.sync_data().unwrap();
        assert!(dirty(&file).is_empty());
        let mut back = [0u8; 2];
        file.read(CHUNK_BYTES - 1, &mut back).unwrap();
        assert_eq!(&back, b"ab");
    }

    /// The backend hands redb's file locks through: a second database on the same file
    /// is refused while the first is open, and allowed once it is closed.
    #[test]
    fn the_file_stays_locked_against_a_second_database() {
        const T: TableDefinition<u64, u64> = TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let first = Builder::new()
            .create_with_backend(
                PacedFile::open(&path, Arc::default(), Arc::default(), true).unwrap(),
            )
            .unwrap();
        let txn = first.begin_write().unwrap();
        txn.open_table(T).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
        let second = Builder::new().create_with_backend(
            PacedFile::open(&path, Arc::default(), Arc::default(), true).unwrap(),
        );
        assert!(
            matches!(second, Err(DatabaseError::DatabaseAlreadyOpen)),
            "{second:?}"
        );
        drop(first);
        let reopened = Builder::new()
            .create_with_backend(
                PacedFile::open(&path, Arc::default(), Arc::default(), true).unwrap(),
            )
            .unwrap();
        let read = reopened.begin_read().unwrap();
        assert_eq!(
            read.open_table(T).unwrap().get(1).unwrap().unwrap().value(),
            2
        );
    }
}
