//! A `MessagePack` reader over a byte slice that yields one token at a time, borrowing
//! strings and binaries from the slice: the value decoder builds its objects straight from
//! the tokens, with no intermediate tree. Lengths and numbers are big-endian, as the spec
//! says. The writing side is `rmp::encode` (what rmp-serde writes with, so the bytes of a
//! value do not depend on which of the two wrote them).

use rmp::Marker;

use crate::error::CodecError;

/// The extension type of the `MessagePack` timestamp (see [`super::encode_timestamp`]).
pub const TIMESTAMP_EXT: i8 = -1;
/// replikv's extension type for a calendar date: 4 bytes, the big-endian signed number of
/// days since 1970-01-01 (see [`super::encode_date`]).
pub const DATE_EXT: i8 = 1;
/// The deepest a value may nest: an item deeper than this (the top value is at depth 0, a
/// row's fields at 1) is refused by every write path, and a container deeper than this does
/// not decode (a guard against runaway recursion).
pub const MAX_DEPTH: u32 = 128;

/// One `MessagePack` item; a container's items follow it as tokens of their own.
///
/// A word-sized tag puts every payload on an aligned word: with a byte tag, a `bool` or an
/// extension type sits at byte 1, and each copy of a token then read back bytes 1 to 7
/// as misaligned words just after writing them as bytes (a stall in every read of a
/// value, which was a third of an Arrow export's time).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(u64)]
pub enum Token<'a> {
    /// `nil`.
    Nil,
    /// `true` or `false`.
    Bool(bool),
    /// Any integer that fits in an `i64`.
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    UInt(u64),
    /// A float (`float 32` widened).
    Float(f64),
    /// The bytes of a string, not checked as UTF-8 here: the caller's string constructor
    /// checks them (Python's does anyway, and checking twice was a tenth of a decode).
    Str(&'a [u8]),
    /// A binary.
    Bin(&'a [u8]),
    /// An array of this many items.
    Array(usize),
    /// A map of this many key-value pairs.
    Map(usize),
    /// An extension: its type and payload.
    Ext(i8, &'a [u8]),
}

/// How many tokens follow `token` inside it (two per map pair).
fn items(token: Token<'_>) -> usize {
    match token {
        Token::Array(len) => len,
        Token::Map(len) => len.saturating_mul(2),
        _ => 0,
    }
}

/// Reads tokens from the front of a slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

fn malformed(reason: impl Into<String>) -> CodecError {
    CodecError::Malformed {
        what: "value",
        reason: reason.into(),
    }
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    #[must_use]
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// The bytes not read yet.
    #[must_use]
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], CodecError> {
        if len > self.rest.len() {
            return Err(malformed(format!(
                "{len} bytes announced, {} left",
                self.rest.len()
            )));
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let bytes = self.take(N)?;
        Ok(bytes.try_into().expect("take returned exactly N bytes"))
    }

    fn len8(&mut self) -> Result<usize, CodecError> {
        Ok(usize::from(self.array::<1>()?[0]))
    }

    fn len16(&mut self) -> Result<usize, CodecError> {
        Ok(usize::from(u16::from_be_bytes(self.array()?)))
    }

    fn len32(&mut self) -> Result<usize, CodecError> {
        Ok(u32::from_be_bytes(self.array()?) as usize)
    }

    fn str(&mut self, len: usize) -> Result<Token<'a>, CodecError> {
        self.take(len).map(Token::Str)
    }

    /// A container of `len` items (`per_item` tokens each) must have at least a byte per
    /// token left: a forged length never sizes an allocation beyond the input.
    fn container(&self, len: usize, per_item: usize) -> Result<usize, CodecError> {
        if len.saturating_mul(per_item) > self.rest.len() {
            return Err(malformed(format!(
                "a container of {len} items in {} bytes",
                self.rest.len()
            )));
        }
        Ok(len)
    }

    fn ext(&mut self, len: usize) -> Result<Token<'a>, CodecError> {
        let tag = i8::from_be_bytes(self.array()?);
        Ok(Token::Ext(tag, self.take(len)?))
    }

    /// Whether every byte has been read.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.rest.is_empty()
    }

    /// Reads one whole value (a container with all it holds) and returns its bytes.
    ///
    /// # Errors
    /// [`CodecError::Malformed`] as [`Reader::next_token`].
    pub fn value(&mut self) -> Result<&'a [u8], CodecError> {
        self.token_and_value().map(|(_, raw)| raw)
    }

    /// Reads one whole value, and returns its first token and all its bytes: a scalar is
    /// read once, not once to find its end and again to decode it.
    ///
    /// # Errors
    /// [`CodecError::Malformed`] as [`Reader::next_token`].
    pub fn token_and_value(&mut self) -> Result<(Token<'a>, &'a [u8]), CodecError> {
        let start = self.rest;
        let first = self.next_token()?;
        // Tokens still to read: a container adds its items (two per map pair).
        let mut pending = items(first);
        while pending > 0 {
            pending -= 1;
            pending = pending.saturating_add(items(self.next_token()?));
        }
        Ok((first, &start[..start.len() - self.rest.len()]))
    }

    /// Reads one whole value, as [`Reader::value`], and returns its bytes and the depth of
    /// its deepest item (0 for a scalar or an empty container, 1 for the items of a
    /// container of scalars). Iterative, so a forged deep value cannot exhaust the stack.
    ///
    /// # Errors
    /// [`CodecError::Malformed`] as [`Reader::next_token`].
    pub fn value_and_depth(&mut self) -> Result<(&'a [u8], u32), CodecError> {
        let start = self.rest;
        // The items still to read of each open container, outermost first.
        let mut open = Vec::new();
        let mut deepest = 0;
        let first = self.next_token()?;
        if items(first) > 0 {
            open.push(items(first));
        }
        while let Some(left) = open.last_mut() {
            if *left == 0 {
                open.pop();
                continue;
            }
            *left -= 1;
            deepest = deepest.max(open.len());
            let inside = items(self.next_token()?);
            if inside > 0 {
                open.push(inside);
            }
        }
        let depth = u32::try_from(deepest).unwrap_or(u32::MAX);
        Ok((&start[..start.len() - self.rest.len()], depth))
    }

    /// The next token.
    ///
    /// # Errors
    /// [`CodecError::Malformed`] at the end of the input, for a reserved marker or a
    /// length beyond the input.
    // Inlined into its callers, a token stays in registers; returned through memory, each
    // read of a value waited on the stores that wrote it (a fifth of an Arrow export).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub fn next_token(&mut self) -> Result<Token<'a>, CodecError> {
        let [marker] = self
            .array::<1>()
            .map_err(|_| malformed("the value ends early"))?;
        Ok(match Marker::from_u8(marker) {
            Marker::FixPos(n) => Token::Int(i64::from(n)),
            Marker::FixNeg(n) => Token::Int(i64::from(n)),
            Marker::Null => Token::Nil,
            Marker::True => Token::Bool(true),
            Marker::False => Token::Bool(false),
            Marker::U8 => Token::Int(i64::from(u8::from_be_bytes(self.array()?))),
            Marker::U16 => Token::Int(i64::from(u16::from_be_bytes(self.array()?))),
            Marker::U32 => Token::Int(i64::from(u32::from_be_bytes(self.array()?))),
            Marker::U64 => {
                let n = u64::from_be_bytes(self.array()?);
                i64::try_from(n).map_or(Token::UInt(n), Token::Int)
            }
            Marker::I8 => Token::Int(i64::from(i8::from_be_bytes(self.array()?))),
            Marker::I16 => Token::Int(i64::from(i16::from_be_bytes(self.array()?))),
            Marker::I32 => Token::Int(i64::from(i32::from_be_bytes(self.array()?))),
            Marker::I64 => Token::Int(i64::from_be_bytes(self.array()?)),
            Marker::F32 => Token::Float(f64::from(f32::from_be_bytes(self.array()?))),
            Marker::F64 => Token::Float(f64::from_be_bytes(self.array()?)),
            Marker::FixStr(n) => self.str(usize::from(n))?,
            Marker::Str8 => {
                let len = self.len8()?;
                self.str(len)?
            }
            Marker::Str16 => {
                let len = self.len16()?;
                self.str(len)?
            }
            Marker::Str32 => {
                let len = self.len32()?;
                self.str(len)?
            }
            Marker::Bin8 => {
                let len = self.len8()?;
                Token::Bin(self.take(len)?)
            }
            Marker::Bin16 => {
                let len = self.len16()?;
                Token::Bin(self.take(len)?)
            }
            Marker::Bin32 => {
                let len = self.len32()?;
                Token::Bin(self.take(len)?)
            }
            Marker::FixArray(n) => Token::Array(self.container(usize::from(n), 1)?),
            Marker::Array16 => Token::Array(self.len16().and_then(|n| self.container(n, 1))?),
            Marker::Array32 => Token::Array(self.len32().and_then(|n| self.container(n, 1))?),
            Marker::FixMap(n) => Token::Map(self.container(usize::from(n), 2)?),
            Marker::Map16 => Token::Map(self.len16().and_then(|n| self.container(n, 2))?),
            Marker::Map32 => Token::Map(self.len32().and_then(|n| self.container(n, 2))?),
            Marker::FixExt1 => self.ext(1)?,
            Marker::FixExt2 => self.ext(2)?,
            Marker::FixExt4 => self.ext(4)?,
            Marker::FixExt8 => self.ext(8)?,
            Marker::FixExt16 => self.ext(16)?,
            Marker::Ext8 => {
                let len = self.len8()?;
                self.ext(len)?
            }
            Marker::Ext16 => {
                let len = self.len16()?;
                self.ext(len)?
            }
            Marker::Ext32 => {
                let len = self.len32()?;
                self.ext(len)?
            }
            Marker::Reserved => return Err(malformed("reserved marker 0xc1")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rmp::encode::ByteBuf;

    #[test]
    fn a_whole_value_is_read_with_its_first_token_and_all_its_bytes() {
        let mut buf = Vec::new();
        rmp::encode::write_array_len(&mut buf, 2).unwrap();
        rmp::encode::write_map_len(&mut buf, 1).unwrap();
        rmp::encode::write_str(&mut buf, "a").unwrap();
        rmp::encode::write_array_len(&mut buf, 0).unwrap();
        rmp::encode::write_ext_meta(&mut buf, 4, DATE_EXT).unwrap();
        buf.extend_from_slice(&(-3i32).to_be_bytes());
        let end = buf.len();
        rmp::encode::write_sint(&mut buf, 7).unwrap();
        let mut reader = Reader::new(&buf);
        assert_eq!(
            reader.token_and_value().unwrap(),
            (Token::Array(2), &buf[..end])
        );
        assert_eq!(
            reader.token_and_value().unwrap(),
            (Token::Int(7), &buf[end..])
        );
        assert!(reader.is_done());
        assert!(Reader::new(&buf[..end - 1]).value().is_err());
    }

    #[test]
    fn a_whole_value_is_read_with_the_depth_of_its_deepest_item() {
        let nested = |levels: usize, inner: &[u8]| {
            let mut buf = vec![0x91; levels]; // an array of one item, `levels` times
            buf.extend_from_slice(inner);
            buf
        };
        for (bytes, depth) in [
            (vec![0x07], 0),             // 7
            (vec![0x90], 0),             // []
            (nested(1, &[0x07]), 1),     // [7]
            (nested(3, &[0x90]), 3),     // [[[[]]]]
            (nested(200, &[0xc0]), 200), // deeper than any write path allows
            // {"a": [1], "b": 2}: a map's keys and values are its items.
            (vec![0x82, 0xa1, b'a', 0x91, 0x01, 0xa1, b'b', 0x02], 2),
        ] {
            let mut reader = Reader::new(&bytes);
            assert_eq!(reader.value_and_depth().unwrap(), (&bytes[..], depth));
            assert!(reader.is_done());
        }
        let mut two = nested(2, &[0x07]);
        two.push(0x08);
        let mut reader = Reader::new(&two);
        assert_eq!(reader.value_and_depth().unwrap(), (&two[..3], 2));
        assert!(Reader::new(&nested(2, &[])).value_and_depth().is_err());
    }

    /// A tree of tokens, written with `rmp::encode` and read back token by token.
    #[derive(Debug, Clone)]
    enum Item {
        Nil,
        Bool(bool),
        Int(i64),
        UInt(u64),
        Float(f64),
        Str(String),
        Bin(Vec<u8>),
        Ext(i8, Vec<u8>),
        Array(Vec<Item>),
        Map(Vec<(Item, Item)>),
    }

    fn written<T, E: std::fmt::Debug>(result: Result<T, E>) {
        result.expect("writing to a ByteBuf cannot fail");
    }

    fn write(buf: &mut ByteBuf, item: &Item) {
        match item {
            Item::Nil => written(rmp::encode::write_nil(buf)),
            Item::Bool(b) => written(rmp::encode::write_bool(buf, *b)),
            Item::Int(i) => written(rmp::encode::write_sint(buf, *i)),
            Item::UInt(u) => written(rmp::encode::write_uint(buf, *u)),
            Item::Float(f) => written(rmp::encode::write_f64(buf, *f)),
            Item::Str(s) => written(rmp::encode::write_str(buf, s)),
            Item::Bin(b) => written(rmp::encode::write_bin(buf, b)),
            Item::Ext(tag, payload) => {
                written(rmp::encode::write_ext_meta(buf, payload.len() as u32, *tag));
                buf.as_mut_vec().extend_from_slice(payload);
            }
            Item::Array(items) => {
                written(rmp::encode::write_array_len(buf, items.len() as u32));
                for i in items {
                    write(buf, i);
                }
            }
            Item::Map(pairs) => {
                written(rmp::encode::write_map_len(buf, pairs.len() as u32));
                for (k, v) in pairs {
                    write(buf, k);
                    write(buf, v);
                }
            }
        }
    }

    fn check(reader: &mut Reader<'_>, item: &Item) {
        let token = reader.next_token().expect("a written item reads back");
        match (item, token) {
            (Item::Nil, Token::Nil) => {}
            (Item::Bool(a), Token::Bool(b)) => assert_eq!(*a, b),
            (Item::Int(a), Token::Int(b)) => assert_eq!(*a, b),
            (Item::UInt(a), Token::Int(b)) => assert_eq!(*a, b as u64),
            (Item::UInt(a), Token::UInt(b)) => assert!(*a == b && b > i64::MAX as u64),
            (Item::Float(a), Token::Float(b)) => assert_eq!(a.to_bits(), b.to_bits()),
            (Item::Str(a), Token::Str(b)) => assert_eq!(a.as_bytes(), b),
            (Item::Bin(a), Token::Bin(b)) => assert_eq!(&a[..], b),
            (Item::Ext(a, p), Token::Ext(b, q)) => assert_eq!((*a, &p[..]), (b, q)),
            (Item::Array(items), Token::Array(len)) => {
                assert_eq!(items.len(), len);
                for i in items {
                    check(reader, i);
                }
            }
            (Item::Map(pairs), Token::Map(len)) => {
                assert_eq!(pairs.len(), len);
                for (k, v) in pairs {
                    check(reader, k);
                    check(reader, v);
                }
            }
            (item, token) => panic!("wrote {item:?}, read {token:?}"),
        }
    }

    fn items() -> impl Strategy<Value = Item> {
        let leaf = prop_oneof![
            Just(Item::Nil),
            any::<bool>().prop_map(Item::Bool),
            any::<i64>().prop_map(Item::Int),
            any::<u64>().prop_map(Item::UInt),
            any::<f64>().prop_map(Item::Float),
            ".{0,40}".prop_map(Item::Str),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Item::Bin),
            (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20))
                .prop_map(|(t, p)| Item::Ext(t, p)),
        ];
        leaf.prop_recursive(4, 64, 20, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..20).prop_map(Item::Array),
                proptest::collection::vec((inner.clone(), inner), 0..20).prop_map(Item::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn what_rmp_writes_reads_back_token_by_token(item in items()) {
            let mut buf = ByteBuf::new();
            write(&mut buf, &item);
            let mut reader = Reader::new(buf.as_slice());
            check(&mut reader, &item);
            prop_assert!(reader.rest().is_empty());
        }

        #[test]
        fn fuzz_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut reader = Reader::new(&bytes);
            while reader.next_token().is_ok() && !reader.rest().is_empty() {}
        }
    }

    #[test]
    fn forged_lengths_are_refused_before_anything_is_allocated() {
        // An array32 of 2^32-1 items, a map16 of 65535 pairs, a str32 of 2^32-1 bytes.
        for bytes in [
            &[0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0][..],
            &[0xde, 0xff, 0xff, 0xc0, 0xc0],
            &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
        ] {
            assert!(Reader::new(bytes).next_token().is_err(), "{bytes:x?}");
        }
    }

    #[test]
    fn reserved_markers_and_an_empty_input_are_refused() {
        assert!(Reader::new(&[0xc1]).next_token().is_err());
        assert!(Reader::new(&[]).next_token().is_err());
    }
}
