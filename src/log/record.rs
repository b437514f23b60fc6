//! One record written in pieces as a bulk load encodes its rows, rather than framed in
//! memory and written at its commit: the load never holds its whole body (hundreds of MiB
//! for a few million rows) and the kernel writes it back while the rows are still coming,
//! so the commit is left with its header and the `fdatasync`.
//!
//! Until its header is written the record is not part of the log: where its header goes
//! it holds a mark no record can start with (`scan::UNFINISHED`, synced before anything
//! is written after it), and readers stop there as at the end of the log. A crash before
//! the commit leaves the mark and the bytes after it, which recovery cuts at once, however
//! many and whatever they hold (user data can look like records); a load given up zeroes
//! what it wrote, mark included.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::fs::write_zeros;
use super::scan::{EntryId, UNFINISHED};
use super::{io_error, Log, Segment, Written};
use crate::codec::{count_bytes, record_header, EncodedOps, RECORD_PREFIX_LEN};
use crate::error::{LogError, Result};

/// Bytes of the op count, between the record's prefix and its ops.
const COUNT_LEN: u64 = 4;

/// A record begun at the tail of the log by [`Log::begin_record`].
pub struct RecordWriter {
    segment: Arc<Segment>,
    /// Where the record starts (its header).
    start: u64,
    /// The LSN it must carry: the next one when it began.
    lsn: u64,
    /// Bytes of ops written.
    len: u64,
    count: usize,
    /// CRC-32C of the ops written.
    crc: u32,
    /// The end of what was written or tried (a failed write may have written part).
    written_to: u64,
}

impl std::fmt::Debug for RecordWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordWriter")
            .field("segment", &self.segment.name)
            .field("start", &self.start)
            .field("lsn", &self.lsn)
            .field("bytes", &self.len)
            .field("ops", &self.count)
            .finish_non_exhaustive()
    }
}

impl RecordWriter {
    /// Bytes of the record so far (the ops, and what goes in front of them).
    #[must_use]
    pub fn len(&self) -> usize {
        RECORD_PREFIX_LEN + self.body_len()
    }

    /// Bytes of its body so far: the op count and the ops.
    #[must_use]
    pub fn body_len(&self) -> usize {
        COUNT_LEN as usize + self.len as usize
    }

    /// Whether no op was written yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn ops_offset(&self) -> u64 {
        self.start + RECORD_PREFIX_LEN as u64 + COUNT_LEN
    }

    /// Gives the record up: zeroes what was written of it, its mark included, so that the
    /// next records do not sit before its bytes, and gives back to the disk what it took
    /// past the segment's preallocated size (a load refused for want of room leaves the
    /// room it found).
    ///
    /// # Errors
    /// A write failed: the caller must stop appending to this log (its reopen cuts the
    /// record, which is still marked unfinished or torn).
    pub fn abandon(self) -> std::io::Result<()> {
        let capacity = self.segment.capacity.max(self.start);
        // Cut first: on a full copy-on-write file system, the zeros need the space it frees.
        if self.written_to > capacity {
            self.segment.file.set_len(capacity)?;
            self.segment.allocated.store(capacity, Ordering::Release);
        }
        write_zeros(
            &*self.segment.file,
            self.start,
            self.written_to.min(capacity),
        )
    }
}

impl Log {
    /// Begins a record at the tail of the log, to be written op by op with
    /// [`Log::write_ops`] and added with [`Log::finish_record`] (or given up with
    /// [`RecordWriter::abandon`]). Nothing else may append meanwhile: the caller holds the
    /// store's writer lock, with every earlier entry appended.
    ///
    /// # Errors
    /// Starting a new segment failed.
    pub fn begin_record(&self) -> Result<RecordWriter> {
        let mut tail = self.lock_tail();
        let mark = UNFINISHED.len() as u64;
        let segment = self.tail_segment(&mut tail, mark)?;
        segment.make_room(tail.offset + mark, mark)?;
        // Marked unfinished, durably, before any op is written after it.
        let failed = |source| LogError::Io {
            context: format!("beginning a record in {}", segment.name),
            source,
        };
        segment
            .file
            .write_at(&UNFINISHED, tail.offset)
            .map_err(failed)?;
        if self.options.fsync {
            segment.file.sync_data().map_err(failed)?;
        }
        Ok(RecordWriter {
            start: tail.offset,
            lsn: tail.next_lsn,
            written_to: tail.offset + mark,
            segment,
            len: 0,
            count: 0,
            crc: 0,
        })
    }

    /// Writes `ops` after those written to `record` so far (to the page cache: nothing is
    /// synced before [`Log::finish_record`]).
    ///
    /// # Errors
    /// The write failed.
    pub fn write_ops(&self, record: &mut RecordWriter, ops: &EncodedOps) -> Result<()> {
        let bytes = ops.as_bytes();
        let at = record.ops_offset() + record.len;
        let len = bytes.len() as u64;
        self.check_free(len, record.len + len)?;
        record.segment.make_room(at + len, len)?;
        record.written_to = record.written_to.max(at + len);
        record
            .segment
            .file
            .write_at(bytes, at)
            .map_err(io_error(format!("appending to {}", record.segment.name)))?;
        record.crc = crc32c::crc32c_append(record.crc, bytes);
        record.len += bytes.len() as u64;
        record.count += ops.len();
        Ok(())
    }

    /// Writes `record`'s header (it carries `lsn`, `epoch` and `timestamp_ms`), syncs it
    /// as [`Log::append`] does, and adds it to the log.
    ///
    /// # Errors
    /// The log's tail moved since the record began (a bug: nothing may append meanwhile),
    /// or the write or the sync failed.
    #[allow(clippy::needless_pass_by_value)] // Taken: a record is finished once.
    pub fn finish_record(
        &self,
        record: RecordWriter,
        lsn: u64,
        epoch: u64,
        timestamp_ms: u64,
    ) -> Result<()> {
        let sync = self.options.fsync;
        self.sync_before(sync)?;
        let mut tail = self.lock_tail();
        if (tail.offset, tail.next_lsn, lsn) != (record.start, record.lsn, record.lsn) {
            return Err(LogError::Io {
                context: format!("finishing a record in {}", record.segment.name),
                source: std::io::Error::other(format!(
                    "the log moved while LSN {lsn} was written (it began as LSN {} at \
                     offset {}, the tail is now LSN {} at offset {})",
                    record.lsn, record.start, tail.next_lsn, tail.offset
                )),
            }
            .into());
        }
        let count = count_bytes(record.count);
        let body_crc =
            crc32c::crc32c_combine(crc32c::crc32c(&count), record.crc, record.len as usize);
        let header = record_header(lsn, epoch, timestamp_ms, record.body_len(), body_crc);
        let mut prefix = header.to_vec();
        prefix.extend_from_slice(&count);
        let segment = &record.segment;
        segment
            .file
            .write_at(&prefix, record.start)
            .map_err(io_error(format!("appending to {}", segment.name)))?;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("invariant: 4 bytes"));
        let written = Written {
            len: (prefix.len() + record.len as usize) as u64,
            last_lsn: lsn,
            last: Some(EntryId {
                lsn,
                epoch,
                crc,
                timestamp_ms,
            }),
            records: None,
        };
        self.publish(&mut tail, segment, &written, sync)
    }
}
