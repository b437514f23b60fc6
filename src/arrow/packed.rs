//! Cells of packed columns: a binary column marked `replikv.encoding = msgpack` holds in
//! each cell the `MessagePack` of one value (what `to_arrow` gives for a column whose
//! values differ in type) or of one key (keys of mixed types). A packed cell is stored as
//! it is, so it is checked first as `put` checks a value: a cell `put` would refuse, or
//! that no reader could decode (a str that is not UTF-8, an unknown extension), once
//! stored, would fail every read of its row.
//!
//! Any of Arrow's three binary layouts (`binary`, `large_binary`, `binary_view`) holds
//! packed cells: a cast keeps a field's metadata, so each of them can come from `to_arrow`.

use arrow_array::cast::AsArray;
use arrow_array::Array;
use arrow_schema::{DataType, Field};

use super::import::{
    too_deep, Refusal, RefusalKind, CELL_DEPTH, MAX_UNIX_SECONDS, MIN_UNIX_SECONDS, SECONDS_PER_DAY,
};
use super::shape::{ENCODING_KEY, PACKED};
use crate::codec::{
    decode_date, decode_timestamp, KeyRef, Reader, Token, DATE_EXT, MAX_DEPTH, TIMESTAMP_EXT,
};

/// Whether `field` marks its column as packed and `array` is binary (a marked column of
/// another type holds typed values, written as such).
#[must_use]
pub fn is_packed(array: &dyn Array, field: Option<&Field>) -> bool {
    let marked = field
        .and_then(|f| f.metadata().get(ENCODING_KEY))
        .is_some_and(|e| e == PACKED);
    marked
        && matches!(
            array.data_type(),
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView
        )
}

/// The bytes of the cell at `row` of a binary column, whichever of the three layouts.
fn binary_cell(array: &dyn Array, row: usize) -> &[u8] {
    match array.data_type() {
        DataType::LargeBinary => array.as_binary::<i64>().value(row),
        DataType::BinaryView => array.as_binary_view().value(row),
        _ => array.as_binary::<i32>().value(row),
    }
}

/// Appends the value the packed cell at `row` holds to `out`, once checked.
///
/// # Errors
/// A [`Refusal`] naming where inside the cell it failed: not exactly one `MessagePack`
/// value, nested too deeply, or holding what `put` refuses.
pub fn write_value(array: &dyn Array, row: usize, out: &mut Vec<u8>) -> Result<(), Refusal> {
    let raw = binary_cell(array, row);
    let mut reader = Reader::new(raw);
    check_value(&mut reader, CELL_DEPTH)?;
    if !reader.is_done() {
        return Err(not_one("cell"));
    }
    out.extend_from_slice(raw);
    Ok(())
}

/// The key the packed cell at `row` holds.
///
/// # Errors
/// A [`Refusal`] unless the cell holds exactly one `MessagePack` int (64-bit), str
/// (UTF-8) or bytes.
pub fn key(array: &dyn Array, row: usize) -> Result<KeyRef<'_>, Refusal> {
    let mut reader = Reader::new(binary_cell(array, row));
    let key = match reader.next_token().map_err(|_| not_one("key"))? {
        Token::Int(int) => KeyRef::Int(int),
        Token::UInt(_) => return Err(wide_int("int keys")),
        Token::Str(text) => KeyRef::Str(utf8(text, "key")?),
        Token::Bin(bytes) => KeyRef::Bytes(bytes),
        other => {
            return Err(Refusal::new(
                RefusalKind::Type,
                format!(
                    "keys must be str, bytes or int, not {} (a msgpack-encoded key)",
                    token_type(other)
                ),
            ))
        }
    };
    if !reader.is_done() {
        return Err(not_one("key"));
    }
    Ok(key)
}

