//! One Arrow column being built from stored `MessagePack` values.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, NullArray};

use super::shape::{exact_as_float, Kind};
use crate::codec::decode_date;
use crate::codec::msgpack::{Reader, Token, DATE_EXT, TIMESTAMP_EXT};
use crate::codec::{decode_timestamp, KeyRef};
use crate::error::CodecError;

/// A value that does not fit the column's inferred kind: the table changed under the
/// scan, which a snapshot rules out, or the bytes are not ours.
#[derive(Debug, thiserror::Error)]
pub enum Unfit {
    /// The bytes do not decode.
    #[error(transparent)]
    Malformed(#[from] CodecError),
    /// A dict field, or a value that is not a dict, that the schema has no column for
    /// (a schema inferred from the first rows only).
    #[error("a field that no column holds")]
    Unplanned,
    /// A value of another kind.
    #[error("a {found:?} value in a {column:?} column")]
    Kind {
        /// The column's kind.
        column: Kind,
        /// The value's.
        found: Kind,
    },
}

/// A column builder of one [`Kind`].
pub enum Column {
    /// Rows so far: a null column needs nothing else (arrow's `NullBuilder::finish` did
    /// not start its next batch at 0 rows, and the second batch of a null column came out
    /// longer than its batch).
    Null(usize),
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Str(StringBuilder),
    Bin(BinaryBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Date(Date32Builder),
    Packed(BinaryBuilder),
}

const MICROS: i64 = 1_000_000;

impl Column {
    /// An empty column of `kind` with room for `rows`.
    pub fn new(kind: Kind, rows: usize) -> Self {
        match kind {
            Kind::Null => Self::Null(0),
            Kind::Bool => Self::Bool(BooleanBuilder::with_capacity(rows)),
            Kind::Int | Kind::WideInt => Self::Int(Int64Builder::with_capacity(rows)),
            Kind::Float => Self::Float(Float64Builder::with_capacity(rows)),
            Kind::Str => Self::Str(StringBuilder::with_capacity(rows, rows * 16)),
            Kind::Bin => Self::Bin(BinaryBuilder::with_capacity(rows, rows * 16)),
            Kind::Timestamp => Self::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows)),
            Kind::Date => Self::Date(Date32Builder::with_capacity(rows)),
            Kind::Packed => Self::Packed(BinaryBuilder::with_capacity(rows, rows * 16)),
        }
    }

    /// Appends a null.
    pub fn push_null(&mut self) {
        match self {
            Self::Null(rows) => *rows += 1,
            Self::Bool(b) => b.append_null(),
            Self::Int(b) => b.append_null(),
            Self::Float(b) => b.append_null(),
            Self::Str(b) => b.append_null(),
            Self::Bin(b) | Self::Packed(b) => b.append_null(),
            Self::Timestamp(b) => b.append_null(),
            Self::Date(b) => b.append_null(),
        }
    }

    /// Appends the whole value `raw` (one `MessagePack` value).
    ///
    /// # Errors
    /// [`Unfit`] if it does not decode or is not of the column's kind.
    pub fn push(&mut self, raw: &[u8]) -> Result<(), Unfit> {
        if let Self::Packed(b) = self {
            b.append_value(raw);
            return Ok(());
        }
        let item = Reader::new(raw).next_token()?;
        self.push_read(item, raw)
    }

    /// Appends a whole value already read: its first token and all its bytes.
    ///
    /// # Errors
    /// [`Unfit`] if it does not decode or is not of the column's kind.
    pub fn push_read(&mut self, item: Token<'_>, raw: &[u8]) -> Result<(), Unfit> {
        if let Self::Packed(b) = self {
            b.append_value(raw);
            return Ok(());
        }
        let unfit = |column: Kind| Unfit::Kind {
            column,
            found: Kind::of(item),
        };
        match (self, item) {
            (column, Token::Nil) => column.push_null(),
            (Self::Bool(b), Token::Bool(v)) => b.append_value(v),
            (Self::Int(b), Token::Int(v)) => b.append_value(v),
            (Self::Float(b), Token::Float(v)) => b.append_value(v),
            // Ints in a float column become floats, as pandas does, only where that is exact
            // (an int past 2^53 does not fit a column inferred before it was seen).
            #[allow(clippy::cast_precision_loss)]
            (Self::Float(b), Token::Int(v)) if exact_as_float(v) => b.append_value(v as f64),
            (Self::Str(b), Token::Str(v)) => {
                b.append_value(std::str::from_utf8(v).map_err(|_| super::malformed())?);
            }
            (Self::Bin(b), Token::Bin(v)) => b.append_value(v),
            (Self::Timestamp(b), Token::Ext(TIMESTAMP_EXT, payload)) => {
                let (secs, nanos) = decode_timestamp(payload).ok_or(super::malformed())?;
                b.append_value(secs * MICROS + i64::from(nanos / 1_000));
            }
            (Self::Date(b), Token::Ext(DATE_EXT, payload)) => {
                b.append_value(decode_date(payload).ok_or(super::malformed())?);
            }
            (column, _) => return Err(unfit(column.kind())),
        }
        Ok(())
    }

    /// Appends a key (decoded), in the key column's kind.
    ///
    /// # Errors
    /// [`Unfit::Kind`] if the key is not of the column's kind (a schema inferred from the
    /// first rows only).
    pub fn push_key(&mut self, key: KeyRef<'_>) -> Result<(), Unfit> {
        match (self, key) {
            (Self::Int(b), KeyRef::Int(v)) => b.append_value(v),
            (Self::Str(b), KeyRef::Str(v)) => b.append_value(v),
            (Self::Bin(b), KeyRef::Bytes(v)) => b.append_value(v),
            (Self::Packed(b), key) => {
                let mut packed = Vec::with_capacity(16);
                // Writing to a Vec cannot fail.
                match key {
                    KeyRef::Int(v) => drop(rmp::encode::write_sint(&mut packed, v)),
                    KeyRef::Str(v) => drop(rmp::encode::write_str(&mut packed, v)),
                    KeyRef::Bytes(v) => drop(rmp::encode::write_bin(&mut packed, v)),
                }
                b.append_value(&packed);
            }
            (column, key) => {
                return Err(Unfit::Kind {
                    column: column.kind(),
                    found: Kind::of_key(key),
                })
            }
        }
        Ok(())
    }

    fn kind(&self) -> Kind {
        match self {
            Self::Null(_) => Kind::Null,
            Self::Bool(_) => Kind::Bool,
            Self::Int(_) => Kind::Int,
            Self::Float(_) => Kind::Float,
            Self::Str(_) => Kind::Str,
            Self::Bin(_) => Kind::Bin,
            Self::Timestamp(_) => Kind::Timestamp,
            Self::Date(_) => Kind::Date,
            Self::Packed(_) => Kind::Packed,
        }
    }

    /// Bytes of variable-length data appended so far (what bounds a batch).
    pub fn data_bytes(&self) -> usize {
        match self {
            Self::Str(b) => b.values_slice().len(),
            Self::Bin(b) | Self::Packed(b) => b.values_slice().len(),
            _ => 0,
        }
    }

    /// The finished array; the builder is left empty for the next batch.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Null(rows) => Arc::new(NullArray::new(std::mem::take(rows))),
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Int(b) => Arc::new(b.finish()),
            Self::Float(b) => Arc::new(b.finish()),
            Self::Str(b) => Arc::new(b.finish()),
            Self::Bin(b) | Self::Packed(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish().with_timezone("UTC")),
            Self::Date(b) => Arc::new(b.finish()),
        }
    }
}
