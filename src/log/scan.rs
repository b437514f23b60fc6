//! Finding records in segment bytes: the one place that knows where a record ends.

use std::io;
use std::sync::Arc;

use super::SegmentFile;
use crate::codec::{payload_lsn, record_crc, MAX_RECORD_BYTES, RECORD_HEADER_LEN};

/// The smallest payload: LSN, epoch, timestamp and an op count.
const MIN_PAYLOAD: usize = 28;

/// What lies at an offset of a segment.
pub(super) enum Next<'a> {
    /// A record whose CRC (`crc`) checks; `end` is the offset just past it.
    Record {
        payload: &'a [u8],
        crc: u32,
        end: usize,
    },
    /// Nothing more was written: only zeros (preallocated space) or the end of the file.
    End,
    /// Something that is not a valid record.
    Bad { reason: String },
    /// The start of a record still being written, or never finished: a bulk load's, whose
    /// header is written last (see [`UNFINISHED`]). Nothing valid follows it.
    Unfinished,
}

/// What a record being written in pieces holds where its header goes until it is finished:
/// a length no record can have, then a tag. Recovery cuts it and all after it at once,
/// whatever the load wrote there (user data that may look like records).
pub(super) const UNFINISHED: [u8; RECORD_HEADER_LEN] =
    [0xFF, 0xFF, 0xFF, 0xFF, b'w', b'i', b'p', 0];

/// Parses the record at `offset` of `data` (bytes from that segment's start).
pub(super) fn next_record(data: &[u8], offset: usize) -> Next<'_> {
    let rest = data.get(offset..).unwrap_or_default();
    if rest.starts_with(&UNFINISHED) {
        return Next::Unfinished;
    }
    if rest.iter().all(|&b| b == 0) {
        return Next::End;
    }
    if rest.len() < RECORD_HEADER_LEN {
        return Next::Bad {
            reason: "truncated record header".to_owned(),
        };
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("invariant: 4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("invariant: 4 bytes"));
    if !(MIN_PAYLOAD..=MAX_RECORD_BYTES).contains(&len) {
        return Next::Bad {
            reason: format!("implausible record length {len}"),
        };
    }
    let Some(payload) = rest.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len) else {
        return Next::Bad {
            reason: "truncated record".to_owned(),
        };
    };
    if record_crc(payload) != crc {
        return Next::Bad {
            reason: "record checksum mismatch".to_owned(),
        };
    }
    Next::Record {
        payload,
        crc,
        end: offset + RECORD_HEADER_LEN + len,
    }
}

