//! Space for the log's records, reserved before any byte of them is written.
//!
//! A write that runs out of space halfway leaves bytes of a record at the tail that the log
//! does not know about, so the store must close itself. Reserving the space first turns a
//! full disk into a clean refusal: [`LogError::NotWritten`], nothing written, the log as it
//! was, the next write free to try again. A new segment that cannot have its usual size
//! takes a smaller one (down to the first segment's size, or what the write needs), so a
//! log near a full disk keeps going in small steps instead of giving up with the space for
//! a doubled segment missing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::{io_error, segment_name, Log, Segment};
use crate::error::{LogError, Result};

/// A record this large (or a record written in pieces, once it is) is checked against the
/// disk's free space before it is written.
const LARGE_RECORD_BYTES: u64 = 1 << 20;

impl Log {
    /// Refuses `len` bytes of records, part of a record of `record` bytes so far (the
    /// piece included), if the disk could not hold the record twice: once here, once more
    /// in the tables, which take its rows after it is durable. Past that point a full disk
    /// would close the store (the tables' engine stops at its first failed write), so a
    /// large write that could not fit is refused while nothing of it is written. Smaller
    /// writes are not checked: the space the log has preallocated covers them.
    ///
    /// # Errors
    /// [`LogError::NotWritten`] (`ENOSPC`) when the disk has less than that free.
    pub(super) fn check_free(&self, len: u64, record: u64) -> Result<()> {
        if record < LARGE_RECORD_BYTES {
            return Ok(());
        }
        let Some(free) = self.fs.free_bytes() else {
            return Ok(());
        };
        let needed = len.saturating_add(record);
        if free >= needed {
            return Ok(());
        }
        Err(LogError::NotWritten {
            context: format!(
                "keeping {needed} bytes free for {len} bytes of log and the tables' copy of its \
                 rows ({free} are)"
            ),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        }
        .into())
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
        let file = self
            .fs
            .open(&name, true)
            .map_err(io_error(format!("creating {name}")))?;
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
                        context: format!("reserving {size} bytes for {name}"),
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
                context: format!("reserving {len} bytes in {name}"),
                source,
            }
            .into());
        }
        self.allocated.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }
}