/// Checks the value `reader` is at, `level` containers down in its row (a cell is one
/// down), as `put` checks a value and a reader must decode it: well formed, no deeper than
/// [`MAX_DEPTH`] (which bounds this recursion), strs in UTF-8, dicts keyed by str, ints
/// within 64 bits signed, datetimes and dates that Python can hold, no other extension.
fn check_value(reader: &mut Reader<'_>, level: u32) -> Result<(), Refusal> {
    if level > MAX_DEPTH {
        return Err(too_deep());
    }
    match next(reader)? {
        Token::Str(text) => utf8(text, "cell").map(drop),
        Token::UInt(_) => Err(wide_int("ints")),
        Token::Ext(tag, payload) => check_ext(tag, payload),
        Token::Array(len) => (0..len).try_for_each(|i| {
            check_value(reader, level + 1).map_err(|r| r.within(&format!("[{i}]")))
        }),
        Token::Map(len) => (0..len).try_for_each(|_| {
            let name = match next(reader)? {
                Token::Str(name) => utf8(name, "cell")?,
                other => {
                    return Err(Refusal::new(
                        RefusalKind::Type,
                        format!(
                            "dict keys must be str, not {} (in a msgpack-encoded cell)",
                            token_type(other)
                        ),
                    ))
                }
            };
            check_value(reader, level + 1).map_err(|r| r.within(&super::field_part(name)))
        }),
        Token::Nil | Token::Bool(_) | Token::Int(_) | Token::Float(_) | Token::Bin(_) => Ok(()),
    }
}

fn check_ext(tag: i8, payload: &[u8]) -> Result<(), Refusal> {
    let in_range = |secs: i64| (MIN_UNIX_SECONDS..=MAX_UNIX_SECONDS).contains(&secs);
    let readable = match tag {
        TIMESTAMP_EXT => decode_timestamp(payload).is_some_and(|(secs, _)| in_range(secs)),
        DATE_EXT => {
            decode_date(payload).is_some_and(|days| in_range(i64::from(days) * SECONDS_PER_DAY))
        }
        _ => {
            return Err(Refusal::new(
                RefusalKind::Type,
                format!(
                    "a msgpack-encoded cell holds extension type {tag}, which replikv does \
                     not store (it writes type {TIMESTAMP_EXT}, a timestamp, and type \
                     {DATE_EXT}, a date)"
                ),
            ))
        }
    };
    if readable {
        return Ok(());
    }
    Err(Refusal::new(
        RefusalKind::Value,
        format!(
            "a msgpack-encoded {} is malformed or outside years 1-9999",
            token_type(Token::Ext(tag, payload))
        ),
    ))
}

/// The next token of a cell's value: one that is not there, or malformed, makes the cell
/// no single value.
fn next<'a>(reader: &mut Reader<'a>) -> Result<Token<'a>, Refusal> {
    reader.next_token().map_err(|_| not_one("cell"))
}

fn utf8<'a>(text: &'a [u8], what: &str) -> Result<&'a str, Refusal> {
    std::str::from_utf8(text).map_err(|_| {
        Refusal::new(
            RefusalKind::Value,
            format!("a msgpack-encoded {what} holds a str that is not UTF-8"),
        )
    })
}

fn wide_int(what: &str) -> Refusal {
    Refusal::new(RefusalKind::Overflow, format!("{what} must fit in 64 bits"))
}

fn not_one(what: &str) -> Refusal {
    Refusal::new(
        RefusalKind::Value,
        format!("a msgpack-encoded {what} does not hold exactly one MessagePack value"),
    )
}

/// The Python type a value starting with `token` reads back as.
fn token_type(token: Token<'_>) -> &'static str {
    match token {
        Token::Nil => "None",
        Token::Bool(_) => "bool",
        Token::Int(_) | Token::UInt(_) => "int",
        Token::Float(_) => "float",
        Token::Str(_) => "str",
        Token::Bin(_) => "bytes",
        Token::Array(_) => "list",
        Token::Map(_) => "dict",
        Token::Ext(TIMESTAMP_EXT, _) => "datetime",
        Token::Ext(DATE_EXT, _) => "date",
        Token::Ext(..) => "an unknown MessagePack extension",
    }
}
