//! A cache key on the wire: `table:tag:key`, where the tag says the key's type (`i` for an
//! int in decimal, `s` for a string, `b` for raw bytes), so that int 42, "42" and b"42"
//! never collide and a person can still type `GET subscribers:s:ana@example.com`.

use crate::codec::{decode_key, KeyRef};
use crate::error::CodecError;

/// The wire key of a user's key in `table`.
#[must_use]
pub fn wire_key(table: &str, key: KeyRef<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(table.len() + 24);
    out.extend_from_slice(table.as_bytes());
    match key {
        KeyRef::Int(i) => {
            out.extend_from_slice(b":i:");
            out.extend_from_slice(i.to_string().as_bytes());
        }
        KeyRef::Str(s) => {
            out.extend_from_slice(b":s:");
            out.extend_from_slice(s.as_bytes());
        }
        KeyRef::Bytes(b) => {
            out.extend_from_slice(b":b:");
            out.extend_from_slice(b);
        }
    }
    out
}

/// The wire key of a key as the store encodes it (type tag first), as log entries carry it.
///
/// # Errors
/// [`CodecError::Malformed`]: not an encoded key.
pub fn wire_key_of_encoded(table: &str, encoded: &[u8]) -> Result<Vec<u8>, CodecError> {
    Ok(wire_key(table, decode_key(encoded)?))
}

/// The wire prefix of every key of `table`.
#[must_use]
pub fn table_prefix(table: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(table.len() + 1);
    out.extend_from_slice(table.as_bytes());
    out.push(b':');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_key;

    #[test]
    fn the_same_text_in_three_types_gives_three_keys() {
        let keys = [
            wire_key("t", KeyRef::Int(42)),
            wire_key("t", KeyRef::Str("42")),
            wire_key("t", KeyRef::Bytes(b"42")),
        ];
        assert_eq!(keys[0], b"t:i:42");
        assert_eq!(keys[1], b"t:s:42");
        assert_eq!(keys[2], b"t:b:42");
    }

    #[test]
    fn an_encoded_key_maps_to_the_same_wire_key() {
        for key in [
            KeyRef::Int(-7),
            KeyRef::Str("ana@x"),
            KeyRef::Bytes(&[0, 255]),
        ] {
            assert_eq!(
                wire_key_of_encoded("subs", &encode_key(key)).unwrap(),
                wire_key("subs", key)
            );
        }
        assert!(wire_key_of_encoded("subs", &[9, 9]).is_err());
    }

    #[test]
    fn a_table_prefix_matches_its_keys_only() {
        assert!(wire_key("subs", KeyRef::Int(1)).starts_with(&table_prefix("subs")));
        assert!(!wire_key("subscribers", KeyRef::Int(1)).starts_with(&table_prefix("subs")));
    }
}
