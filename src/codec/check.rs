//! Checks of what a store receives already encoded, from a primary or a snapshot, rather
//! than encoding itself: everything it would write itself, and nothing a reader of its
//! own could fail on later (where the row would look like damage, and a scrub would pass
//! it).

use super::key::decode_key;
use super::msgpack::{items, Reader, Token, DATE_EXT, MAX_DEPTH, TIMESTAMP_EXT};
use super::timestamp::{decode_date, decode_timestamp};
use super::OpRef;
use crate::error::CodecError;

/// Seconds since the Unix epoch of 0001-01-01T00:00:00 and 9999-12-31T23:59:59 (UTC): the
/// instants a Python datetime can hold.
const SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;
/// Days since 1970-01-01 of 0001-01-01 and 9999-12-31.
const DAYS: std::ops::RangeInclusive<i32> = -719_162..=2_932_896;

/// Checks that `op`'s key and value are as replikv encodes them (its table name and sizes
/// are the store's to check).
///
/// # Errors
/// [`CodecError::Malformed`] saying what is wrong.
pub fn check_op(op: OpRef<'_>) -> Result<(), CodecError> {
    decode_key(op.key)?;
    op.value.map_or(Ok(()), check_value)
}

/// Checks that `bytes` hold exactly one `MessagePack` value as replikv writes them: well
/// formed, at most [`MAX_DEPTH`] containers deep, strings in UTF-8, and extensions only of
/// its timestamp and date types, within the dates Python can hold.
///
/// # Errors
/// [`CodecError::Malformed`] saying what is wrong.
pub fn check_value(bytes: &[u8]) -> Result<(), CodecError> {
    let mut reader = Reader::new(bytes);
    // The items still to read of each open container, outermost first.
    let mut open = Vec::new();
    let first = checked_token(&mut reader)?;
    if items(first) > 0 {
        open.push(items(first));
    }
    while let Some(left) = open.last_mut() {
        if *left == 0 {
            open.pop();
            continue;
        }
        *left -= 1;
        // Read at depth `open.len()`: its items would be one deeper.
        let inside = items(checked_token(&mut reader)?);
        if inside > 0 {
            if open.len() >= MAX_DEPTH as usize {
                return Err(malformed("nested deeper than replikv reads"));
            }
            open.push(inside);
        }
    }
    if !reader.is_done() {
        return Err(malformed("bytes after the value"));
    }
    Ok(())
}

/// The next token, its string or extension checked.
fn checked_token<'a>(reader: &mut Reader<'a>) -> Result<Token<'a>, CodecError> {
    let token = reader.next_token()?;
    match token {
        Token::Str(text) => {
            std::str::from_utf8(text).map_err(|_| malformed("a string is not UTF-8"))?;
        }
        Token::Ext(tag, payload) => check_ext(tag, payload)?,
        _ => {}
    }
    Ok(token)
}

fn check_ext(tag: i8, payload: &[u8]) -> Result<(), CodecError> {
    match tag {
        TIMESTAMP_EXT => match decode_timestamp(payload) {
            Some((secs, _)) if SECONDS.contains(&secs) => Ok(()),
            _ => Err(malformed("a timestamp that is malformed or out of range")),
        },
        DATE_EXT => match decode_date(payload) {
            Some(days) if DAYS.contains(&days) => Ok(()),
            _ => Err(malformed("a date that is malformed or out of range")),
        },
        _ => Err(malformed(format!("an extension of unknown type {tag}"))),
    }
}

fn malformed(reason: impl Into<String>) -> CodecError {
    CodecError::Malformed {
        what: "value",
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_date, encode_key, encode_timestamp, KeyRef};

    /// An array of one item, `depth` deep, around `inner`.
    fn nested(depth: usize, inner: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0x91; depth];
        bytes.extend_from_slice(inner);
        bytes
    }

    fn ext(tag: i8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0xc7, u8::try_from(payload.len()).unwrap(), tag as u8];
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn values_replikv_writes_pass() {
        let depth = MAX_DEPTH as usize;
        for value in [
            vec![0xc0],
            vec![0x82, 0xa1, b'a', 0x91, 0x01, 0xa1, b'b', 0xa2, 0xc3, 0xa9],
            nested(depth, &[0x07]),
            nested(depth, &[0x90]),
            ext(TIMESTAMP_EXT, &encode_timestamp(1_700_000_000, 5)),
            ext(DATE_EXT, &encode_date(-719_162)),
        ] {
            check_value(&value).unwrap_or_else(|e| panic!("{value:x?}: {e}"));
        }
    }

    #[test]
    fn values_replikv_would_not_read_are_refused() {
        let depth = MAX_DEPTH as usize;
        for value in [
            Vec::new(),
            vec![0xc1],
            vec![0xc3, 0xc3],
            vec![0x92, 0x01],
            vec![0xa2, 0xff, 0xfe],
            nested(depth + 1, &[0x07]),
            nested(depth + 1, &[0x90]),
            ext(5, &[1, 2, 3, 4]),
            ext(TIMESTAMP_EXT, &encode_timestamp(300_000_000_000, 0)),
            ext(DATE_EXT, &encode_date(3_000_000)),
            ext(DATE_EXT, &[1, 2]),
        ] {
            assert!(check_value(&value).is_err(), "{value:x?} passed");
        }
    }

    #[test]
    fn an_op_needs_a_key_that_decodes() {
        let value = Some(&[0xc3][..]);
        let key = encode_key(KeyRef::Int(-5));
        check_op(OpRef {
            table: "t",
            key: &key,
            value,
        })
        .unwrap();
        check_op(OpRef {
            table: "t",
            key: &key,
            value: None,
        })
        .unwrap();
        for key in [&[][..], &[0x09, 1], &key[..5]] {
            assert!(
                check_op(OpRef {
                    table: "t",
                    key,
                    value
                })
                .is_err(),
                "{key:x?}"
            );
        }
    }
}
