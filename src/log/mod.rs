//! The segmented change log: append + fdatasync, recovery with torn-tail cutting, reading from
//! an LSN, and dropping whole segments. It knows no tables and no sockets.
//!
//! Segments are files named by the LSN of their first record (`00000000000000000001.seg`).
//! Only the last segment is ever written; every record is framed by [`crate::codec`].
//! Group commit lives one level up: the store batches records and hands each batch here.

mod cut;
mod fs;
mod large;
#[cfg(test)]
mod large_tests;
#[cfg(test)]
pub(crate) mod memfs;
mod open;
mod owner;
mod read;
mod recent;
mod record;
#[cfg(test)]
mod record_tests;
mod rewind;
#[cfg(test)]
mod rewind_tests;
mod room;
#[cfg(test)]
mod room_tests;
mod scan;
#[cfg(test)]
mod segment_tests;
mod synced;
#[cfg(test)]
mod synced_tests;
mod tail;
#[cfg(test)]
mod tail_tests;
#[cfg(test)]
mod tests;
mod unsynced;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use cut::{Cutter, SHRINK_STEP};
pub use fs::{DirFs, LogFs, SegmentFile};
pub use large::{LargeEntry, Replayed};
use open::segment_firsts;
pub use owner::{read_owner, write_owner, Owner, OWNER_FILE};
use recent::Recent;
pub use record::RecordWriter;
use scan::EntryId;
use synced::SyncedMark;
pub use tail::LogTail;
pub use unsynced::Unsynced;

use crate::codec;
use crate::error::{LogError, Result};

const SEGMENT_SUFFIX: &str = ".seg";
/// Added to a dropped segment's name while its file is cut down (see
/// [`Log::remove_segment`]); whatever a crash leaves under it is removed at the next open.
const DROPPED_SUFFIX: &str = ".dropped";
/// How the log writes.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The largest segment: a new segment is started once the current one is full, each
    /// one twice the size of the one before, from `first_segment_bytes` up to this size.
    pub segment_bytes: u64,
    /// The size of the first segment of a new log: an empty store stays small on disk.
    pub first_segment_bytes: u64,
    /// `fdatasync` every batch and `fsync` the directory on segment changes.
    pub fsync: bool,
    /// Bytes of the newest appended records also kept in memory, so that readers that
    /// follow the end of the log read them without touching the files.
    pub recent_bytes: usize,
    /// Where segments written by [`Log::append_unsynced`] are listed until synced; shared
    /// with whoever must sync them before its own durable writes (the tables' file).
    pub unsynced: Arc<Unsynced>,
    /// The log's last records may have been appended without an `fdatasync` each (a
    /// follower's): a power loss can keep a later page of them and lose an earlier one, so
    /// recovery cuts the last segment at its first bad record after the checkpoint even
    /// when valid records follow. Nothing past it was acknowledged as durable or made
    /// durable in the tables: each of those waits for a sync that covers every byte
    /// written before it.
    pub holes_are_torn: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            first_segment_bytes: 1 << 20,
            fsync: true,
            recent_bytes: 4 << 20,
            unsynced: Arc::default(),
            holes_are_torn: false,
        }
    }
}

struct Segment {
    first_lsn: u64,
    name: String,
    file: Arc<dyn SegmentFile>,
    /// The bytes it was preallocated to hold: the writer rolls to a new segment once the
    /// tail reaches them (a batch that crosses them still lands whole in this one).
    capacity: u64,
    /// The bytes of the file known to be allocated: a write past them reserves the space
    /// first (see [`room`]).
    allocated: AtomicU64,
    /// The commit time of its newest entry, once it is full and the time is known (set
    /// when the log rolls past it, or read once when retention first asks).
    newest_ms: OnceLock<u64>,
}

/// Records written at the tail, for [`Log::publish`].
struct Written<'a> {
    len: u64,
    last_lsn: u64,
    /// The identity of the last record.
    last: Option<EntryId>,
    /// The records themselves, if they are in memory (for [`Recent`]).
    records: Option<&'a [u8]>,
}

/// Where the writer stands: the end of the last segment and the next LSN to write.
struct Tail {
    offset: u64,
    next_lsn: u64,
}

/// A reading position in the log, kept by each consumer.
#[derive(Debug, Clone)]
pub struct LogPosition {
    next_lsn: u64,
    /// `(first LSN of a segment, byte offset)` where `next_lsn` was found last time.
    hint: Option<(u64, u64)>,
}

impl LogPosition {
    /// A position whose next entry is the one after `lsn`.
    #[must_use]
    pub fn after(lsn: u64) -> Self {
        Self {
            next_lsn: lsn.saturating_add(1),
            hint: None,
        }
    }

