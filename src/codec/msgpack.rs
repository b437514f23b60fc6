//! A borrowed `MessagePack` reader: one item at a time, straight from the stored bytes, with
//! no allocation and no intermediate value tree. The Arrow export reads values through it.

use rmp::Marker;

/// The `MessagePack` extension type of a timestamp (the spec's own, type -1).
pub const TIMESTAMP_EXT: i8 = -1;
/// Our extension type of a `datetime.date`: 4 bytes, big-endian signed days since 1970-01-01.
pub const DATE_EXT: i8 = 1;

/// One item of a `MessagePack` stream. A container gives its length; its elements (or
/// key/value pairs) follow as further items.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Item<'a> {
    /// `nil`.
    Nil,
    /// `true` or `false`.
    Bool(bool),
    /// A signed integer, or an unsigned one that fits in `i64`.
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    Uint(u64),
    /// A float (a 32-bit one widened).
    Float(f64),
    /// A string's bytes: UTF-8 unless the bytes are not a replikv value, so check them
    /// (`std::str::from_utf8`) before using them as text. Not checked here: a reader that
    /// only skips or classifies a string never pays for it.
    Str(&'a [u8]),
    /// A byte string.
    Bin(&'a [u8]),
    /// An extension value: its type and payload.
    Ext(i8, &'a [u8]),
    /// An array of this many items.
    Array(usize),
    /// A map of this many key/value pairs.
    Map(usize),
}

/// Bytes that are not `MessagePack` (or are cut short).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed MessagePack at byte {at}")]
pub struct Malformed {
    /// Where the bad item starts.
    pub at: usize,
}

/// Reads items from a byte slice.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    #[must_use]
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Whether every byte has been read.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn take(&mut self, len: usize, start: usize) -> Result<&'a [u8], Malformed> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(Malformed { at: start })?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, start: usize) -> Result<[u8; N], Malformed> {
        let taken = self.take(N, start)?;
        Ok(taken.try_into().expect("take returned exactly N bytes"))
    }

    /// A big-endian unsigned length of `width` bytes (1, 2 or 4).
    fn length(&mut self, width: usize, start: usize) -> Result<usize, Malformed> {
        let raw = self.take(width, start)?;
        Ok(raw
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b)))
    }

    fn text(&mut self, len: usize, start: usize) -> Result<Item<'a>, Malformed> {
        self.take(len, start).map(Item::Str)
    }

    fn ext(&mut self, len: usize, start: usize) -> Result<Item<'a>, Malformed> {
        let [tag] = self.array::<1>(start)?;
        Ok(Item::Ext(tag as i8, self.take(len, start)?))
    }

    /// The next item.
    ///
    /// # Errors
    /// [`Malformed`] if the bytes end early or hold an unused marker.
    pub fn item(&mut self) -> Result<Item<'a>, Malformed> {
        let start = self.at;
        let [byte] = self.array::<1>(start)?;
        Ok(match Marker::from_u8(byte) {
            Marker::FixPos(n) => Item::Int(i64::from(n)),
            Marker::FixNeg(n) => Item::Int(i64::from(n)),
            Marker::Null => Item::Nil,
            Marker::True => Item::Bool(true),
            Marker::False => Item::Bool(false),
            Marker::U8 => Item::Int(i64::from(self.array::<1>(start)?[0])),
            Marker::U16 => Item::Int(i64::from(u16::from_be_bytes(self.array(start)?))),
            Marker::U32 => Item::Int(i64::from(u32::from_be_bytes(self.array(start)?))),
            Marker::U64 => {
                let v = u64::from_be_bytes(self.array(start)?);
                i64::try_from(v).map_or(Item::Uint(v), Item::Int)
            }
            Marker::I8 => Item::Int(i64::from(i8::from_be_bytes(self.array(start)?))),
            Marker::I16 => Item::Int(i64::from(i16::from_be_bytes(self.array(start)?))),
            Marker::I32 => Item::Int(i64::from(i32::from_be_bytes(self.array(start)?))),
            Marker::I64 => Item::Int(i64::from_be_bytes(self.array(start)?)),
            Marker::F32 => Item::Float(f64::from(f32::from_be_bytes(self.array(start)?))),
            Marker::F64 => Item::Float(f64::from_be_bytes(self.array(start)?)),
            Marker::FixStr(n) => self.text(usize::from(n), start)?,
            Marker::Str8 => self.sized(1, start, Self::text)?,
            Marker::Str16 => self.sized(2, start, Self::text)?,
            Marker::Str32 => self.sized(4, start, Self::text)?,
            Marker::Bin8 => self.sized(1, start, |r, len, at| r.take(len, at).map(Item::Bin))?,
            Marker::Bin16 => self.sized(2, start, |r, len, at| r.take(len, at).map(Item::Bin))?,
            Marker::Bin32 => self.sized(4, start, |r, len, at| r.take(len, at).map(Item::Bin))?,
            Marker::FixArray(n) => Item::Array(usize::from(n)),
            Marker::Array16 => Item::Array(self.length(2, start)?),
            Marker::Array32 => Item::Array(self.length(4, start)?),
            Marker::FixMap(n) => Item::Map(usize::from(n)),
            Marker::Map16 => Item::Map(self.length(2, start)?),
            Marker::Map32 => Item::Map(self.length(4, start)?),
            Marker::FixExt1 => self.ext(1, start)?,
            Marker::FixExt2 => self.ext(2, start)?,
            Marker::FixExt4 => self.ext(4, start)?,
            Marker::FixExt8 => self.ext(8, start)?,
            Marker::FixExt16 => self.ext(16, start)?,
            Marker::Ext8 => self.sized(1, start, Self::ext)?,
            Marker::Ext16 => self.sized(2, start, Self::ext)?,
            Marker::Ext32 => self.sized(4, start, Self::ext)?,
            Marker::Reserved => return Err(Malformed { at: start }),
        })
    }

    fn sized(
        &mut self,
        width: usize,
        start: usize,
        read: impl FnOnce(&mut Self, usize, usize) -> Result<Item<'a>, Malformed>,
    ) -> Result<Item<'a>, Malformed> {
        let len = self.length(width, start)?;
        read(self, len, start)
    }

    /// Reads one whole value (a container with everything in it) and returns its bytes.
    ///
    /// # Errors
    /// [`Malformed`] as [`Reader::item`].
    pub fn value(&mut self) -> Result<&'a [u8], Malformed> {
        let start = self.at;
        // Items still to read: a container adds its elements (two per map pair). Each item
        // takes at least one byte, so a claimed length beyond the bytes left fails on read.
        let mut pending: usize = 1;
        while pending > 0 {
            pending -= 1;
            match self.item()? {
                Item::Array(len) => pending = pending.saturating_add(len),
                Item::Map(len) => pending = pending.saturating_add(len.saturating_mul(2)),
                _ => {}
            }
        }
        Ok(&self.bytes[start..self.at])
    }
}

