//! Reading a node's replies: RESP2, plus the RESP3 types a node could send (`_`, `%`,
//! `,`) read as their RESP2 equivalents. Bounded: lengths, counts and nesting are checked
//! before anything is allocated, and a buffer grows only as the bytes it holds arrive.

use std::io::{self, BufRead, Read};

/// A bulk string's length at most (Redis's own `proto-max-bulk-len` default).
const MAX_BULK: usize = 512 << 20;
/// Elements of one array at most: more than any reply to the commands a client sends.
const MAX_ELEMENTS: usize = 1 << 24;
/// Arrays nested in arrays at most.
const MAX_DEPTH: usize = 8;
/// A status, error or header line's length at most.
const MAX_LINE: usize = 64 << 10;
/// Bytes (and elements) reserved before they arrive, at most.
const RESERVE: usize = 64 << 10;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `$-1`, `*-1` or `_`.
    Nil,
    /// `+OK` and the like.
    Status(String),
    /// `-ERR …`: the node refused the command (the connection stays usable).
    Error(String),
    /// `:42`.
    Int(i64),
    /// A binary-safe string; a double (`,`) comes as its text, as RESP2 sends it.
    Bulk(Vec<u8>),
    /// An array; a map (`%`) comes as its keys and values in turn, as RESP2 sends it.
    Array(Vec<Value>),
}

impl Value {
    /// What kind of reply it is, for an error message that must not quote a large value.
    #[must_use]
    pub fn kind(&self) -> String {
        match self {
            Value::Nil => "nil".to_owned(),
            Value::Status(text) => format!("status {text:?}"),
            Value::Error(text) => format!("error {text:?}"),
            Value::Int(value) => format!("integer {value}"),
            Value::Bulk(data) => format!("a bulk string of {} bytes", data.len()),
            Value::Array(items) => format!("an array of {} replies", items.len()),
        }
    }
}

/// Why a reply could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The input failed, timed out or ended (`UnexpectedEof`).
    Io(io::Error),
    /// The bytes are not a reply (or claim more than the bounds allow).
    Malformed(String),
}

impl From<io::Error> for ReadError {
    fn from(err: io::Error) -> Self {
        ReadError::Io(err)
    }
}

fn malformed<T>(reason: impl Into<String>) -> Result<T, ReadError> {
    Err(ReadError::Malformed(reason.into()))
}

fn ended() -> ReadError {
    ReadError::Io(io::ErrorKind::UnexpectedEof.into())
}

/// Reads replies one after another from a buffered input.
#[derive(Debug)]
pub struct ReplyReader<R> {
    input: R,
    /// The current line, reused from line to line.
    line: Vec<u8>,
}

/// A line's meaning, taken out of the line buffer before anything nested is read.
enum Header {
    Done(Value),
    Bulk(usize),
    Array(usize),
    Map(usize),
}

impl<R: BufRead> ReplyReader<R> {
    /// Reads from `input`.
    pub fn new(input: R) -> Self {
        Self {
            input,
            line: Vec::new(),
        }
    }

    /// The input.
    pub fn get_ref(&self) -> &R {
        &self.input
    }

    /// Reads the next whole reply.
    ///
    /// # Errors
    /// [`ReadError::Io`] when the input fails or ends, [`ReadError::Malformed`] when the
    /// bytes are not a reply; either way the stream is out of step and must be dropped.
    pub fn read(&mut self) -> Result<Value, ReadError> {
        self.value(0)
    }

    fn value(&mut self, depth: usize) -> Result<Value, ReadError> {
        match self.header()? {
            Header::Done(value) => Ok(value),
            Header::Bulk(len) => self.bulk(len).map(Value::Bulk),
            Header::Array(count) => self.array(count, depth).map(Value::Array),
            Header::Map(pairs) => match pairs.checked_mul(2) {
                Some(count) => self.array(count, depth).map(Value::Array),
                None => malformed("map size out of range"),
            },
        }
    }

    fn header(&mut self) -> Result<Header, ReadError> {
        self.read_line()?;
        let Some((&kind, rest)) = self.line.split_first() else {
            return malformed("empty line where a reply was expected");
        };
        let text = || String::from_utf8_lossy(rest).into_owned();
        Ok(match kind {
            b'+' => Header::Done(Value::Status(text())),
            b'-' => Header::Done(Value::Error(text())),
            b':' => Header::Done(Value::Int(integer(rest)?)),
            b',' => Header::Done(Value::Bulk(rest.to_vec())),
            b'_' if rest.is_empty() => Header::Done(Value::Nil),
            b'$' => length(rest, MAX_BULK, "bulk length")?
                .map_or(Header::Done(Value::Nil), Header::Bulk),
            b'*' => length(rest, MAX_ELEMENTS, "array length")?
                .map_or(Header::Done(Value::Nil), Header::Array),
            b'%' => length(rest, MAX_ELEMENTS / 2, "map size")?
                .map_or(Header::Done(Value::Nil), Header::Map),
            other => return malformed(format!("unexpected reply type byte 0x{other:02x}")),
        })
    }

    /// Reads a line into `self.line`, without its CRLF.
    fn read_line(&mut self) -> Result<(), ReadError> {
        self.line.clear();
        let limit = MAX_LINE as u64 + 2;
        self.input
            .by_ref()
            .take(limit)
            .read_until(b'\n', &mut self.line)?;
        if self.line.ends_with(b"\r\n") {
            self.line.truncate(self.line.len() - 2);
            Ok(())
        } else if self.line.len() as u64 == limit {
            malformed(format!("a line longer than {MAX_LINE} bytes"))
        } else if self.line.ends_with(b"\n") {
            malformed("a line that ends without CR")
        } else {
            Err(ended())
        }
    }

    fn bulk(&mut self, len: usize) -> Result<Vec<u8>, ReadError> {
        let mut data = Vec::with_capacity(len.min(RESERVE) + 2);
        self.input
            .by_ref()
            .take(len as u64 + 2)
            .read_to_end(&mut data)?;
        if data.len() < len + 2 {
            return Err(ended());
        }
        if !data.ends_with(b"\r\n") {
            return malformed("a bulk string not followed by CRLF");
        }
        data.truncate(len);
        Ok(data)
    }

    fn array(&mut self, count: usize, depth: usize) -> Result<Vec<Value>, ReadError> {
        if depth == MAX_DEPTH {
            return malformed(format!("arrays nested deeper than {MAX_DEPTH}"));
        }
        let mut items = Vec::with_capacity(count.min(RESERVE));
        for _ in 0..count {
            items.push(self.value(depth + 1)?);
        }
        Ok(items)
    }
}

/// A decimal `i64`.
fn integer(digits: &[u8]) -> Result<i64, ReadError> {
    match std::str::from_utf8(digits)
        .ok()
        .and_then(|t| t.parse().ok())
    {
        Some(value) => Ok(value),
        None => malformed(format!(
            "{:?} is not an integer",
            String::from_utf8_lossy(digits)
        )),
    }
}

/// A length up to `max`, or `None` for -1 (nil).
fn length(digits: &[u8], max: usize, what: &str) -> Result<Option<usize>, ReadError> {
    match integer(digits)? {
        -1 => Ok(None),
        len => match usize::try_from(len) {
            Ok(len) if len <= max => Ok(Some(len)),
            _ => malformed(format!("{what} {len} is outside 0..={max}")),
        },
    }
}

#[cfg(test)]
mod tests;
