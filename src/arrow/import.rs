//! Arrow cells as stored values: each cell is written as `MessagePack` straight from the
//! typed Arrow buffers, column by column, never through Python objects.
//!
//! Conversions: ints (unsigned ones within `i64`), floats (half and single widened), bools,
//! strings and bytes as themselves; timestamps as the timestamp extension, truncated to
//! microseconds (the precision replikv gives datetimes back in); a timestamp without a time
//! zone is refused unless the caller says it is UTC; dates as the date extension; lists as
//! arrays; structs as dicts; a binary column marked `replikv.encoding = msgpack` (what
//! `to_arrow` gives for packed columns) as the value it holds, so an export imports back; a
//! key column marked so (keys of mixed types) as the int, str or bytes key each cell holds.
//! Values are refused beyond the depth every write path refuses ([`MAX_DEPTH`]).

use std::fmt::{Debug, Write};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Float16Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, OffsetSizeTrait};
use arrow_schema::{DataType, Field, FieldRef, TimeUnit};

use super::packed;
use crate::codec::msgpack::{DATE_EXT, MAX_DEPTH, TIMESTAMP_EXT};
use crate::codec::{encode_key_into, encode_timestamp, KeyRef};

/// Seconds since the epoch of 0001-01-01 and of the last second of 9999-12-31: the range a
/// Python datetime can be read back in.
pub(super) const MIN_UNIX_SECONDS: i64 = -62_135_596_800;
pub(super) const MAX_UNIX_SECONDS: i64 = 253_402_300_799;
pub(super) const SECONDS_PER_DAY: i64 = 86_400;
const MILLIS_PER_DAY: i64 = 86_400_000;
/// A cell is a field of its row's dict: its value starts one level down.
pub(super) const CELL_DEPTH: u32 = 1;
/// A path longer than this (a value refused for its depth) is cut after these many steps,
/// as `put`'s refusals are.
const PATH_STEPS_SHOWN: usize = 8;

/// Why a cell cannot be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// A type replikv does not store (Python's `TypeError`).
    Type,
    /// A number out of range (Python's `OverflowError`).
    Overflow,
    /// A bad value of a good type (Python's `ValueError`).
    Value,
}

/// A cell that cannot be stored, with where inside the cell (`[2]['at']`) it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The exception it maps to.
    pub kind: RefusalKind,
    /// Where inside the cell, innermost step first (see [`Refusal::path`]).
    steps: Vec<String>,
    /// What is wrong.
    pub reason: String,
}

impl Refusal {
    pub(super) fn new(kind: RefusalKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            steps: Vec::new(),
            reason: reason.into(),
        }
    }

    /// The refusal as seen from what holds the refused part under `part` (`[2]`, `['at']`).
    #[must_use]
    pub fn within(mut self, part: &str) -> Self {
        self.steps.push(part.to_owned());
        self
    }

    /// Where it failed, outermost step first (`['at'][2]`); after 8 steps, how many
    /// levels down it was.
    #[must_use]
    pub fn path(&self) -> String {
        let mut path = String::new();
        for (shown, step) in self.steps.iter().rev().enumerate() {
            if shown == PATH_STEPS_SHOWN {
                let _ = write!(path, "...({} levels down)", self.steps.len());
                break;
            }
            path.push_str(step);
        }
        path
    }
}

pub(super) fn too_deep() -> Refusal {
    Refusal::new(
        RefusalKind::Value,
        format!("values nested deeper than {MAX_DEPTH} levels are refused"),
    )
}

fn unsupported(data_type: &DataType) -> Refusal {
    let hint = match data_type {
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => {
            ": cast the column to float64 (approximate) or to string (exact) first"
        }
        DataType::Map(..) => ": convert it to a struct or to a list of pairs first",
        _ => "",
    };
    Refusal::new(
        RefusalKind::Type,
        format!("Arrow type {data_type} cannot be stored{hint}"),
    )
}

fn done<E: Debug>(written: Result<(), E>) {
    written.expect("writing MessagePack to a Vec cannot fail");
}

/// How timestamps without a time zone are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Naive {
    /// Refused: the instant they stand for is unknown.
    #[default]
    Refuse,
    /// Taken as UTC.
    Utc,
}

/// Writes cells of one column.
pub struct CellWriter<'a> {
    array: &'a dyn Array,
    packed: bool,
    naive: Naive,
}

impl<'a> CellWriter<'a> {
    /// A writer for `array`, whose field is `field` (its metadata marks packed columns).
    #[must_use]
    pub fn new(array: &'a dyn Array, field: Option<&Field>, naive: Naive) -> Self {
        Self {
            array,
            packed: packed::is_packed(array, field),
            naive,
        }
    }

