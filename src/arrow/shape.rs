//! The Arrow schema of a table, inferred from its stored values over a whole scan.
//!
//! The rule for types: a column takes the one type its non-null values have. Ints and floats
//! together make a float column (as pandas does) when every int is exact as a float (within
//! ±2^53); an int beyond that beside a float makes the column packed, so that no value
//! changes on the way out. Any other mix, and every list, dict or
//! unknown extension, makes a *packed* column: the value's own `MessagePack` bytes, marked
//! with the field metadata `replikv.encoding = msgpack`, which `to_pandas` decodes back into
//! Python objects. Packing keeps every value exact (an Arrow struct would give a dict keys it
//! never had; refusing would make one odd row block the export of a table).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::codec::msgpack::{Reader, Token, DATE_EXT, TIMESTAMP_EXT};
use crate::codec::{decode_key, KeyRef};
use crate::error::{CodecError, StoreError};

/// Field metadata key that marks a packed column.
pub const ENCODING_KEY: &str = "replikv.encoding";
/// Its value.
pub const PACKED: &str = "msgpack";
/// The column that holds whole values when not every value is a dict.
pub const VALUE_COLUMN: &str = "value";

/// The type of a column (or of the key column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No non-null value seen.
    Null,
    /// `bool`.
    Bool,
    /// 64-bit signed integers, each exact as a float (within ±2^53).
    Int,
    /// 64-bit signed integers, some beyond ±2^53 (a float would round them).
    WideInt,
    /// 64-bit floats.
    Float,
    /// UTF-8 strings.
    Str,
    /// Byte strings.
    Bin,
    /// Aware datetimes, as microseconds since the epoch in UTC.
    Timestamp,
    /// Dates, as days since the epoch.
    Date,
    /// The value's own `MessagePack` bytes.
    Packed,
}

impl Kind {
    /// The kind of a value that starts with `item`.
    #[must_use]
    pub fn of(item: Token<'_>) -> Self {
        match item {
            Token::Nil => Self::Null,
            Token::Bool(_) => Self::Bool,
            Token::Int(v) if !exact_as_float(v) => Self::WideInt,
            Token::Int(_) => Self::Int,
            Token::Float(_) => Self::Float,
            Token::Str(_) => Self::Str,
            Token::Bin(_) => Self::Bin,
            Token::Ext(TIMESTAMP_EXT, _) => Self::Timestamp,
            Token::Ext(DATE_EXT, _) => Self::Date,
            Token::UInt(_) | Token::Ext(..) | Token::Array(_) | Token::Map(_) => Self::Packed,
        }
    }

    /// The kind of a column holding values of both kinds.
    #[must_use]
    pub fn join(self, other: Self) -> Self {
        match (self, other) {
            (a, b) if a == b => a,
            (Self::Null, k) | (k, Self::Null) => k,
            (Self::Int, Self::Float) | (Self::Float, Self::Int) => Self::Float,
            (Self::Int, Self::WideInt) | (Self::WideInt, Self::Int) => Self::WideInt,
            _ => Self::Packed,
        }
    }

    /// The kind of a key.
    #[must_use]
    pub fn of_key(key: KeyRef<'_>) -> Self {
        match key {
            KeyRef::Int(v) if !exact_as_float(v) => Self::WideInt,
            KeyRef::Int(_) => Self::Int,
            KeyRef::Str(_) => Self::Str,
            KeyRef::Bytes(_) => Self::Bin,
        }
    }

    pub(super) fn field(self, name: &str) -> Field {
        let data_type = match self {
            Self::Null => DataType::Null,
            Self::Bool => DataType::Boolean,
            Self::Int | Self::WideInt => DataType::Int64,
            Self::Float => DataType::Float64,
            Self::Str => DataType::Utf8,
            Self::Bin | Self::Packed => DataType::Binary,
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Self::Date => DataType::Date32,
        };
        let field = Field::new(name, data_type, true);
        if self == Self::Packed {
            field.with_metadata(HashMap::from([(ENCODING_KEY.into(), PACKED.into())]))
        } else {
            field
        }
    }
}

/// Whether the int `v` converts to a float and back unchanged (the largest exact range
/// of an `f64`, ±2^53).
#[must_use]
pub fn exact_as_float(v: i64) -> bool {
    v.unsigned_abs() <= 1 << 53
}

