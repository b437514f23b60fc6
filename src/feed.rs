//! The change feed: committed entries read back from the log by LSN, filtered by commit time
//! and table, one entry at a time. An entry is kept as its stored payload plus the offsets of
//! the ops the filter selected, so a million-op entry costs its bytes and four bytes an op,
//! and each op is decoded only when it is used.

use std::collections::{HashSet, VecDeque};

use crate::codec::{encode_ops, frame_record, op_at, payload_ops, Entry, OpRef, RECORD_HEADER_LEN};
use crate::error::{CodecError, Result};
use crate::log::{LogPosition, RawEntry};
use crate::store::Store;

/// Entries read from the log at a time.
const READ_ENTRIES: usize = 256;
/// About how many bytes of entries are read at a time (one entry may be larger).
const READ_BYTES: usize = 8 << 20;

/// Which entries and ops a feed gives. The LSN range is fixed when the request is made, so
/// two reads of one request give the same entries.
#[derive(Debug, Clone)]
pub struct FeedRequest {
    /// Entries with an LSN greater than this.
    pub since: u64,
    /// ... up to and including this LSN.
    pub last: u64,
    /// Only ops of these tables; an entry with none of them is skipped (`None`: all).
    pub tables: Option<HashSet<String>>,
    /// Only entries committed at or after this millisecond (since the Unix epoch).
    /// Commit times are kept to the millisecond: an instant given finer is taken as the
    /// millisecond it falls in, so that an entry committed in that millisecond after the
    /// instant is kept, and a `since_ms` and an `until_ms` of one instant split the log.
    pub since_ms: Option<i64>,
    /// Only entries committed before this millisecond (since the Unix epoch).
    pub until_ms: Option<i64>,
    /// At most this many entries.
    pub limit: usize,
}

impl FeedRequest {
    /// Every entry after `since` up to `last`, unfiltered.
    #[must_use]
    pub fn new(since: u64, last: u64) -> Self {
        Self {
            since,
            last,
            tables: None,
            since_ms: None,
            until_ms: None,
            limit: usize::MAX,
        }
    }

    fn keeps_time(&self, timestamp_ms: u64) -> bool {
        let ms = i64::try_from(timestamp_ms).unwrap_or(i64::MAX);
        self.since_ms.is_none_or(|since| ms >= since)
            && self.until_ms.is_none_or(|until| ms < until)
    }

    fn keeps_table(&self, table: &str) -> bool {
        self.tables.as_ref().is_none_or(|t| t.contains(table))
    }

    /// The entry with the ops this request selects, or `None` if it selects none of it (a
    /// commit time out of range, or no op of the tables asked for). Ignores the LSN range
    /// and the limit, which the reader applies.
    ///
    /// # Errors
    /// [`CodecError::Malformed`] for ops that do not decode.
    pub fn select(&self, raw: RawEntry) -> Result<Option<FeedEntry>, CodecError> {
        if !self.keeps_time(raw.timestamp_ms) {
            return Ok(None);
        }
        let entry = FeedEntry::select(raw, self)?;
        Ok((!entry.is_empty() || self.tables.is_none()).then_some(entry))
    }
}

/// One entry of a feed: its stored payload and the ops the request selected.
#[derive(Debug)]
pub struct FeedEntry {
    /// Its LSN.
    pub lsn: u64,
    /// The epoch it was committed in.
    pub epoch: u64,
    /// Its commit time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    payload: Vec<u8>,
    /// Byte offsets in `payload` of the selected ops (payloads are below 4 GiB).
    offsets: Vec<u32>,
}

impl FeedEntry {
    /// How many ops were selected.
    #[must_use]
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether no op was selected.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The selected op at `index` (below [`FeedEntry::len`]).
    ///
    /// # Errors
    /// [`CodecError::Malformed`] never for an entry the feed gave (its ops were read once).
    ///
    /// # Panics
    /// If `index` is out of range.
    pub fn op(&self, index: usize) -> Result<OpRef<'_>, CodecError> {
        op_at(&self.payload, self.offsets[index] as usize)
    }

    /// A decoded entry (as a divergence report holds it) with all its ops.
    #[must_use]
    pub fn whole(entry: &Entry) -> Self {
        let body = encode_ops(&entry.ops);
        let mut record = Vec::new();
        frame_record(
            &mut record,
            entry.lsn,
            entry.epoch,
            entry.timestamp_ms,
            &body,
            0,
        );
        let raw = RawEntry {
            lsn: entry.lsn,
            epoch: entry.epoch,
            timestamp_ms: entry.timestamp_ms,
            crc: 0,
            payload: record.split_off(RECORD_HEADER_LEN),
        };
        Self::select(raw, &FeedRequest::new(0, u64::MAX))
            .expect("invariant: an encoded entry decodes")
    }

    fn select(raw: RawEntry, request: &FeedRequest) -> Result<Self, CodecError> {
        let mut offsets = Vec::new();
        let mut ops = payload_ops(&raw.payload)?;
        for op in ops.by_ref() {
            let (offset, op) = op?;
            if request.keeps_table(op.table) {
                offsets.push(
                    u32::try_from(offset).expect("invariant: record payloads are below 2 GiB"),
                );
            }
        }
        ops.finish()?;
        offsets.shrink_to_fit();
        Ok(Self {
            lsn: raw.lsn,
            epoch: raw.epoch,
            timestamp_ms: raw.timestamp_ms,
            payload: raw.payload,
            offsets,
        })
    }
}

/// A reader of the entries a [`FeedRequest`] selects, oldest first.
pub struct Feed {
    store: Store,
    request: FeedRequest,
    position: LogPosition,
    remaining: usize,
    buffer: VecDeque<RawEntry>,
}

impl Feed {
    /// A reader from the start of the request's range.
    #[must_use]
    pub fn new(store: Store, request: FeedRequest) -> Self {
        Self {
            store,
            position: LogPosition::after(request.since),
            remaining: request.limit,
            request,
            buffer: VecDeque::new(),
        }
    }

    /// The next selected entry, or `None` at the end of the range or the limit.
    ///
    /// # Errors
    /// [`crate::error::LogError::Truncated`] if the range is no longer retained, a closed
    /// store, corruption, I/O.
    pub fn next_entry(&mut self) -> Result<Option<FeedEntry>> {
        while self.remaining > 0 {
            let Some(raw) = self.next_raw()? else {
                self.remaining = 0;
                return Ok(None);
            };
            let Some(entry) = self.request.select(raw)? else {
                continue;
            };
            self.remaining -= 1;
            return Ok(Some(entry));
        }
        Ok(None)
    }

    fn next_raw(&mut self) -> Result<Option<RawEntry>> {
        if self.buffer.is_empty() {
            let next = self.position.next_lsn();
            if next > self.request.last {
                return Ok(None);
            }
            let wanted = usize::try_from(self.request.last - next + 1)
                .unwrap_or(usize::MAX)
                .min(READ_ENTRIES);
            let batch = self
                .store
                .read_log_raw(&mut self.position, wanted, READ_BYTES)?;
            self.buffer.extend(batch);
        }
        Ok(self.buffer.pop_front())
    }
}