    /// Appends the cell at `row` to `out`.
    ///
    /// # Errors
    /// A [`Refusal`]; `out` may then hold part of the cell.
    pub fn write(&self, row: usize, out: &mut Vec<u8>) -> Result<(), Refusal> {
        if self.packed && !self.array.is_null(row) {
            return packed::write_value(self.array, row, out);
        }
        write_cell(self.array, row, self.naive, CELL_DEPTH, out)
    }
}

fn write_int(value: i64, out: &mut Vec<u8>) {
    done(rmp::encode::write_sint(out, value).map(drop));
}

fn write_micros(micros: i64, out: &mut Vec<u8>) -> Result<(), Refusal> {
    let secs = micros.div_euclid(1_000_000);
    if !(MIN_UNIX_SECONDS..=MAX_UNIX_SECONDS).contains(&secs) {
        return Err(Refusal::new(
            RefusalKind::Overflow,
            "timestamp outside years 1-9999, so it could not be read back",
        ));
    }
    let nanos = (micros.rem_euclid(1_000_000) * 1_000) as u32;
    let payload = encode_timestamp(secs, nanos);
    done(rmp::encode::write_ext_meta(out, payload.len() as u32, TIMESTAMP_EXT).map(drop));
    out.extend_from_slice(&payload);
    Ok(())
}

fn timestamp_micros(array: &dyn Array, unit: TimeUnit, row: usize) -> Result<i64, Refusal> {
    use arrow_array::types::{
        TimestampMicrosecondType as Us, TimestampMillisecondType as Ms,
        TimestampNanosecondType as Ns, TimestampSecondType as S,
    };
    let overflow = || Refusal::new(RefusalKind::Overflow, "timestamp out of range");
    match unit {
        TimeUnit::Second => array
            .as_primitive::<S>()
            .value(row)
            .checked_mul(1_000_000)
            .ok_or_else(overflow),
        TimeUnit::Millisecond => array
            .as_primitive::<Ms>()
            .value(row)
            .checked_mul(1_000)
            .ok_or_else(overflow),
        TimeUnit::Microsecond => Ok(array.as_primitive::<Us>().value(row)),
        TimeUnit::Nanosecond => Ok(array.as_primitive::<Ns>().value(row).div_euclid(1_000)),
    }
}

/// Writes the date `days` after 1970-01-01, refused outside years 1-9999 (what a date
/// read back into Python can hold).
fn write_date(days: i64, out: &mut Vec<u8>) -> Result<(), Refusal> {
    let days = i32::try_from(days)
        .ok()
        .filter(|_| (MIN_UNIX_SECONDS..=MAX_UNIX_SECONDS).contains(&(days * SECONDS_PER_DAY)))
        .ok_or_else(|| {
            Refusal::new(
                RefusalKind::Overflow,
                "date outside years 1-9999, so it could not be read back",
            )
        })?;
    done(rmp::encode::write_ext_meta(out, 4, DATE_EXT).map(drop));
    out.extend_from_slice(&days.to_be_bytes());
    Ok(())
}

fn write_list<O: OffsetSizeTrait>(
    array: &dyn Array,
    row: usize,
    naive: Naive,
    depth: u32,
    out: &mut Vec<u8>,
) -> Result<(), Refusal> {
    let list = array.as_list::<O>();
    write_items(&list.value(row), naive, depth, out)
}

/// Writes `items` as an array at `depth` (its items one level down).
fn write_items(
    items: &ArrayRef,
    naive: Naive,
    depth: u32,
    out: &mut Vec<u8>,
) -> Result<(), Refusal> {
    done(rmp::encode::write_array_len(out, items.len() as u32).map(drop));
    for i in 0..items.len() {
        write_cell(items.as_ref(), i, naive, depth + 1, out)
            .map_err(|r| r.within(&format!("[{i}]")))?;
    }
    Ok(())
}