    /// The LSN of the next entry this position will read.
    #[must_use]
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }
}

/// A retained segment, as [`Log::segments`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The LSN of its first entry.
    pub first_lsn: u64,
    /// The bytes it holds.
    pub bytes: u64,
}

/// One entry as the log stores it: its payload, and what identifies it across stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// The entry's LSN.
    pub lsn: u64,
    /// The epoch it was committed in.
    pub epoch: u64,
    /// Its commit time, milliseconds since the Unix epoch (the primary's clock).
    pub timestamp_ms: u64,
    /// Its record CRC: with the LSN and epoch, this identifies the entry (a resume point
    /// compares all three to find where two stores' histories fork).
    pub crc: u32,
    /// The payload (header and body), exactly as stored.
    pub payload: Vec<u8>,
}

impl RawEntry {
    fn new(payload: Vec<u8>) -> Self {
        let read = |at: usize| {
            u64::from_le_bytes(payload[at..at + 8].try_into().expect("invariant: 8 bytes"))
        };
        // A payload read from the log passed its CRC check and is at least a header long.
        let (lsn, epoch, timestamp_ms) = (read(0), read(8), read(16));
        Self {
            lsn,
            epoch,
            timestamp_ms,
            crc: codec::record_crc(&payload),
            payload,
        }
    }
}

/// The append-only, segmented log of a store.
pub struct Log {
    fs: Arc<dyn LogFs>,
    options: LogOptions,
    segments: RwLock<Vec<Arc<Segment>>>,
    tail: Mutex<Tail>,
    /// The identity of the last entry written, if the log holds one.
    last: Mutex<Option<EntryId>>,
    recent: Recent,
    /// Cuts dropped segments down before they go (see [`Log::remove_segment`]).
    cutter: Arc<Cutter>,
    /// Held from taking segments off the list until they are queued to be cut, and while
    /// [`Log::reclaim_dropped`] waits: it never misses a drop under way.
    dropping: Mutex<()>,
    /// How far a sync of the log is known to have gone (see [`synced`]).
    synced: Arc<SyncedMark>,
    /// Bytes of records written since the disk's free space was last checked (see
    /// [`Log::check_free`]).
    unchecked: AtomicU64,
}

fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LogError {
    let context = context.into();
    move |source| LogError::Io { context, source }
}

fn corrupt(segment: &str, offset: u64, reason: impl Into<String>) -> LogError {
    LogError::Corrupt {
        segment: segment.to_owned(),
        offset,
        reason: reason.into(),
    }
}