/// What a scan found: the key's kind and each column's, in first-seen order (or in the
/// order asked for).
#[derive(Debug, Clone)]
pub struct Shape {
    key: Kind,
    columns: Vec<(String, Kind)>,
    index: FieldIndex,
    /// Whether `columns` was given: then no other column is added.
    fixed: bool,
    /// Whether every value seen is a dict with string keys.
    all_dicts: bool,
    whole: Kind,
    rows: u64,
}

/// How the values of a table become columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One column per dict field; a field a value lacks is null.
    Fields(Vec<(String, Kind)>),
    /// One column holding each whole value (some value is not a dict).
    Whole(Kind),
}

impl Shape {
    /// An empty shape; `columns` fixes the value columns and their order (`Some(&[])`:
    /// none, only the key).
    #[must_use]
    pub fn new(columns: Option<&[String]>) -> Self {
        let fixed = columns.is_some();
        let columns: Vec<(String, Kind)> = columns
            .unwrap_or_default()
            .iter()
            .map(|name| (name.clone(), Kind::Null))
            .collect();
        let index = FieldIndex::new(columns.iter().map(|(name, _)| name.as_str()));
        Self {
            key: Kind::Null,
            fixed,
            columns,
            index,
            all_dicts: true,
            whole: Kind::Null,
            rows: 0,
        }
    }