/// Appends a bool, int or float cell; `false` if the array holds none of these.
fn write_number(array: &dyn Array, row: usize, out: &mut Vec<u8>) -> Result<bool, Refusal> {
    match array.data_type() {
        DataType::Boolean => done(rmp::encode::write_bool(out, array.as_boolean().value(row))),
        DataType::Int8 => write_int(array.as_primitive::<Int8Type>().value(row).into(), out),
        DataType::Int16 => write_int(array.as_primitive::<Int16Type>().value(row).into(), out),
        DataType::Int32 => write_int(array.as_primitive::<Int32Type>().value(row).into(), out),
        DataType::Int64 => write_int(array.as_primitive::<Int64Type>().value(row), out),
        DataType::UInt8 => write_int(array.as_primitive::<UInt8Type>().value(row).into(), out),
        DataType::UInt16 => write_int(array.as_primitive::<UInt16Type>().value(row).into(), out),
        DataType::UInt32 => write_int(array.as_primitive::<UInt32Type>().value(row).into(), out),
        DataType::UInt64 => {
            let value = array.as_primitive::<UInt64Type>().value(row);
            let value = i64::try_from(value).map_err(|_| {
                Refusal::new(
                    RefusalKind::Overflow,
                    format!("{value} does not fit in a 64-bit signed int"),
                )
            })?;
            write_int(value, out);
        }
        DataType::Float16 => done(rmp::encode::write_f64(
            out,
            array.as_primitive::<Float16Type>().value(row).to_f64(),
        )),
        DataType::Float32 => done(rmp::encode::write_f64(
            out,
            array.as_primitive::<Float32Type>().value(row).into(),
        )),
        DataType::Float64 => done(rmp::encode::write_f64(
            out,
            array.as_primitive::<Float64Type>().value(row),
        )),
        _ => return Ok(false),
    }
    Ok(true)
}

/// Appends a string or byte-string cell; `false` if the array holds neither.
fn write_text(array: &dyn Array, row: usize, out: &mut Vec<u8>) -> bool {
    match array.data_type() {
        DataType::Utf8 => done(rmp::encode::write_str(
            out,
            array.as_string::<i32>().value(row),
        )),
        DataType::LargeUtf8 => {
            done(rmp::encode::write_str(
                out,
                array.as_string::<i64>().value(row),
            ));
        }
        DataType::Utf8View => done(rmp::encode::write_str(
            out,
            array.as_string_view().value(row),
        )),
        DataType::Binary => done(rmp::encode::write_bin(
            out,
            array.as_binary::<i32>().value(row),
        )),
        DataType::LargeBinary => {
            done(rmp::encode::write_bin(
                out,
                array.as_binary::<i64>().value(row),
            ));
        }
        DataType::BinaryView => done(rmp::encode::write_bin(
            out,
            array.as_binary_view().value(row),
        )),
        DataType::FixedSizeBinary(_) => {
            done(rmp::encode::write_bin(
                out,
                array.as_fixed_size_binary().value(row),
            ));
        }
        _ => return false,
    }
    true
}

/// Appends the cell at `row` of `array` to `out` as a stored value that sits `depth` levels
/// down in its row's value: deeper than [`MAX_DEPTH`] it is refused, as `put` refuses it
/// (and the recursion over nested Arrow types stops there).
///
/// # Errors
/// A [`Refusal`]; `out` may then hold part of the cell.
fn write_cell(
    array: &dyn Array,
    row: usize,
    naive: Naive,
    depth: u32,
    out: &mut Vec<u8>,
) -> Result<(), Refusal> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    if array.is_null(row) || array.data_type() == &DataType::Null {
        done(rmp::encode::write_nil(out));
        return Ok(());
    }
    if write_number(array, row, out)? || write_text(array, row, out) {
        return Ok(());
    }
    match array.data_type() {
        DataType::Timestamp(unit, zone) => {
            if zone.is_none() && naive == Naive::Refuse {
                return Err(Refusal::new(
                    RefusalKind::Type,
                    "naive datetime (an Arrow timestamp without a time zone) is ambiguous: give \
                     the column a time zone (for example .dt.tz_localize('UTC')), or pass \
                     naive=\"utc\" if it is known to be UTC",
                ));
            }
            write_micros(timestamp_micros(array, *unit, row)?, out)?;
        }
        DataType::Date32 => {
            write_date(
                i64::from(array.as_primitive::<Date32Type>().value(row)),
                out,
            )?;
        }
        DataType::Date64 => {
            let millis = array.as_primitive::<Date64Type>().value(row);
            write_date(millis.div_euclid(MILLIS_PER_DAY), out)?;
        }
        DataType::List(_) => write_list::<i32>(array, row, naive, depth, out)?,
        DataType::LargeList(_) => write_list::<i64>(array, row, naive, depth, out)?,
        DataType::FixedSizeList(..) => {
            write_items(&array.as_fixed_size_list().value(row), naive, depth, out)?;
        }
        DataType::Struct(fields) => {
            let columns = array.as_struct();
            done(rmp::encode::write_map_len(out, fields.len() as u32).map(drop));
            for (field, column) in fields.iter().zip(columns.columns()) {
                done(rmp::encode::write_str(out, field.name()));
                write_cell(column.as_ref(), row, naive, depth + 1, out)
                    .map_err(|r| r.within(&field_part(field.name())))?;
            }
        }
        other => return Err(unsupported(other)),
    }
    Ok(())
}

