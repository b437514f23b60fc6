//! Space for the log's records, reserved before any byte of them is written.
//!
//! A write that runs out of space halfway leaves bytes of a record at the tail that the log
//! does not know about, so the store must close itself. Reserving the space first turns a
//! full disk into a clean refusal: [`LogError::NotWritten`], nothing written, the log as it
//! was, the next write free to try again. A new segment that cannot have its usual size
//! takes a smaller one (down to the first segment's size, or what the write needs), so a
//! log near a full disk keeps going in small steps instead of giving up with the space for
//! a doubled segment missing. And the log leaves the tables room to take what it holds
//! (see [`Log::check_free`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::{io_error, segment_name, Log, Segment};
use crate::error::{LogError, Result};

/// The log checks the disk's free space after this many bytes of records (and before any
/// record this large, or a record written in pieces once it is).
const CHECK_EVERY_BYTES: u64 = 1 << 20;
/// The most of its disk the store keeps free for its tables: a quarter of the disk, up to
/// this.
const TABLES_FLOOR_BYTES: u64 = 64 << 20;

/// What the store keeps free for its tables on a disk of `size` bytes.
fn tables_floor(size: u64) -> u64 {
    (size / 4).min(TABLES_FLOOR_BYTES)
}

/// The refusal of a write that would leave less than `floor` free (`twice`: and a large
/// write's size twice on top of it), with `free` free.
fn below_floor(floor: u64, twice: Option<u64>, free: u64) -> crate::Error {
    let human = crate::human::bytes;
    let more = twice.map_or(String::new(), |twice| {
        format!(", and twice a large write's size ({}) more", human(twice))
    });
    LogError::NotWritten {
        context: format!(
            "the store keeps {} of its disk free for its tables{more}; {} are free",
            human(floor),
            human(free)
        ),
        source: std::io::Error::from_raw_os_error(libc::ENOSPC),
    }
    .into()
}

impl Log {
    /// Refuses `len` bytes of records, part of a record of `record` bytes so far (the
    /// piece included), where the disk would then be too full for the tables. The tables
    /// take the rows after the log has made them durable, and their engine stops at its
    /// first failed write: a disk that fills under them closes the store. So the log keeps
    /// a floor of the disk free for them (a quarter of it, up to 64 MiB), checked every
    /// MiB of records, and a large record needs its own size free on top of that a second
    /// time. A write refused here has nothing of it written.
    ///
    /// # Errors
    /// [`LogError::NotWritten`] (`ENOSPC`) when the disk has less than that free.
    pub(super) fn check_free(&self, len: u64, record: u64) -> Result<()> {
        let large = record >= CHECK_EVERY_BYTES;
        let since = self.unchecked.fetch_add(len, Ordering::AcqRel) + len;
        if !large && since < CHECK_EVERY_BYTES {
            return Ok(());
        }
        let Some((free, size)) = self.fs.space() else {
            return Ok(());
        };
        let floor = tables_floor(size);
        let twice = large.then(|| len.saturating_add(record));
        if free >= floor.saturating_add(twice.unwrap_or(0)) {
            self.unchecked.store(0, Ordering::Release);
            return Ok(());
        }
        // The next write checks again, whatever its size.
        self.unchecked.store(CHECK_EVERY_BYTES, Ordering::Release);
        Err(below_floor(floor, twice, free))
    }

    /// The size of the next segment: `bytes`, or less where the disk would then keep less
    /// than the tables' floor free (see [`Log::check_free`]), but at least what the write
    /// that starts it needs and the first segment's size.
    ///
    /// # Errors
    /// [`LogError::NotWritten`] (`ENOSPC`) when not even that much fits above the floor.
    pub(super) fn within_floor(&self, bytes: u64, needed: u64) -> Result<u64> {
        let Some((free, size)) = self.fs.space() else {
            return Ok(bytes);
        };
        let floor = tables_floor(size);
        let room = free.saturating_sub(floor);
        let least = needed.max(self.options.first_segment_bytes.min(bytes));
        if room >= least {
            return Ok(bytes.min(room).max(least));
        }
        Err(below_floor(floor, None, free))
    }

    /// Creates a segment preallocated to `bytes` (within the largest size allowed), or, if
    /// the file system cannot give that much, to the largest half of it down to the first
    /// segment's size it can give. Either way it holds at least `needed` bytes.
    ///
    /// # Errors
    /// [`LogError::NotWritten`] when even the smallest size cannot be reserved (the file is
    /// removed again), or an I/O failure of its creation or sync.
    pub(super) fn create_segment(
        &self,
        first_lsn: u64,
        bytes: u64,
        needed: u64,
    ) -> Result<Arc<Segment>> {
        let mut capacity = bytes.clamp(1, self.options.segment_bytes.max(1));
        let smallest = self.options.first_segment_bytes.clamp(1, capacity);
        let name = segment_name(first_lsn);
        let file = self.fs.open(&name, true).map_err(|source| {
            // A directory that needs a block (or an inode) the full disk does not have.
            if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
                LogError::NotWritten {
                    context: format!("creating {name}"),
                    source,
                }
            } else {
                io_error(format!("creating {name}"))(source)
            }
        })?;
        let allocated = loop {
            let size = capacity.max(needed);
            match file.preallocate(size) {
                Ok(()) => break size,
                // What a failed preallocation reserved is given back before a smaller try.
                Err(_) if capacity > smallest && file.set_len(0).is_ok() => {
                    capacity = (capacity / 2).max(smallest);
                }
                Err(source) => {
                    // Nothing points at the file yet; one left behind is removed at the
                    // next open, or reused by the next try.
                    let _ = file.set_len(0);
                    let _ = self.fs.remove(&name);
                    return Err(LogError::NotWritten {
                        context: format!("reserving {} for {name}", crate::human::bytes(size)),
                        source,
                    }
                    .into());
                }
            }
        };
        if self.options.fsync {
            file.sync_data()
                .map_err(io_error(format!("syncing {name}")))?;
            self.fs
                .sync_dir()
                .map_err(io_error("syncing the log directory"))?;
        }
        Ok(Arc::new(Segment {
            first_lsn,
            name,
            file,
            capacity,
            allocated: AtomicU64::new(allocated),
            newest_ms: OnceLock::new(),
        }))
    }
}

impl Segment {
    /// Makes sure the bytes of the segment up to `end` are allocated before `len` bytes
    /// that end there are written (a batch that crosses the segment's capacity, a bulk load's
    /// pieces).
    ///
    /// # Errors
    /// [`LogError::NotWritten`]: the space cannot be reserved; the file keeps its size.
    pub(super) fn make_room(&self, end: u64, len: u64) -> Result<()> {
        if end <= self.allocated.load(Ordering::Acquire) {
            return Ok(());
        }
        let name = &self.name;
        let before = self
            .file
            .size()
            .map_err(io_error(format!("sizing {name}")))?;
        if let Err(source) = self.file.preallocate(end) {
            // Part of it may have been reserved (and the file grown with zeros): give it back.
            let _ = self.file.set_len(before);
            return Err(LogError::NotWritten {
                context: format!("reserving {} in {name}", crate::human::bytes(len)),
                source,
            }
            .into());
        }
        self.allocated.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }
}
