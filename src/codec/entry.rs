//! The log record format. All integers are little-endian.
//!
//! ```text
//! record  = payload_len u32 | crc u32 | payload
//! payload = lsn u64 | epoch u64 | timestamp_ms u64 | body
//! body    = op_count u32 | op*
//! op      = kind u8 (1 put, 2 delete) | table_len u8 | table | key_len u32 | key
//!           | (put only) value_len u32 | value
//! ```
//! `crc` is the CRC-32C of `body` followed by the 24 header bytes: the body's CRC is
//! computed before the writer takes the log lock, and extending it by the header once the
//! LSN is known costs a few nanoseconds under the lock, whatever the body's size.

use crate::error::CodecError;

/// Bytes of `payload_len` and `crc` in front of every record.
pub const RECORD_HEADER_LEN: usize = 8;
/// The largest record payload the format allows (2 GiB). Readers accept anything up to
/// this, whatever limit the writer was configured with, so a record that was committed is
/// never mistaken for garbage after a configuration change.
pub const MAX_RECORD_BYTES: usize = 1 << 31;
const PAYLOAD_HEADER_LEN: usize = 24;
pub(super) const KIND_PUT: u8 = 1;
pub(super) const KIND_DELETE: u8 = 2;

/// One operation of a transaction, with its key already encoded by [`super::encode_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The table's name.
    pub table: String,
    /// The encoded key.
    pub key: Vec<u8>,
    /// The encoded value for a put, `None` for a delete.
    pub value: Option<Vec<u8>>,
}

impl Op {
    /// The operation, borrowed.
    #[must_use]
    pub fn borrowed(&self) -> OpRef<'_> {
        OpRef {
            table: &self.table,
            key: &self.key,
            value: self.value.as_deref(),
        }
    }
}

/// One committed transaction as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its log sequence number (dense, from 1).
    pub lsn: u64,
    /// The epoch of the primary that committed it.
    pub epoch: u64,
    /// Commit time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Its operations, in the order they were made.
    pub ops: Vec<Op>,
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len)
        .expect("invariant: keys, values and op counts are limited below 4 GiB before encoding")
}

/// Appends one framed record to `out`; `body_crc` is `crc32c(body)`.
pub fn frame_record(
    out: &mut Vec<u8>,
    lsn: u64,
    epoch: u64,
    timestamp_ms: u64,
    body: &[u8],
    body_crc: u32,
) {
    let header = record_header(lsn, epoch, timestamp_ms, body.len(), body_crc);
    out.reserve(header.len() + body.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
}

/// Bytes of a record in front of its body.
pub const RECORD_PREFIX_LEN: usize = RECORD_HEADER_LEN + PAYLOAD_HEADER_LEN;

/// What precedes a body of `body_len` bytes whose CRC-32C is `body_crc` in its record: the
/// record header, then the payload's LSN, epoch and commit time.
#[must_use]
pub fn record_header(
    lsn: u64,
    epoch: u64,
    timestamp_ms: u64,
    body_len: usize,
    body_crc: u32,
) -> [u8; RECORD_PREFIX_LEN] {
    let mut header = [0u8; RECORD_PREFIX_LEN];
    let payload = &mut header[RECORD_HEADER_LEN..];
    payload[0..8].copy_from_slice(&lsn.to_le_bytes());
    payload[8..16].copy_from_slice(&epoch.to_le_bytes());
    payload[16..24].copy_from_slice(&timestamp_ms.to_le_bytes());
    let crc = crc32c::crc32c_append(body_crc, payload);
    let payload_len = len_u32(PAYLOAD_HEADER_LEN + body_len);
    header[0..4].copy_from_slice(&payload_len.to_le_bytes());
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Appends one framed record around an already encoded `payload` (as shipped by a primary).
pub fn frame_payload(out: &mut Vec<u8>, payload: &[u8]) {
    out.reserve(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(&len_u32(payload.len()).to_le_bytes());
    out.extend_from_slice(&record_crc(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The CRC a record carries for `payload` (see the module docs for its definition).
#[must_use]
pub fn record_crc(payload: &[u8]) -> u32 {
    let split = PAYLOAD_HEADER_LEN.min(payload.len());
    crc32c::crc32c_append(crc32c::crc32c(&payload[split..]), &payload[..split])
}

/// Reads the LSN of a payload without decoding the rest (`None` if it is too short).
#[must_use]
pub fn payload_lsn(payload: &[u8]) -> Option<u64> {
    payload
        .get(0..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("invariant: slice of 8")))
}

/// Reads the epoch of a payload without decoding the rest (`None` if it is too short).
#[must_use]
pub fn payload_epoch(payload: &[u8]) -> Option<u64> {
    payload
        .get(8..16)
        .map(|b| u64::from_le_bytes(b.try_into().expect("invariant: slice of 8")))
}

/// Reads the commit time of a payload without decoding the rest (`None` if it is too
/// short).
#[must_use]
pub fn payload_timestamp(payload: &[u8]) -> Option<u64> {
    payload
        .get(16..24)
        .map(|b| u64::from_le_bytes(b.try_into().expect("invariant: slice of 8")))
}

/// One operation borrowed from an entry's payload (see [`payload_ops`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpRef<'a> {
    /// The table's name.
    pub table: &'a str,
    /// The encoded key.
    pub key: &'a [u8],
    /// The encoded value for a put, `None` for a delete.
    pub value: Option<&'a [u8]>,
}

impl OpRef<'_> {
    /// The operation as an owned [`Op`].
    #[must_use]
    pub fn to_op(&self) -> Op {
        Op {
            table: self.table.to_owned(),
            key: self.key.to_vec(),
            value: self.value.map(<[u8]>::to_vec),
        }
    }
}

/// The operations of a payload, decoded one at a time, each with its byte offset in the
/// payload (which [`op_at`] reads back): nothing is copied.
pub struct PayloadOps<'a> {
    payload: &'a [u8],
    offset: usize,
    left: u32,
}

/// The operations of a record payload (its CRC already checked), one at a time.
///
/// # Errors
/// [`CodecError::Malformed`] if the payload is shorter than its header.
pub fn payload_ops(payload: &[u8]) -> Result<PayloadOps<'_>, CodecError> {
    let body = payload
        .get(PAYLOAD_HEADER_LEN..)
        .ok_or_else(|| malformed("shorter than its lengths claim"))?;
    let left = Cursor { bytes: body }.u32()?;
    Ok(PayloadOps {
        payload,
        offset: PAYLOAD_HEADER_LEN + 4,
        left,
    })
}

impl PayloadOps<'_> {
    /// Checks that nothing follows the last op (call once the iterator is exhausted).
    ///
    /// # Errors
    /// [`CodecError::Malformed`] if ops are left or bytes trail the last one.
    pub fn finish(self) -> Result<(), CodecError> {
        if self.left > 0 || self.offset != self.payload.len() {
            return Err(malformed("trailing bytes after the last op"));
        }
        Ok(())
    }
}