impl Log {
    /// Overwrites `from..to` of `segment` with zeros and syncs it (`what` says why).
    fn zero_range(&self, segment: &Segment, from: u64, to: u64, what: &str) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let failed = || io_error(format!("{what} {}", segment.name));
        fs::write_zeros(&*segment.file, from, to).map_err(failed())?;
        if self.options.fsync {
            segment.file.sync_data().map_err(failed())?;
        }
        Ok(())
    }

    /// The commit time of the last entry, milliseconds since the Unix epoch (0 for an
    /// empty log): a store's next entry is never older, whatever its clock says then.
    #[must_use]
    pub fn last_timestamp_ms(&self) -> u64 {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map_or(0, |last| last.timestamp_ms)
    }

    /// The LSN the next appended record must carry.
    #[must_use]
    pub fn next_lsn(&self) -> u64 {
        self.tail
            .lock()
            .expect("invariant: no panic while holding the tail lock")
            .next_lsn
    }

    /// The oldest LSN still retained.
    #[must_use]
    pub fn oldest_lsn(&self) -> u64 {
        self.segments
            .read()
            .expect("invariant: no panic while holding the segment list")[0]
            .first_lsn
    }

    /// The retained segments, oldest first: each one's first LSN and the bytes it holds
    /// (the last one as written so far, the others as their files' sizes).
    ///
    /// # Errors
    /// A segment's size cannot be read.
    pub fn segments(&self) -> Result<Vec<SegmentInfo>> {
        let segments = self
            .segments
            .read()
            .expect("invariant: no panic while holding the segment list")
            .clone();
        let tail = self
            .tail
            .lock()
            .expect("invariant: no panic while holding the tail lock")
            .offset;
        let last = segments.len() - 1;
        segments
            .iter()
            .enumerate()
            .map(|(index, segment)| {
                let bytes = if index == last {
                    tail
                } else {
                    segment
                        .file
                        .size()
                        .map_err(io_error(format!("sizing {}", segment.name)))?
                };
                Ok(SegmentInfo {
                    first_lsn: segment.first_lsn,
                    bytes,
                })
            })
            .collect()
    }

    /// Appends framed records holding LSNs `next_lsn()..=last_lsn` and, with `fsync`, makes
    /// them durable before returning. Called by one writer at a time (the commit leader).
    ///
    /// # Errors
    /// An I/O failure. After a failed sync the file's state is unknown: the caller must stop
    /// writing (a failed `fdatasync` is never retried).
    pub fn append(&self, records: &[u8], last_lsn: u64) -> Result<()> {
        self.write(records, last_lsn, self.options.fsync)
    }

    /// Like [`Log::append`], without the `fdatasync`: the records are durable once
    /// [`Log::sync`] (or a sync of [`LogOptions::unsynced`]) that starts after this call
    /// returns. A crash before then may cut them as a torn tail.
    ///
    /// # Errors
    /// An I/O failure.
    pub fn append_unsynced(&self, records: &[u8], last_lsn: u64) -> Result<()> {
        self.write(records, last_lsn, false)
    }

    /// Makes every record appended so far durable.
    ///
    /// # Errors
    /// A failed `fdatasync` (now or before): the log's state is unknown.
    pub fn sync(&self) -> Result<()> {
        self.options
            .unsynced
            .sync()
            .map_err(io_error("fdatasync of the log"))
            .map_err(Into::into)
    }

    fn write(&self, records: &[u8], last_lsn: u64, sync: bool) -> Result<()> {
        self.sync_before(sync)?;
        let len = records.len() as u64;
        self.check_free(len, len)?;
        let mut tail = self.lock_tail();
        let segment = self.tail_segment(&mut tail, len)?;
        segment.make_room(tail.offset + len, len)?;
        segment
            .file
            .write_at(records, tail.offset)
            .map_err(io_error(format!("appending to {}", segment.name)))?;
        let written = Written {
            len,
            last_lsn,
            last: scan::last_record_id(records),
            records: Some(records),
        };
        self.publish(&mut tail, &segment, &written, sync)
    }

    /// What was appended unsynced before (a follower's log, now a primary's) is durable
    /// before anything after it is.
    fn sync_before(&self, sync: bool) -> Result<()> {
        if sync && !self.options.unsynced.is_empty() {
            self.sync()?;
        }
        Ok(())
    }

    fn lock_tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail
            .lock()
            .expect("invariant: no panic while holding the tail lock")
    }

    /// The segment the next `needed` bytes of records go into: the last one, or a new one
    /// if it is full.
    fn tail_segment(&self, tail: &mut Tail, needed: u64) -> Result<Arc<Segment>> {
        let segment = Arc::clone(
            self.segments
                .read()
                .expect("invariant: no panic while holding the segment list")
                .last()
                .expect("invariant: the log always has a segment"),
        );
        if tail.offset >= segment.capacity {
            return self.roll(tail, &segment, needed);
        }
        Ok(segment)
    }

    /// Makes records just written at the tail of `segment` part of the log: syncs them
    /// (`sync`) and moves the tail past them, where readers see them.
    fn publish(
        &self,
        tail: &mut Tail,
        segment: &Arc<Segment>,
        written: &Written<'_>,
        sync: bool,
    ) -> Result<()> {
        if sync {
            segment
                .file
                .sync_data()
                .map_err(io_error(format!("fdatasync of {}", segment.name)))?;
            self.options.unsynced.count_sync();
            self.synced.synced(written.last_lsn);
        } else if self.options.fsync {
            self.options.unsynced.add(&segment.file, written.last_lsn);
        }
        match written.records {
            Some(records) => self.recent.keep(
                segment.first_lsn,
                tail.offset,
                tail.next_lsn,
                written.last_lsn,
                records,
            ),
            // Not in memory: what is kept must run without a gap to the end of the log.
            None => self.recent.forget(),
        }
        tail.offset += written.len;
        tail.next_lsn = written.last_lsn + 1;
        if let Some(id) = written.last {
            *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(id);
        }
        // A batch that fills its segment (a bulk load's entry crosses it at once) starts
        // the next one now, while its writer leads: otherwise the next writer creates it
        // (a preallocation and two syncs) while the checkpoint that follows a load writes
        // back what the load put in the tables: the first put after a 1M-row load took
        // 1-4 ms instead of 0.7. A failed sync is the write's: syncs are never retried (the
        // store closes itself with the cause; the batch is durable, and a reopen replays
        // it). No room for the next segment is not: this batch is durable, and the next
        // write tries again (and is refused, with nothing written, if there is still none).
        if sync && tail.offset >= segment.capacity {
            match self.roll(tail, segment, 0) {
                Err(err) if err.is_not_written() => {
                    tracing::warn!(error = %err, "the log cannot start its next segment yet");
                }
                rolled => {
                    rolled?;
                }
            }
        }
        Ok(())
    }

    /// Starts the segment after `full` (the last one), whose records `tail` ends, with room
    /// for at least `needed` bytes; returns it.
    fn roll(&self, tail: &mut Tail, full: &Segment, needed: u64) -> Result<Arc<Segment>> {
        // A segment is durable before the next one is written: a crash never leaves a
        // hole in an older segment under records in a newer one. (Syncing nothing still
        // waits for a sync that runs.)
        if self.options.fsync {
            self.sync()?;
        }
        let last = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = last.filter(|last| last.lsn + 1 == tail.next_lsn) {
            let _ = full.newest_ms.set(last.timestamp_ms);
        }
        // Each segment doubles the last one's size up to the largest: a log that is
        // written little stays small, one written much rolls (and is trimmed) rarely.
        let bytes = full
            .capacity
            .saturating_mul(2)
            .max(self.options.first_segment_bytes);
        let bytes = self.within_floor(bytes, needed)?;
        let next = self.create_segment(tail.next_lsn, bytes, needed)?;
        self.segments
            .write()
            .expect("invariant: no panic while holding the segment list")
            .push(Arc::clone(&next));
        tail.offset = 0;
        Ok(next)
    }

    /// Removes whole segments whose every entry is before `lsn`; never the last segment.
    /// Returns how many were removed. The segments leave the list at once (appends and
    /// readers do not wait for the files to go; a reader already in one reads it to its end).
    ///
    /// # Errors
    /// An I/O failure removing a file or syncing the directory.
    pub fn drop_before(&self, lsn: u64) -> Result<usize> {
        // The segment after the last one dropped must hold an entry: the batch that fills a
        // segment starts the next one empty, and a log with no entry left would not know
        // the identity of its last one after a reopen. (`next_lsn` only grows: read first,
        // it keeps at least that.)
        let lsn = lsn.min(self.next_lsn().saturating_sub(1));
        let _dropping = self.dropping.lock().unwrap_or_else(PoisonError::into_inner);
        let removed: Vec<Arc<Segment>> = {
            let mut segments = self
                .segments
                .write()
                .expect("invariant: no panic while holding the segment list");
            let keep_from = segments
                .iter()
                .skip(1)
                .take_while(|s| s.first_lsn <= lsn)
                .count();
            segments.drain(..keep_from).collect()
        };
        // A crash before the files are gone leaves old segments in front of the log:
        // recovery starts at the checkpoint and reads past them, and they go next time.
        let count = removed.len();
        let mut to_cut = Vec::new();
        for segment in removed {
            if let Some(renamed) = self.remove_segment(segment)? {
                to_cut.push(renamed);
            }
        }
        if count > 0 && self.options.fsync {
            // Before any cut: a renamed segment never comes back under its name cut.
            self.fs
                .sync_dir()
                .map_err(io_error("syncing the log directory"))?;
        }
        self.cutter.cut(to_cut).map_err(io_error(
            "starting the thread that removes dropped segments",
        ))?;
        Ok(count)
    }

    /// Removes at once the dropped segments still being cut down and returns once they are
    /// gone (a compaction's caller waits for the space; later drops are cut gently again).
    pub fn reclaim_dropped(&self) {
        let _dropping = self.dropping.lock().unwrap_or_else(PoisonError::into_inner);
        self.cutter.rush();
    }

    /// Removes a dropped segment's file, or, for a large one, renames it out of the log and
    /// returns it with its new name and size, to be cut down a step at a time before it
    /// goes ([`Cutter`], on a thread of its own: nobody waits for it). The blocks that one
    /// removal frees are discarded at the next journal commit on a file system mounted
    /// with `discard`, and a writer's fdatasync waited 60 ms behind the 100 MB of a bulk
    /// load's segment. Renamed first, so that a crash midway never leaves a cut segment in
    /// the log (the next open removes it). A segment that a reader still holds is removed
    /// whole: the reader reads it to its end.
    fn remove_segment(&self, segment: Arc<Segment>) -> Result<Option<(Segment, String, u64)>> {
        let name = segment.name.clone();
        let gone = |what: &str| io_error(format!("{what} {name}"));
        let size = segment.file.size().map_err(gone("sizing"))?;
        let segment = match Arc::try_unwrap(segment) {
            Ok(segment) if size > SHRINK_STEP => segment,
            _ => {
                self.fs.remove(&name).map_err(gone("removing"))?;
                return Ok(None);
            }
        };
        let dropped = format!("{name}{DROPPED_SUFFIX}");
        self.fs.rename(&name, &dropped).map_err(gone("renaming"))?;
        Ok(Some((segment, dropped, size)))
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // A store reopened at once finds no file still being cut (a thread that panicked
        // left its file for the next open).
        self.cutter.finish();
    }
}
