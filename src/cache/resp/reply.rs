//! Encoding replies in protocol 2 or 3.

use std::io::Write as _;

use bytes::Bytes;

/// A reply to one command, encoded by [`encode`] for the protocol its connection speaks.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`.
    Ok,
    /// A status line such as `+PONG` or `+QUEUED`.
    Status(&'static str),
    /// An error line, e.g. "ERR unknown command"; CR and LF in it go out as spaces.
    Error(String),
    /// An integer.
    Int(i64),
    /// A binary-safe string.
    Bulk(Bytes),
    /// No value: `$-1` in protocol 2, `_` in protocol 3.
    Nil,
    /// An array of replies.
    Array(Vec<Reply>),
    /// Key-value pairs: a map in protocol 3, a flat array of keys and values in 2.
    Map(Vec<(Reply, Reply)>),
    /// A floating-point number: a double in protocol 3, its text as a bulk string in 2.
    Double(f64),
}

impl Reply {
    /// An error reply with `text`, e.g. `Reply::error("ERR syntax error")`.
    pub fn error(text: impl Into<String>) -> Reply {
        Reply::Error(text.into())
    }
}

/// Where encoded replies go. A `Vec<u8>` copies every byte; [`Output`](super::Output)
/// keeps large bulk values by reference.
pub trait Sink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);

    /// Appends the bytes of a bulk value; by default a copy.
    fn put_value(&mut self, value: &Bytes) {
        self.put(value);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Appends `reply` encoded for protocol 2 or 3 (anything else as 2) to `out`.
pub fn encode<S: Sink + ?Sized>(reply: &Reply, protocol: u8, out: &mut S) {
    let resp3 = protocol == 3;
    match reply {
        Reply::Ok => out.put(b"+OK\r\n"),
        Reply::Status(text) => line(out, b'+', text.as_bytes()),
        Reply::Error(text) => line(out, b'-', text.as_bytes()),
        Reply::Int(value) => {
            out.put(if *value < 0 { b":-" } else { b":" });
            push_decimal(out, value.unsigned_abs());
            out.put(b"\r\n");
        }
        Reply::Bulk(data) => {
            header(out, b'$', data.len());
            out.put_value(data);
            out.put(b"\r\n");
        }
        Reply::Nil if resp3 => out.put(b"_\r\n"),
        Reply::Nil => out.put(b"$-1\r\n"),
        Reply::Array(items) => {
            header(out, b'*', items.len());
            for item in items {
                encode(item, protocol, out);
            }
        }
        Reply::Map(pairs) => {
            if resp3 {
                header(out, b'%', pairs.len());
            } else {
                header(out, b'*', pairs.len() * 2);
            }
            for (key, value) in pairs {
                encode(key, protocol, out);
                encode(value, protocol, out);
            }
        }
        Reply::Double(value) if resp3 => {
            out.put(b",");
            out.put(&double(*value));
            out.put(b"\r\n");
        }
        Reply::Double(value) => encode(&Reply::Bulk(double(*value).into()), protocol, out),
    }
}

/// `kind`, `text` with CR and LF as spaces (a line must not end early), CRLF.
fn line<S: Sink + ?Sized>(out: &mut S, kind: u8, text: &[u8]) {
    out.put(&[kind]);
    for (index, piece) in text
        .split(|&byte| byte == b'\r' || byte == b'\n')
        .enumerate()
    {
        if index > 0 {
            out.put(b" ");
        }
        out.put(piece);
    }
    out.put(b"\r\n");
}

/// `kind`, a length, CRLF.
pub(super) fn header<S: Sink + ?Sized>(out: &mut S, kind: u8, len: usize) {
    out.put(&[kind]);
    push_decimal(out, len as u64);
    out.put(b"\r\n");
}

/// The decimal digits of `value`; by hand, as every reply's lengths go through here.
fn push_decimal<S: Sink + ?Sized>(out: &mut S, mut value: u64) {
    // u64::MAX has 20 digits.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.put(&digits[start..]);
}

/// `value` as RESP3 writes doubles: `inf`, `-inf`, `nan`, or the shortest text that reads
/// back as the same number (with an exponent when it is very large or very small).
fn double(value: f64) -> Vec<u8> {
    let mut out = Vec::new();
    let magnitude = value.abs();
    let written = if value.is_nan() {
        out.write_all(b"nan")
    } else if value.is_infinite() {
        out.write_all(if value < 0.0 { b"-inf" } else { b"inf" })
    } else if magnitude == 0.0 || (1e-4..1e16).contains(&magnitude) {
        write!(out, "{value}")
    } else {
        write!(out, "{value:e}")
    };
    written.expect("invariant: writing to a Vec cannot fail");
    out
}