impl<'a> Iterator for PayloadOps<'a> {
    type Item = Result<(usize, OpRef<'a>), CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let at = self.offset;
        let mut cursor = Cursor {
            bytes: &self.payload[at..],
        };
        match read_op(&mut cursor) {
            Ok(op) => {
                self.left -= 1;
                self.offset = self.payload.len() - cursor.bytes.len();
                Some(Ok((at, op)))
            }
            Err(err) => {
                // Stay failed: the rest of the payload cannot be found.
                self.left = 0;
                Some(Err(err))
            }
        }
    }
}

/// The operation at byte `offset` of `payload`, as [`PayloadOps`] gave it.
///
/// # Errors
/// [`CodecError::Malformed`] if no whole op starts there.
pub fn op_at(payload: &[u8], offset: usize) -> Result<OpRef<'_>, CodecError> {
    let bytes = payload
        .get(offset..)
        .ok_or_else(|| malformed("op offset past the end"))?;
    read_op(&mut Cursor { bytes })
}

pub(super) fn read_op<'a>(cursor: &mut Cursor<'a>) -> Result<OpRef<'a>, CodecError> {
    let kind = cursor.take(1)?[0];
    let table_len = cursor.take(1)?[0] as usize;
    let table = std::str::from_utf8(cursor.take(table_len)?)
        .map_err(|_| malformed("table name is not UTF-8"))?;
    let key_len = cursor.u32()? as usize;
    let key = cursor.take(key_len)?;
    let value = match kind {
        KIND_PUT => {
            let value_len = cursor.u32()? as usize;
            Some(cursor.take(value_len)?)
        }
        KIND_DELETE => None,
        _ => return Err(malformed("unknown op kind")),
    };
    Ok(OpRef { table, key, value })
}

/// Appends `op` as a body holds it (see the module docs). Its table name is at most 255
/// bytes and its key and value below 4 GiB: callers check them against the store's limits
/// first.
pub(super) fn write_op(out: &mut Vec<u8>, op: OpRef<'_>) {
    let table = &op.table.as_bytes()[..op.table.len().min(255)];
    let (kind, value_len) = match op.value {
        Some(value) => (KIND_PUT, 4 + value.len()),
        None => (KIND_DELETE, 0),
    };
    out.reserve(6 + table.len() + op.key.len() + value_len);
    out.push(kind);
    out.push(table.len() as u8);
    out.extend_from_slice(table);
    out.extend_from_slice(&len_u32(op.key.len()).to_le_bytes());
    out.extend_from_slice(op.key);
    if let Some(value) = op.value {
        out.extend_from_slice(&len_u32(value.len()).to_le_bytes());
        out.extend_from_slice(value);
    }
}

