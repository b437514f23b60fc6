//! Records too large to read whole when the log is recovered. One bulk load is one entry
//! of up to 2 GiB, written in pieces (see [`super::RecordWriter`]); reopening the store
//! after a crash must not need all of it in memory, nor its ops decoded one allocation at
//! a time (four times its size). Such a record's CRC is checked in pieces, then its ops
//! are handed over in pieces, as they were written.

use std::io;

use super::scan::EntryId;
use super::{corrupt, SegmentFile};
use crate::codec::{self, EncodedOps, Entry, MAX_RECORD_BYTES, RECORD_HEADER_LEN};
use crate::error::Result;

/// A record whose payload is larger than this is recovered in pieces.
pub(super) const LARGE_RECORD: usize = 16 << 20;
/// Bytes read at a time from a large record.
const PIECE: usize = 8 << 20;
/// The payload's LSN, epoch and commit time, then the body's op count.
const PAYLOAD_HEADER_LEN: usize = 24;
const COUNT_LEN: usize = 4;

/// A large record whose bytes are all in its segment file (not yet checked).
pub(super) struct LargeRecord {
    offset: u64,
    len: usize,
    crc: u32,
    header: [u8; PAYLOAD_HEADER_LEN],
}

impl LargeRecord {
    /// The record at `offset` of `file`, if its length field says it is large and the file
    /// holds that many bytes (anything else is left to the reading of whole records).
    pub(super) fn at(file: &dyn SegmentFile, offset: u64) -> io::Result<Option<Self>> {
        let mut front = [0u8; RECORD_HEADER_LEN + PAYLOAD_HEADER_LEN];
        if file.read_at(&mut front, offset)? < front.len() {
            return Ok(None);
        }
        let word = |at: usize| u32::from_le_bytes(front[at..at + 4].try_into().expect("4 bytes"));
        let len = word(0) as usize;
        let in_file = offset + (RECORD_HEADER_LEN + len) as u64 <= file.size()?;
        if !(LARGE_RECORD < len && len <= MAX_RECORD_BYTES && in_file) {
            return Ok(None);
        }
        Ok(Some(Self {
            offset,
            len,
            crc: word(4),
            header: front[RECORD_HEADER_LEN..]
                .try_into()
                .expect("invariant: the payload header's bytes"),
        }))
    }

    /// Whether the record's CRC checks, read in pieces.
    pub(super) fn checks(&self, file: &dyn SegmentFile) -> io::Result<bool> {
        let mut crc = 0;
        let mut buf = vec![0u8; PIECE];
        let mut at = self.body_start();
        while at < self.end() {
            let want = PIECE.min((self.end() - at) as usize);
            let read = file.read_at(&mut buf[..want], at)?;
            if read == 0 {
                return Ok(false);
            }
            crc = crc32c::crc32c_append(crc, &buf[..read]);
            at += read as u64;
        }
        Ok(crc32c::crc32c_append(crc, &self.header) == self.crc)
    }

    /// The offset just past the record.
    pub(super) fn end(&self) -> u64 {
        self.offset + (RECORD_HEADER_LEN + self.len) as u64
    }

    fn body_start(&self) -> u64 {
        self.offset + (RECORD_HEADER_LEN + PAYLOAD_HEADER_LEN) as u64
    }

    pub(super) fn id(&self) -> EntryId {
        EntryId::of(&self.header, self.crc)
    }

    /// Its entry, to be read in pieces from `file` (named `segment`); its CRC checked.
    pub(super) fn entry<'a>(&self, file: &'a dyn SegmentFile, segment: &'a str) -> LargeEntry<'a> {
        let id = self.id();
        LargeEntry {
            lsn: id.lsn,
            epoch: id.epoch,
            timestamp_ms: id.timestamp_ms,
            file,
            segment,
            offset: self.offset,
            next: self.body_start(),
            end: self.end(),
            count: None,
            read: 0,
            pending: Vec::new(),
        }
    }
}

