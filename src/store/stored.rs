//! How a value is framed in redb: the encoded value followed by its CRC, so that a damaged
//! file is caught on the read that would return the damage.
//!
//! ```text
//! stored = value | crc u32 (little-endian)
//! crc    = CRC-32C of table | 0x00 | key_len u32 (little-endian) | key | value
//! ```
//! The table name and key are covered too, so a value moved to another key (a damaged
//! page pointer) fails its check. Table names never contain 0x00 and the key's length is
//! explicit, so no two `(table, key, value)` triples frame the same bytes. The overlay and
//! the log hold values unframed: only rows in redb carry the CRC.

use crate::codec::{decode_key, KeyRef};

/// Bytes the CRC adds to every stored value.
pub(crate) const CRC_LEN: usize = 4;

/// Rows whose framed bytes fit in this many are covered in one CRC pass.
const INLINE_ROW_LEN: usize = 256;

/// The CRC of one row. Each CRC pass has a fixed cost (its unaligned head and tail go a
/// byte at a time), most of the cost for a small row: `table | 0x00 | key_len | key |
/// value` is assembled on the stack and covered in one pass when it fits, and piece by
/// piece (the same bytes, so the same CRC) when it does not.
fn row_crc(table: &str, key: &[u8], value: &[u8]) -> u32 {
    let key_len = (key.len() as u32).to_le_bytes();
    let parts = [table.as_bytes(), &[0], &key_len, key, value];
    let mut row = [0u8; INLINE_ROW_LEN];
    let len = table.len() + 5 + key.len() + value.len();
    match row.get_mut(..len) {
        Some(row) => {
            let mut at = 0;
            for part in parts {
                row[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            crc32c::crc32c(row)
        }
        None => parts
            .iter()
            .fold(0, |crc, part| crc32c::crc32c_append(crc, part)),
    }
}

/// Writes the stored form of `value` into `out` (cleared first, so one buffer serves a
/// whole transaction without allocating per row).
pub(crate) fn seal_into(out: &mut Vec<u8>, table: &str, key: &[u8], value: &[u8]) {
    out.clear();
    out.reserve(value.len() + CRC_LEN);
    out.extend_from_slice(value);
    out.extend_from_slice(&row_crc(table, key, value).to_le_bytes());
}

/// Why a stored value failed its check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Damage {
    /// Shorter than its CRC.
    Truncated(usize),
    /// The CRC does not match: `(stored, computed)`.
    Mismatch(u32, u32),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Truncated(len) => {
                write!(f, "the stored value is {len} bytes, too short for its CRC")
            }
            Damage::Mismatch(stored, computed) => write!(
                f,
                "the stored value fails its CRC (stored {stored:#010x}, computed {computed:#010x})"
            ),
        }
    }
}

/// The value part of stored bytes, unchecked (all of them if they are too short to hold
/// a CRC): for uses that need the bytes but not their soundness.
pub(crate) fn without_crc(stored: &[u8]) -> &[u8] {
    &stored[..stored.len().saturating_sub(CRC_LEN)]
}

/// Checks a stored value and returns the value without its CRC (a borrow: no copy).
///
/// # Errors
/// [`Damage`] if the bytes are not what was written for this table and key.
pub(crate) fn unseal<'a>(table: &str, key: &[u8], stored: &'a [u8]) -> Result<&'a [u8], Damage> {
    let Some(split) = stored.len().checked_sub(CRC_LEN) else {
        return Err(Damage::Truncated(stored.len()));
    };
    let (value, crc) = stored.split_at(split);
    let stored_crc = u32::from_le_bytes(crc.try_into().expect("invariant: split off 4 bytes"));
    let computed = row_crc(table, key, value);
    if stored_crc == computed {
        Ok(value)
    } else {
        Err(Damage::Mismatch(stored_crc, computed))
    }
}

