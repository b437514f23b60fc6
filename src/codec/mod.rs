//! Encodings with explicit byte order: keys (ordered, type-tagged) and log entries.

mod entry;
mod key;

pub use entry::{decode_entry, encode_ops, frame_record, payload_lsn, Entry, Op, RECORD_HEADER_LEN};
pub use key::{decode_key, encode_key, KeyRef};