    /// Adds one row.
    ///
    /// # Errors
    /// [`CodecError`] if the key or value does not decode.
    pub fn observe(&mut self, key: &[u8], value: &[u8]) -> Result<(), CodecError> {
        let key = decode_key(key).map_err(|_| super::malformed())?;
        self.key = self.key.join(Kind::of_key(key));
        self.rows += 1;
        let mut reader = Reader::new(value);
        let first = reader.next_token()?;
        self.whole = self.whole.join(Kind::of(first));
        let Token::Map(len) = first else {
            self.all_dicts = false;
            return Ok(());
        };
        for position in 0..len {
            let Token::Str(name) = reader.next_token()? else {
                self.all_dicts = false;
                return Ok(());
            };
            let item = peek_kind(&mut reader)?;
            match self.index.find(position, name) {
                Some(i) => self.columns[i].1 = self.columns[i].1.join(item),
                None if !self.fixed => {
                    let name = std::str::from_utf8(name).map_err(|_| super::malformed())?;
                    self.index.add(position, name);
                    self.columns.push((name.to_owned(), item));
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Adds the rows `later` saw, which all come after this shape's in key order (the
    /// shapes of consecutive chunks, put together in order): the same shape as one that
    /// saw every row itself, columns in first-seen order included.
    pub fn merge(&mut self, later: Self) {
        self.key = self.key.join(later.key);
        self.rows += later.rows;
        self.whole = self.whole.join(later.whole);
        self.all_dicts &= later.all_dicts;
        for (name, kind) in later.columns {
            match self.index.named(&name) {
                Some(i) => self.columns[i].1 = self.columns[i].1.join(kind),
                None if !self.fixed => {
                    self.index.insert(&name);
                    self.columns.push((name, kind));
                }
                None => {}
            }
        }
    }

    /// Rows seen.
    #[must_use]
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The key's kind.
    #[must_use]
    pub fn key(&self) -> Kind {
        self.key
    }

    /// How values become columns. Columns asked for are dict fields, but for the one
    /// column a table whose values are not all dicts exports, asked for by its name.
    #[must_use]
    pub fn layout(&self) -> Layout {
        let whole_asked = matches!(self.columns.as_slice(), [(name, _)] if name == VALUE_COLUMN);
        if self.all_dicts || (self.fixed && !whole_asked) {
            Layout::Fields(self.columns.clone())
        } else {
            Layout::Whole(self.whole)
        }
    }

    /// Refuses a column whose field name holds a NUL character: Arrow's C interface passes
    /// names as C strings, so every reader would see it cut short there (or refuse it).
    ///
    /// # Errors
    /// [`StoreError::Unexportable`] naming the field.
    pub fn check_names(&self, table: &str) -> crate::error::Result<()> {
        match self.columns.iter().find(|(name, _)| name.contains('\0')) {
            Some((name, _)) => Err(StoreError::Unexportable {
                table: table.to_owned(),
                reason: format!(
                    "its field {name:?} has a NUL character, which Arrow cannot carry in a \
                     column name: leave it out with columns=[...] (the other fields), or \
                     rename it in the rows"
                ),
            }
            .into()),
            None => Ok(()),
        }
    }

    /// The Arrow schema: the key column named `key_name`, then the value columns.
    #[must_use]
    pub fn schema(&self, key_name: &str) -> SchemaRef {
        let mut fields = vec![self.key.field(key_name)];
        match self.layout() {
            Layout::Fields(columns) => {
                fields.extend(columns.iter().map(|(name, kind)| kind.field(name)));
            }
            Layout::Whole(kind) => fields.push(kind.field(VALUE_COLUMN)),
        }
        Arc::new(Schema::new(fields))
    }
}

/// Column numbers by field name, with a guess per position in a dict: rows of a table
/// usually give their fields in the same order, so most lookups are one comparison of
/// bytes, with no hashing.
#[derive(Debug, Clone, Default)]
pub struct FieldIndex {
    names: Vec<String>,
    by_name: HashMap<String, usize>,
    guess: Vec<usize>,
}

impl FieldIndex {
    /// An index of these names, numbered in order.
    pub fn new<'a>(names: impl Iterator<Item = &'a str>) -> Self {
        let mut index = Self::default();
        for name in names {
            index.insert(name);
        }
        index
    }

    /// The column of the field `name`, found at `position` in its dict.
    pub fn find(&mut self, position: usize, name: &[u8]) -> Option<usize> {
        if let Some(&guess) = self.guess.get(position) {
            if self.names.get(guess).is_some_and(|n| n.as_bytes() == name) {
                return Some(guess);
            }
        }
        let found = *self.by_name.get(std::str::from_utf8(name).ok()?)?;
        self.remember(position, found);
        Some(found)
    }

    /// The column of the field `name`, wherever it was found.
    fn named(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Numbers a new field, found at `position` in its dict.
    pub fn add(&mut self, position: usize, name: &str) {
        let column = self.insert(name);
        self.remember(position, column);
    }

    /// Numbers a new field; returns its column.
    fn insert(&mut self, name: &str) -> usize {
        let column = self.names.len();
        self.by_name.insert(name.to_owned(), column);
        self.names.push(name.to_owned());
        column
    }

    fn remember(&mut self, position: usize, column: usize) {
        if position >= self.guess.len() {
            self.guess.resize(position + 1, usize::MAX);
        }
        self.guess[position] = column;
    }
}

/// Reads the next whole value and gives its kind.
fn peek_kind(reader: &mut Reader<'_>) -> Result<Kind, CodecError> {
    reader.token_and_value().map(|(first, _)| Kind::of(first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_key;

    fn dict(fields: &[(&str, Token<'_>)]) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, fields.len() as u32).unwrap();
        for (name, item) in fields {
            rmp::encode::write_str(&mut out, name).unwrap();
            match item {
                Token::Nil => rmp::encode::write_nil(&mut out).unwrap(),
                Token::Int(v) => drop(rmp::encode::write_sint(&mut out, *v).unwrap()),
                Token::Float(v) => rmp::encode::write_f64(&mut out, *v).unwrap(),
                Token::Str(v) => {
                    rmp::encode::write_str(&mut out, std::str::from_utf8(v).unwrap()).unwrap();
                }
                Token::Array(0) => rmp::encode::write_array_len(&mut out, 0).map(drop).unwrap(),
                other => panic!("not used in these tests: {other:?}"),
            }
        }
        out
    }

    #[test]
    fn kinds_join_by_the_documented_rule() {
        assert_eq!(Kind::Null.join(Kind::Str), Kind::Str);
        assert_eq!(Kind::Int.join(Kind::Float), Kind::Float);
        assert_eq!(Kind::Float.join(Kind::Int), Kind::Float);
        assert_eq!(Kind::Str.join(Kind::Int), Kind::Packed);
        // An int that a float would round keeps the column exact: packed beside floats.
        let wide = Kind::of(Token::Int(i64::MAX));
        assert_eq!(wide, Kind::WideInt);
        assert_eq!(Kind::of(Token::Int(1 << 53)), Kind::Int);
        assert_eq!(Kind::of(Token::Int(-(1 << 53) - 1)), Kind::WideInt);
        assert_eq!(Kind::Int.join(wide), Kind::WideInt);
        assert_eq!(wide.join(Kind::Float), Kind::Packed);
        assert_eq!(Kind::Float.join(wide), Kind::Packed);
        assert_eq!(wide.field("n").data_type(), &DataType::Int64);
        assert_eq!(Kind::Packed.join(Kind::Null), Kind::Packed);
        assert_eq!(Kind::Date.join(Kind::Timestamp), Kind::Packed);
    }

    #[test]
    fn columns_come_in_first_seen_order_with_joined_kinds() {
        let mut shape = Shape::new(None);
        let key = |k: &str| encode_key(KeyRef::Str(k));
        shape
            .observe(
                &key("a"),
                &dict(&[("n", Token::Int(1)), ("s", Token::Str(b"x"))]),
            )
            .unwrap();
        shape
            .observe(
                &key("b"),
                &dict(&[
                    ("s", Token::Nil),
                    ("n", Token::Float(0.5)),
                    ("l", Token::Array(0)),
                ]),
            )
            .unwrap();
        assert_eq!(
            shape.layout(),
            Layout::Fields(vec![
                ("n".into(), Kind::Float),
                ("s".into(), Kind::Str),
                ("l".into(), Kind::Packed)
            ])
        );
        let schema = shape.schema("email");
        assert_eq!(schema.field(0).name(), "email");
        assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
        assert_eq!(
            schema
                .field(3)
                .metadata()
                .get(ENCODING_KEY)
                .map(String::as_str),
            Some(PACKED)
        );
    }

    #[test]
    fn asked_for_columns_are_the_only_ones_and_keep_their_order() {
        let mut shape = Shape::new(Some(&["s".to_owned(), "absent".to_owned()]));
        shape
            .observe(
                &encode_key(KeyRef::Int(1)),
                &dict(&[("n", Token::Int(1)), ("s", Token::Str(b"x"))]),
            )
            .unwrap();
        assert_eq!(
            shape.layout(),
            Layout::Fields(vec![("s".into(), Kind::Str), ("absent".into(), Kind::Null)])
        );
        assert_eq!(shape.key(), Kind::Int);
    }

    #[test]
    fn no_asked_for_columns_leave_only_the_key() {
        let mut shape = Shape::new(Some(&[]));
        for value in [dict(&[("n", Token::Int(1))]), vec![0x07]] {
            shape.observe(&encode_key(KeyRef::Int(1)), &value).unwrap();
        }
        assert_eq!(shape.layout(), Layout::Fields(vec![]));
        assert_eq!(shape.schema("key").fields().len(), 1);
    }

    #[test]
    fn a_value_that_is_not_a_dict_makes_one_whole_value_column() {
        let mut shape = Shape::new(None);
        shape
            .observe(&encode_key(KeyRef::Int(1)), &dict(&[("n", Token::Int(1))]))
            .unwrap();
        let mut scalar = Vec::new();
        rmp::encode::write_sint(&mut scalar, 5).unwrap();
        shape
            .observe(&encode_key(KeyRef::Bytes(b"k")), &scalar)
            .unwrap();
        assert_eq!(shape.layout(), Layout::Whole(Kind::Packed));
        assert_eq!(shape.key(), Kind::Packed);
    }

    #[test]
    fn a_field_index_finds_fields_in_any_order() {
        let mut index = FieldIndex::new(["a", "b"].into_iter());
        assert_eq!(index.find(0, b"a"), Some(0));
        assert_eq!(index.find(1, b"b"), Some(1));
        assert_eq!(index.find(0, b"b"), Some(1));
        assert_eq!(index.find(1, b"a"), Some(0));
        assert_eq!(index.find(2, b"c"), None);
        index.add(2, "c");
        assert_eq!(index.find(2, b"c"), Some(2));
        assert_eq!(index.find(0, b"c"), Some(2));
        assert_eq!(index.find(0, b"\xff"), None);
    }
}
