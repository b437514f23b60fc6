//! Encodings with explicit byte order: keys (ordered, type-tagged), log entries, a
//! `MessagePack` token reader for values, and the extensions values use for datetimes and
//! dates.

mod entry;
mod key;
pub mod msgpack;
mod ops;
mod timestamp;

pub use entry::{
    decode_entry, frame_payload, frame_record, op_at, payload_epoch, payload_lsn, payload_ops,
    payload_timestamp, record_crc, record_header, Entry, Op, OpRef, PayloadOps, MAX_RECORD_BYTES,
    RECORD_HEADER_LEN, RECORD_PREFIX_LEN,
};
pub use key::{decode_key, encode_key, encode_key_into, KeyRef};
pub use msgpack::{Reader, Token, DATE_EXT, MAX_DEPTH, TIMESTAMP_EXT};
pub use ops::{count_bytes, encode_ops, whole_ops, EncodedOps};
pub use timestamp::{decode_date, decode_timestamp, encode_date, encode_timestamp};