/// An entry recovered from a large record: its ops come in pieces of a few MiB.
pub struct LargeEntry<'a> {
    /// Its LSN.
    pub lsn: u64,
    /// The epoch of the primary that committed it.
    pub epoch: u64,
    /// Commit time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    file: &'a dyn SegmentFile,
    segment: &'a str,
    /// Where the record starts, for errors.
    offset: u64,
    /// The next byte of the body to read, and the end of the record.
    next: u64,
    end: u64,
    /// The op count the body starts with, once read.
    count: Option<u32>,
    /// Ops handed over so far.
    read: u64,
    /// Bytes read and not yet handed over (part of an op, at most).
    pending: Vec<u8>,
}

impl std::fmt::Debug for LargeEntry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LargeEntry")
            .field("lsn", &self.lsn)
            .field("segment", &self.segment)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl LargeEntry<'_> {
    /// The next ops of the entry, in order; `None` once all were given.
    ///
    /// # Errors
    /// A read failed, or the body is not the ops its CRC vouched for (corruption).
    pub fn next_ops(&mut self) -> Result<Option<EncodedOps>> {
        loop {
            let (ops, taken) = codec::whole_ops(&self.pending, PIECE).map_err(|e| self.bad(e))?;
            if taken > 0 {
                self.pending.drain(..taken);
                self.read += ops.len() as u64;
                return Ok(Some(ops));
            }
            if self.next == self.end {
                let count = self.count.map_or(0, u64::from);
                if !self.pending.is_empty() || self.read != count {
                    return Err(self.bad("the ops do not add up to the op count").into());
                }
                return Ok(None);
            }
            let want = PIECE.min((self.end - self.next) as usize);
            let have = self.pending.len();
            self.pending.resize(have + want, 0);
            let read = self
                .file
                .read_at(&mut self.pending[have..], self.next)
                .map_err(super::io_error(format!("reading {}", self.segment)))?;
            if read < want {
                return Err(self.bad("the record ends before its length").into());
            }
            self.next += want as u64;
            if self.count.is_none() {
                let count = self.pending.drain(..COUNT_LEN).collect::<Vec<_>>();
                self.count = Some(u32::from_le_bytes(
                    count
                        .try_into()
                        .expect("invariant: a piece holds the op count"),
                ));
            }
        }
    }

    /// All of the entry, decoded (for consumers that keep entries whole).
    ///
    /// # Errors
    /// As [`LargeEntry::next_ops`].
    pub fn into_entry(mut self) -> Result<Entry> {
        let mut ops = Vec::new();
        while let Some(more) = self.next_ops()? {
            ops.extend(more.iter().map(|op| op.to_op()));
        }
        Ok(Entry {
            lsn: self.lsn,
            epoch: self.epoch,
            timestamp_ms: self.timestamp_ms,
            ops,
        })
    }

    fn bad(&self, reason: impl std::fmt::Display) -> crate::error::LogError {
        corrupt(self.segment, self.offset, reason.to_string())
    }
}

/// An entry that recovery replays: whole, or from a large record, in pieces.
#[derive(Debug)]
pub enum Replayed<'a> {
    /// An entry read and decoded whole.
    Whole(Entry),
    /// A large entry, whose ops are read as they are taken.
    Large(LargeEntry<'a>),
}

impl Replayed<'_> {
    /// Its LSN.
    #[must_use]
    pub fn lsn(&self) -> u64 {
        match self {
            Self::Whole(entry) => entry.lsn,
            Self::Large(large) => large.lsn,
        }
    }

    /// All of the entry, decoded.
    ///
    /// # Errors
    /// As [`LargeEntry::next_ops`].
    pub fn into_entry(self) -> Result<Entry> {
        match self {
            Self::Whole(entry) => Ok(entry),
            Self::Large(large) => large.into_entry(),
        }
    }
}