/// `['name']`, as Python shows a dict lookup.
#[must_use]
pub fn field_part(name: &str) -> String {
    format!("['{}']", name.escape_debug())
}

/// `array` with every dictionary in it (a pandas or polars categorical, also inside a
/// list or a struct) replaced by its values; other arrays as they are.
///
/// # Errors
/// A [`Refusal`] if the dictionary's values cannot be unpacked.
pub fn unpack(array: ArrayRef) -> Result<ArrayRef, Refusal> {
    let unpacked = without_dictionaries(array.data_type());
    if &unpacked == array.data_type() {
        return Ok(array);
    }
    arrow_cast::cast(&array, &unpacked).map_err(|e| {
        Refusal::new(
            RefusalKind::Type,
            format!("cannot unpack a dictionary column: {e}"),
        )
    })
}

/// `data_type` with each dictionary type replaced by its values' type, at any depth.
fn without_dictionaries(data_type: &DataType) -> DataType {
    let field = |field: &FieldRef| -> FieldRef {
        Arc::new(
            field
                .as_ref()
                .clone()
                .with_data_type(without_dictionaries(field.data_type())),
        )
    };
    match data_type {
        DataType::Dictionary(_, values) => without_dictionaries(values),
        DataType::List(item) => DataType::List(field(item)),
        DataType::LargeList(item) => DataType::LargeList(field(item)),
        DataType::FixedSizeList(item, size) => DataType::FixedSizeList(field(item), *size),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(field).collect()),
        other => other.clone(),
    }
}

/// Reads the keys of a key column.
pub struct KeyColumn<'a> {
    array: &'a dyn Array,
    /// A binary column marked `replikv.encoding = msgpack`: what `to_arrow` gives for keys
    /// of mixed types, each cell the `MessagePack` of an int, str or bytes.
    packed: bool,
}

impl<'a> KeyColumn<'a> {
    /// The keys in `array`, whose field is `field` (its metadata marks a packed column).
    #[must_use]
    pub fn new(array: &'a dyn Array, field: Option<&Field>) -> Self {
        Self {
            array,
            packed: packed::is_packed(array, field),
        }
    }

    /// Encodes the key at `row` into `out` (cleared first): a load reuses one buffer for
    /// every row.
    ///
    /// # Errors
    /// A [`Refusal`] for a null key, an int beyond 64 bits, a type keys cannot have, or a
    /// packed cell that is not one `MessagePack` int, str or bytes.
    pub fn encode_into(&self, row: usize, out: &mut Vec<u8>) -> Result<(), Refusal> {
        let key = if self.packed && !self.array.is_null(row) {
            packed::key(self.array, row)?
        } else {
            cell_key(self.array, row)?
        };
        encode_key_into(out, key);
        Ok(())
    }
}

fn cell_key(array: &dyn Array, row: usize) -> Result<KeyRef<'_>, Refusal> {
    if array.is_null(row) {
        return Err(Refusal::new(RefusalKind::Value, "the key is null"));
    }
    Ok(match array.data_type() {
        DataType::Utf8 => KeyRef::Str(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => KeyRef::Str(array.as_string::<i64>().value(row)),
        DataType::Utf8View => KeyRef::Str(array.as_string_view().value(row)),
        DataType::Binary => KeyRef::Bytes(array.as_binary::<i32>().value(row)),
        DataType::LargeBinary => KeyRef::Bytes(array.as_binary::<i64>().value(row)),
        DataType::BinaryView => KeyRef::Bytes(array.as_binary_view().value(row)),
        DataType::Int8 => KeyRef::Int(array.as_primitive::<Int8Type>().value(row).into()),
        DataType::Int16 => KeyRef::Int(array.as_primitive::<Int16Type>().value(row).into()),
        DataType::Int32 => KeyRef::Int(array.as_primitive::<Int32Type>().value(row).into()),
        DataType::Int64 => KeyRef::Int(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => KeyRef::Int(array.as_primitive::<UInt8Type>().value(row).into()),
        DataType::UInt16 => KeyRef::Int(array.as_primitive::<UInt16Type>().value(row).into()),
        DataType::UInt32 => KeyRef::Int(array.as_primitive::<UInt32Type>().value(row).into()),
        DataType::UInt64 => {
            let value = array.as_primitive::<UInt64Type>().value(row);
            KeyRef::Int(
                i64::try_from(value).map_err(|_| {
                    Refusal::new(RefusalKind::Overflow, "int keys must fit in 64 bits")
                })?,
            )
        }
        other => {
            return Err(Refusal::new(
                RefusalKind::Type,
                format!("keys must be str, bytes or int, not Arrow type {other}"),
            ))
        }
    })
}

#[cfg(test)]
#[path = "import_tests.rs"]
mod tests;
