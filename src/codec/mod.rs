//! Encodings with explicit byte order: keys (ordered, type-tagged), log entries, and the
//! `MessagePack` timestamp extension used for datetime values.

mod entry;
mod key;
pub mod msgpack;
mod timestamp;

pub use entry::{
    decode_entry, encode_ops, frame_payload, frame_record, op_at, payload_epoch, payload_lsn,
    payload_ops, record_crc, Entry, Op, OpRef, PayloadOps, MAX_RECORD_BYTES, RECORD_HEADER_LEN,
};
pub use key::{decode_key, encode_key, KeyRef};
pub use timestamp::{decode_timestamp, encode_timestamp};
