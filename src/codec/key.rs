//! Keys are stored as a type tag followed by a payload whose byte order sorts like the value,
//! so redb's byte-wise ordering is the natural order within each type (ints < str < bytes).

use crate::error::CodecError;

const TAG_INT: u8 = 0x01;
const TAG_STR: u8 = 0x02;
const TAG_BYTES: u8 = 0x03;
const INT_SIGN_FLIP: u64 = 1 << 63;

/// A key as the user gave it, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRef<'a> {
    /// A 64-bit signed integer.
    Int(i64),
    /// A UTF-8 string.
    Str(&'a str),
    /// Raw bytes.
    Bytes(&'a [u8]),
}

/// Encodes a key into its ordered, type-tagged byte form.
#[must_use]
pub fn encode_key(key: KeyRef<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_key_into(&mut out, key);
    out
}

/// Encodes a key as [`encode_key`] does, into `out` (cleared first): a bulk load reuses
/// one buffer for every row.
pub fn encode_key_into(out: &mut Vec<u8>, key: KeyRef<'_>) {
    out.clear();
    match key {
        KeyRef::Int(i) => {
            out.reserve(9);
            out.push(TAG_INT);
            // Flipping the sign bit makes big-endian two's complement sort numerically.
            out.extend_from_slice(&((i as u64) ^ INT_SIGN_FLIP).to_be_bytes());
        }
        KeyRef::Str(s) => tagged(out, TAG_STR, s.as_bytes()),
        KeyRef::Bytes(b) => tagged(out, TAG_BYTES, b),
    }
}

fn tagged(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    out.reserve(1 + payload.len());
    out.push(tag);
    out.extend_from_slice(payload);
}

/// Decodes an encoded key.
///
/// # Errors
/// [`CodecError::Malformed`] for an unknown tag, a short int or invalid UTF-8.
pub fn decode_key(bytes: &[u8]) -> Result<KeyRef<'_>, CodecError> {
    let malformed = |reason: &str| CodecError::Malformed {
        what: "key",
        reason: reason.to_owned(),
    };
    let (&tag, payload) = bytes.split_first().ok_or_else(|| malformed("empty"))?;
    match tag {
        TAG_INT => {
            let raw: [u8; 8] = payload
                .try_into()
                .map_err(|_| malformed("an int key must have 8 payload bytes"))?;
            Ok(KeyRef::Int(
                (u64::from_be_bytes(raw) ^ INT_SIGN_FLIP) as i64,
            ))
        }
        TAG_STR => std::str::from_utf8(payload)
            .map(KeyRef::Str)
            .map_err(|_| malformed("a str key must be UTF-8")),
        TAG_BYTES => Ok(KeyRef::Bytes(payload)),
        _ => Err(malformed("unknown type tag")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn int_keys_round_trip_and_sort_numerically(a: i64, b: i64) {
            let (ea, eb) = (encode_key(KeyRef::Int(a)), encode_key(KeyRef::Int(b)));
            prop_assert_eq!(decode_key(&ea).unwrap(), KeyRef::Int(a));
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
        }

        #[test]
        fn str_keys_round_trip_and_sort_like_their_bytes(a: String, b: String) {
            let (ea, eb) = (encode_key(KeyRef::Str(&a)), encode_key(KeyRef::Str(&b)));
            prop_assert_eq!(decode_key(&ea).unwrap(), KeyRef::Str(&a));
            prop_assert_eq!(a.as_bytes().cmp(b.as_bytes()), ea.cmp(&eb));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes: Vec<u8>) {
            let _ = decode_key(&bytes);
        }
    }

    #[test]
    fn same_text_in_different_types_never_collides() {
        let int = encode_key(KeyRef::Int(42));
        let text = encode_key(KeyRef::Str("42"));
        let raw = encode_key(KeyRef::Bytes(b"42"));
        assert_ne!(int, text);
        assert_ne!(text, raw);
        assert!(
            int < text && text < raw,
            "ints sort before str, str before bytes"
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(decode_key(&[]).is_err());
        assert!(decode_key(&[TAG_INT, 1, 2]).is_err());
        assert!(decode_key(&[TAG_STR, 0xff]).is_err());
        assert!(decode_key(&[0x7f]).is_err());
    }
}