/// Days since 1970-01-01 of a date extension payload; `None` if it is malformed.
#[must_use]
pub fn decode_date(payload: &[u8]) -> Option<i32> {
    payload.try_into().ok().map(i32::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn items(bytes: &[u8]) -> Vec<Item<'_>> {
        let mut reader = Reader::new(bytes);
        let mut out = Vec::new();
        while !reader.is_done() {
            out.push(reader.item().expect("well-formed test input"));
        }
        out
    }

    #[test]
    fn every_kind_of_item_reads_back() {
        let mut buf = Vec::new();
        rmp::encode::write_map_len(&mut buf, 2).unwrap();
        rmp::encode::write_str(&mut buf, "n").unwrap();
        rmp::encode::write_sint(&mut buf, -300).unwrap();
        rmp::encode::write_str(&mut buf, "xs").unwrap();
        rmp::encode::write_array_len(&mut buf, 5).unwrap();
        rmp::encode::write_nil(&mut buf).unwrap();
        rmp::encode::write_bool(&mut buf, true).unwrap();
        rmp::encode::write_f64(&mut buf, 1.5).unwrap();
        rmp::encode::write_bin(&mut buf, b"\x00\x01").unwrap();
        rmp::encode::write_u64(&mut buf, u64::MAX).unwrap();
        assert_eq!(
            items(&buf),
            vec![
                Item::Map(2),
                Item::Str(b"n"),
                Item::Int(-300),
                Item::Str(b"xs"),
                Item::Array(5),
                Item::Nil,
                Item::Bool(true),
                Item::Float(1.5),
                Item::Bin(b"\x00\x01"),
                Item::Uint(u64::MAX),
            ]
        );
    }

    #[test]
    fn a_whole_value_is_skipped_with_its_contents() {
        let mut buf = Vec::new();
        rmp::encode::write_array_len(&mut buf, 2).unwrap();
        rmp::encode::write_map_len(&mut buf, 1).unwrap();
        rmp::encode::write_str(&mut buf, "a").unwrap();
        rmp::encode::write_array_len(&mut buf, 0).unwrap();
        rmp::encode::write_ext_meta(&mut buf, 4, DATE_EXT).unwrap();
        buf.extend_from_slice(&(-3i32).to_be_bytes());
        let end = buf.len();
        rmp::encode::write_nil(&mut buf).unwrap();
        let mut reader = Reader::new(&buf);
        assert_eq!(reader.value().unwrap(), &buf[..end]);
        assert_eq!(reader.item().unwrap(), Item::Nil);
        assert!(reader.is_done());
    }

    #[test]
    fn cut_and_reserved_bytes_are_malformed() {
        assert_eq!(Reader::new(&[0xc1]).item(), Err(Malformed { at: 0 }));
        assert_eq!(Reader::new(&[0xa3, b'a']).item(), Err(Malformed { at: 0 }));
        assert_eq!(
            Reader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff]).value(),
            Err(Malformed { at: 5 })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut reader = Reader::new(&bytes);
            while !reader.is_done() && reader.value().is_ok() {}
        }
    }
}