/// Decodes a record payload (its CRC already checked) into an [`Entry`].
///
/// # Errors
/// [`CodecError::Malformed`] if the payload is shorter than it claims or has an unknown op.
pub fn decode_entry(payload: &[u8]) -> Result<Entry, CodecError> {
    let mut cursor = Cursor { bytes: payload };
    let lsn = cursor.u64()?;
    let epoch = cursor.u64()?;
    let timestamp_ms = cursor.u64()?;
    let mut reader = payload_ops(payload)?;
    // Each op takes at least 6 bytes: never trust a count to size an allocation.
    let mut ops = Vec::with_capacity((reader.left as usize).min(payload.len() / 6));
    for op in reader.by_ref() {
        ops.push(op?.1.to_op());
    }
    reader.finish()?;
    Ok(Entry {
        lsn,
        epoch,
        timestamp_ms,
        ops,
    })
}

pub(super) fn malformed(reason: &str) -> CodecError {
    CodecError::Malformed {
        what: "entry",
        reason: reason.to_owned(),
    }
}

pub(super) struct Cursor<'a> {
    pub(super) bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.bytes.len() {
            return Err(malformed("shorter than its lengths claim"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("invariant: took 4"),
        ))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("invariant: took 8"),
        ))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::codec::encode_ops;
    use proptest::prelude::*;

    pub(in crate::codec) fn op_strategy() -> impl Strategy<Value = Op> {
        (
            "[a-z_]{1,20}",
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        )
            .prop_map(|(table, key, value)| Op { table, key, value })
    }

    proptest! {
        #[test]
        fn fuzz_framed_entries_decode_to_what_was_encoded(
            lsn: u64, epoch: u64, ts: u64,
            ops in proptest::collection::vec(op_strategy(), 0..10),
        ) {
            let body = encode_ops(&ops);
            let mut record = Vec::new();
            frame_record(&mut record, lsn, epoch, ts, &body, crc32c::crc32c(&body));
            let len = u32::from_le_bytes(record[0..4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(record[4..8].try_into().unwrap());
            let payload = &record[RECORD_HEADER_LEN..];
            prop_assert_eq!(len, payload.len());
            prop_assert_eq!(crc, record_crc(payload), "the framed CRC is the one readers check");
            prop_assert_eq!(payload_lsn(payload), Some(lsn));
            prop_assert_eq!(payload_epoch(payload), Some(epoch));
            prop_assert_eq!(payload_timestamp(payload), Some(ts));
            let entry = decode_entry(payload).unwrap();
            prop_assert_eq!(entry, Entry { lsn, epoch, timestamp_ms: ts, ops });
        }

        #[test]
        fn fuzz_op_offsets_read_back_the_ops_in_order(
            ops in proptest::collection::vec(op_strategy(), 0..10),
        ) {
            let body = encode_ops(&ops);
            let mut record = Vec::new();
            frame_record(&mut record, 7, 1, 0, &body, 0);
            let payload = &record[RECORD_HEADER_LEN..];
            let mut reader = payload_ops(payload).unwrap();
            let mut read = Vec::new();
            for op in reader.by_ref() {
                let (offset, op) = op.unwrap();
                prop_assert_eq!(op_at(payload, offset).unwrap(), op);
                read.push(op.to_op());
            }
            reader.finish().unwrap();
            prop_assert_eq!(read, ops);
        }

        #[test]
        fn fuzz_decoding_arbitrary_payloads_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_entry(&bytes);
        }

        /// A valid payload with bits flipped decodes to an error or to an entry that encodes
        /// back to exactly those bytes (the decoder accepts only the canonical form).
        #[test]
        fn fuzz_flipped_payloads_fail_or_decode_canonically(
            lsn: u64, epoch: u64, ts: u64,
            ops in proptest::collection::vec(op_strategy(), 0..6),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..), 1..4),
        ) {
            let body = encode_ops(&ops);
            let mut record = Vec::new();
            frame_record(&mut record, lsn, epoch, ts, &body, crc32c::crc32c(&body));
            let mut payload = record.split_off(RECORD_HEADER_LEN);
            let len = payload.len();
            for (at, mask) in &flips {
                payload[at.index(len)] ^= mask;
            }
            if let Ok(entry) = decode_entry(&payload) {
                let body = encode_ops(&entry.ops);
                let mut again = Vec::new();
                frame_record(&mut again, entry.lsn, entry.epoch, entry.timestamp_ms, &body, 0);
                prop_assert_eq!(&again[RECORD_HEADER_LEN..], &payload[..]);
            }
        }
    }

    #[test]
    fn truncated_payload_is_malformed_not_a_panic() {
        let ops = vec![Op {
            table: "t".into(),
            key: b"k".to_vec(),
            value: Some(b"v".to_vec()),
        }];
        let body = encode_ops(&ops);
        let mut record = Vec::new();
        frame_record(&mut record, 1, 1, 0, &body, crc32c::crc32c(&body));
        let payload = &record[RECORD_HEADER_LEN..];
        for cut in 0..payload.len() {
            assert!(
                decode_entry(&payload[..cut]).is_err(),
                "cut at {cut} must be refused"
            );
        }
    }
}