/// The identity of the last of the framed records `records` holds (records just written,
/// so well formed; `None` if there are none).
pub(super) fn last_record_id(records: &[u8]) -> Option<EntryId> {
    let mut last = None;
    let mut at = 0;
    while let Some(header) = records.get(at..at + RECORD_HEADER_LEN) {
        let len = u32::from_le_bytes(header[0..4].try_into().expect("invariant: 4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("invariant: 4 bytes"));
        let start = at + RECORD_HEADER_LEN;
        last = Some(EntryId::of(records.get(start..).unwrap_or_default(), crc));
        at = start + len;
    }
    last
}

/// What identifies a log entry: its LSN, epoch and record CRC (and, alongside, its
/// commit time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EntryId {
    pub lsn: u64,
    pub epoch: u64,
    pub crc: u32,
    pub timestamp_ms: u64,
}

impl EntryId {
    /// The identity of a record's `payload` whose CRC is `crc`.
    pub(super) fn of(payload: &[u8], crc: u32) -> Self {
        let word = |from: usize| {
            payload.get(from..from + 8).map_or(0, |b| {
                u64::from_le_bytes(b.try_into().expect("invariant: 8 bytes"))
            })
        };
        Self {
            lsn: word(0),
            epoch: word(8),
            crc,
            timestamp_ms: word(16),
        }
    }
}

/// Whether any valid record with an LSN at or after `lsn` starts at or after `from`.
/// Separates a torn tail (nothing valid follows) from damage in the middle of the log.
pub(super) fn valid_record_after(data: &[u8], from: usize, lsn: u64) -> bool {
    let plausible = lsn..lsn.saturating_add(1 << 32);
    (from..data.len().saturating_sub(RECORD_HEADER_LEN + MIN_PAYLOAD)).any(|offset| {
        let lsn_at = payload_lsn(&data[offset + RECORD_HEADER_LEN..]).unwrap_or(0);
        plausible.contains(&lsn_at) && matches!(next_record(data, offset), Next::Record { .. })
    })
}

/// Buffered positional reads of one segment, for consumers that follow the log.
pub(super) struct ChunkReader {
    file: Arc<dyn SegmentFile>,
    buf: Vec<u8>,
    buf_start: u64,
}

const CHUNK: usize = 1 << 20;

impl ChunkReader {
    pub(super) fn new(file: Arc<dyn SegmentFile>) -> Self {
        Self {
            file,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// Makes `buf` hold at least `len` bytes from `offset` (fewer at the end of the file).
    fn fill(&mut self, offset: u64, len: usize) -> io::Result<()> {
        let have = offset >= self.buf_start
            && offset + len as u64 <= self.buf_start + self.buf.len() as u64;
        if !have {
            // Never size a buffer by an unchecked length field beyond what the file holds.
            let available = self.file.size()?.saturating_sub(offset) as usize;
            self.buf.resize(len.max(CHUNK).min(available), 0);
            let read = self.file.read_at(&mut self.buf, offset)?;
            self.buf.truncate(read);
            self.buf_start = offset;
        }
        Ok(())
    }

    /// Whether the next [`CHUNK`] bytes from `offset` (or all, if fewer are left) are zero.
    /// The log is written in order and preallocated with zeros, so that much zero space
    /// is where nothing more was written: scanning every zero byte of a preallocated
    /// segment (tens of MiB) would cost a reopen more than the rest of it.
    pub(super) fn zeros_from(&mut self, offset: u64) -> io::Result<bool> {
        self.fill(offset, CHUNK)?;
        let at = usize::try_from(offset - self.buf_start).unwrap_or(usize::MAX);
        Ok(self
            .buf
            .get(at..)
            .is_none_or(|window| window.iter().all(|&b| b == 0)))
    }

    /// Every byte of the file from `offset` on, read into memory (for the rare paths that
    /// must look at all of it: damage or a torn tail).
    pub(super) fn rest_from(&self, offset: u64) -> io::Result<Vec<u8>> {
        let len = self.file.size()?.saturating_sub(offset);
        let mut rest = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
        let read = self.file.read_at(&mut rest, offset)?;
        rest.truncate(read);
        Ok(rest)
    }

    /// The length field of the record at `offset`, if the file holds one there.
    pub(super) fn record_len(&mut self, offset: u64) -> io::Result<Option<usize>> {
        self.fill(offset, RECORD_HEADER_LEN)?;
        let at = (offset - self.buf_start) as usize;
        Ok(self
            .buf
            .get(at..at + 4)
            .map(|len| u32::from_le_bytes(len.try_into().expect("invariant: 4 bytes")) as usize))
    }

    /// The record at `offset`; `end` in the answer is an absolute offset.
    pub(super) fn next_record(&mut self, offset: u64) -> io::Result<Next<'_>> {
        self.fill(offset, RECORD_HEADER_LEN)?;
        let at = (offset - self.buf_start) as usize;
        if let Some(header) = self.buf.get(at..at + RECORD_HEADER_LEN) {
            let len =
                u32::from_le_bytes(header[0..4].try_into().expect("invariant: 4 bytes")) as usize;
            if len <= MAX_RECORD_BYTES {
                self.fill(offset, RECORD_HEADER_LEN + len)?;
            }
        }
        let at = (offset - self.buf_start) as usize;
        let window = &self.buf[at..];
        // Only the zeros of this window are checked for the end: preallocated space is
        // zero to the end of the file, and a record never starts with a zero length.
        Ok(match next_record(window, 0) {
            Next::Record { payload, crc, end } => Next::Record {
                payload,
                crc,
                end: end + offset as usize,
            },
            other => other,
        })
    }
}