/// A key as a person reads it in an error: `'ana@example.com'`, `42` or `b'\x00\x01'`, as
/// Python would show it, or its raw bytes in hex if it does not decode.
#[must_use]
pub fn describe_key(key: &[u8]) -> String {
    // Both escapers escape quotes too.
    let quoted = |text: String| format!("'{text}'");
    match decode_key(key) {
        Ok(KeyRef::Int(i)) => i.to_string(),
        Ok(KeyRef::Str(s)) => quoted(s.escape_debug().to_string()),
        Ok(KeyRef::Bytes(b)) => format!("b{}", quoted(b.escape_ascii().to_string())),
        Err(_) => format!("<undecodable key 0x{}>", hex(key)),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealed(table: &str, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        seal_into(&mut out, table, key, value);
        out
    }

    proptest! {
        /// Fuzz target of the stored-value framing: a sealed value unseals to itself.
        #[test]
        fn fuzz_stored_value_round_trips(
            table in "[A-Za-z0-9_.-]{1,64}",
            key in proptest::collection::vec(any::<u8>(), 0..64),
            value in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let stored = sealed(&table, &key, &value);
            prop_assert_eq!(stored.len(), value.len() + CRC_LEN);
            prop_assert_eq!(unseal(&table, &key, &stored), Ok(value.as_slice()));
        }

        /// Fuzz target: flipping any bits of one byte of a stored value is always detected
        /// (CRC-32C catches every error burst of up to 32 bits).
        #[test]
        fn fuzz_stored_value_flips_are_always_detected(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            value in proptest::collection::vec(any::<u8>(), 0..512),
            at: prop::sample::Index,
            mask in 1u8..,
        ) {
            let mut stored = sealed("subscribers", &key, &value);
            let at = at.index(stored.len());
            stored[at] ^= mask;
            prop_assert!(matches!(
                unseal("subscribers", &key, &stored),
                Err(Damage::Mismatch(..))
            ));
        }

        /// Fuzz target: arbitrary bytes, keys and truncations give a value or an error,
        /// never a panic; anything accepted is exactly a sealed value.
        #[test]
        fn fuzz_arbitrary_stored_values_never_panic(
            key in proptest::collection::vec(any::<u8>(), 0..16),
            stored in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            if let Ok(value) = unseal("t", &key, &stored) {
                prop_assert_eq!(sealed("t", &key, value), stored);
            }
        }
    }

    #[test]
    fn keys_are_described_as_python_shows_them() {
        use crate::codec::encode_key;
        assert_eq!(describe_key(&encode_key(KeyRef::Int(-42))), "-42");
        assert_eq!(describe_key(&encode_key(KeyRef::Str("ana's"))), r"'ana\'s'");
        assert_eq!(
            describe_key(&encode_key(KeyRef::Bytes(b"\x00a"))),
            r"b'\x00a'"
        );
        assert_eq!(describe_key(b"\xff\x01"), "<undecodable key 0xff01>");
    }

    #[test]
    fn a_value_moved_to_another_key_or_table_fails_its_check() {
        let stored = sealed("subscribers", b"\x02ana", b"\x81\xa2ok\xc3");
        assert!(unseal("subscribers", b"\x02ana", &stored).is_ok());
        assert!(unseal("subscribers", b"\x02bob", &stored).is_err());
        assert!(unseal("templates", b"\x02ana", &stored).is_err());
        assert_eq!(
            unseal("t", b"k", &stored[..3]),
            Err(Damage::Truncated(3)),
            "shorter than a CRC"
        );
    }

    #[test]
    fn the_crc_covers_table_nul_key_length_key_and_value_in_that_order() {
        let mut framed = b"subscribers\x00".to_vec();
        framed.extend_from_slice(&4u32.to_le_bytes());
        framed.extend_from_slice(b"\x02ana\x81\xc3");
        assert_eq!(
            row_crc("subscribers", b"\x02ana", b"\x81\xc3"),
            crc32c::crc32c(&framed)
        );
        // Longer than any valid table name (64).
        let long = "t".repeat(65);
        let mut framed = long.clone().into_bytes();
        framed.push(0);
        framed.extend_from_slice(&1u32.to_le_bytes());
        framed.extend_from_slice(b"kv");
        assert_eq!(row_crc(&long, b"k", b"v"), crc32c::crc32c(&framed));
        // A row too long for the stack buffer takes the piecewise path: the same CRC.
        let key = vec![7u8; INLINE_ROW_LEN + 1];
        let mut framed = b"t\x00".to_vec();
        framed.extend_from_slice(&(key.len() as u32).to_le_bytes());
        framed.extend_from_slice(&key);
        framed.extend_from_slice(b"v");
        assert_eq!(row_crc("t", &key, b"v"), crc32c::crc32c(&framed));
    }
}
