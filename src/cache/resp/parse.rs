//! Reading one request from the front of a buffer; multibulk here, inline in `inline`.

use super::inline;

/// Bounds on what a request may claim, checked before anything is allocated.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest argument, in bytes (Redis calls it `proto-max-bulk-len`).
    pub max_bulk: usize,
    /// The most arguments in one command, its name included.
    pub max_args: usize,
    /// The longest line without its line end: an inline command, or a `*`/`$` header.
    pub max_inline: usize,
}

impl Default for Limits {
    /// 64 MiB arguments, 1,048,576 of them, 64 KiB lines: Redis's inline line bound, and
    /// arguments and counts far below its own (512 MB, and counts up to 2^31), which a
    /// cache of bounded memory has no use for.
    fn default() -> Self {
        Limits {
            max_bulk: 64 << 20,
            max_args: 1 << 20,
            max_inline: 64 << 10,
        }
    }
}

/// The outcome of parsing the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// One whole command: its arguments (command name first), and the bytes it used.
    ///
    /// `args` is empty for `*0`, `*-1` (any count below 1) and a blank inline line: drop
    /// `used` bytes and answer nothing, as Redis does.
    Command {
        /// The arguments, command name first.
        args: Vec<Vec<u8>>,
        /// How many bytes at the front of the buffer the command took.
        used: usize,
    },
    /// The buffer holds only the start of a command: read more.
    Incomplete,
    /// Malformed input: answer `error` (a full RESP error text without the leading '-'
    /// and without CRLF, e.g. "ERR Protocol error: invalid bulk length"), drop `skip`
    /// bytes (more than 0) and go on parsing; the connection stays usable.
    ///
    /// What follows a broken multibulk header may be the argument bytes it announced,
    /// which then parse as inline commands: Redis closes the connection instead, and a
    /// server that does not trust its clients may do the same.
    Invalid {
        /// The error to answer, e.g. "ERR Protocol error: invalid bulk length".
        error: String,
        /// How many bytes at the front of the buffer to drop (at least 1).
        skip: usize,
    },
}

const INVALID_COUNT: &str = "ERR Protocol error: invalid multibulk length";
const INVALID_BULK: &str = "ERR Protocol error: invalid bulk length";
const LONG_COUNT: &str = "ERR Protocol error: too big mbulk count string";
const LONG_BULK: &str = "ERR Protocol error: too big bulk count string";
const NO_CRLF: &str = "ERR Protocol error: expected CRLF after bulk data";

/// How far [`parse_from`] got into the multibulk request at the front of a buffer while it
/// is still arriving, so that the next call goes on from there: parsed from scratch on
/// every read, a request of a million arguments sent a little at a time had every argument
/// header so far read again on each read (quadratic time, pinning the node's thread).
///
/// It describes the request at the front of the buffer: until a call returns something
/// other than [`Parse::Incomplete`] (which resets it), the caller may only append to the
/// buffer, and must parse it with the same limits.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The arguments the request announced (0 while its header is not read whole).
    count: usize,
    /// Where its first argument starts.
    first: usize,
    /// How many of its arguments are wholly in the buffer.
    whole: usize,
    /// Where the next one starts.
    at: usize,
}

#[cfg(test)]
thread_local! {
    /// Argument headers the first pass read on this thread: what shows that none is read
    /// twice.
    pub(super) static HEADERS_READ: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Parses the command at the front of `buf`, within `limits`.
///
/// Never panics and allocates only for a command wholly in `buf`: `used` and `skip` are
/// always within `1..=buf.len()`.
#[must_use]
pub fn parse(buf: &[u8], limits: &Limits) -> Parse {
    parse_from(buf, limits, &mut Progress::default())
}

/// Parses the command at the front of `buf` as [`parse`] does, going on from `progress`
/// (what earlier calls read of it, while it was incomplete): each byte of a request is
/// read once however it arrives, and once more when it is whole, to copy it out.
#[must_use]
pub fn parse_from(buf: &[u8], limits: &Limits, progress: &mut Progress) -> Parse {
    let parsed = match buf.first() {
        None => Parse::Incomplete,
        Some(b'*') => multibulk(buf, limits, progress),
        Some(_) => inline::parse(buf, limits),
    };
    if parsed != Parse::Incomplete {
        *progress = Progress::default();
    }
    parsed
}

/// A [`Parse::Invalid`] answering `error` and dropping the first `skip` bytes.
pub(super) fn invalid(error: impl Into<String>, skip: usize) -> Parse {
    Parse::Invalid {
        error: error.into(),
        skip,
    }
}

/// Where the line that starts at `start` ends: the index of its '\n' (at most
/// `max_line + 1` bytes after `start`, room for a `max_line`-byte line and "\r"), or what
/// to answer while there is none.
pub(super) fn line_end(
    buf: &[u8],
    start: usize,
    max_line: usize,
    too_long: &str,
) -> Result<usize, Parse> {
    let rest = buf.get(start..).unwrap_or_default();
    let window = &rest[..rest.len().min(max_line.saturating_add(2))];
    match window.iter().position(|&byte| byte == b'\n') {
        Some(offset) => Ok(start + offset),
        // Skipping exactly the window, not all of `buf`, keeps the outcome the same
        // however the bytes arrived.
        None if window.len() == max_line.saturating_add(2) => {
            Err(invalid(too_long, start + window.len()))
        }
        None => Err(Parse::Incomplete),
    }
}

/// Reads the header line at `start` (a type byte, a decimal, "\r\n"): its number (`None`
/// if it is not a well-formed decimal) and where the next line starts.
fn header(
    buf: &[u8],
    start: usize,
    limits: &Limits,
    too_long: &str,
) -> Result<(Option<i64>, usize), Parse> {
    let newline = line_end(buf, start, limits.max_inline, too_long)?;
    let number = buf
        .get(start + 1..newline)
        .and_then(|line| line.strip_suffix(b"\r"))
        .and_then(decimal);
    Ok((number, newline + 1))
}

/// A decimal as Redis reads one in a header, if the value fits an `i64`: `0`, or an
/// optional '-' and digits that do not start with 0 (`01`, `-0` and `+1` are not numbers).
fn decimal(text: &[u8]) -> Option<i64> {
    if text == b"0" {
        return Some(0);
    }
    let (negative, digits) = match text.strip_prefix(b"-") {
        Some(digits) => (true, digits),
        None => (false, text),
    };
    if digits.first().is_none_or(|&first| first == b'0') {
        return None;
    }
    // Unsigned first: the magnitude of `i64::MIN` fits no positive `i64`.
    let mut value: u64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(value)
    } else {
        i64::try_from(value).ok()
    }
}

/// Parses a command that starts with '*', going on from `progress`.
fn multibulk(buf: &[u8], limits: &Limits, progress: &mut Progress) -> Parse {
    if progress.count == 0 {
        let (count, first) = match header(buf, 0, limits, LONG_COUNT) {
            Ok(header) => header,
            Err(parse) => return parse,
        };
        let count = match count {
            // Redis takes any count below 1 for an empty command.
            Some(count) if count <= 0 => {
                return Parse::Command {
                    args: Vec::new(),
                    used: first,
                }
            }
            Some(count) => match usize::try_from(count) {
                Ok(count) if count <= limits.max_args => count,
                _ => return invalid(INVALID_COUNT, first),
            },
            None => return invalid(INVALID_COUNT, first),
        };
        progress.count = count;
        progress.first = first;
        progress.at = first;
    }
    // Two passes: the first proves the whole command is in `buf` (going on from where the
    // last call stopped), so a command still arriving costs no allocation and `count`
    // below is backed by bytes present; the second copies the arguments out.
    while progress.whole < progress.count {
        #[cfg(test)]
        HEADERS_READ.set(HEADERS_READ.get() + 1);
        match argument(buf, progress.at, limits) {
            Ok((_, next)) => {
                progress.whole += 1;
                progress.at = next;
            }
            Err(parse) => return parse,
        }
    }
    let mut args = Vec::with_capacity(progress.count);
    let mut at = progress.first;
    for _ in 0..progress.count {
        let Ok((arg, next)) = argument(buf, at, limits) else {
            unreachable!("invariant: the first pass read every argument whole");
        };
        args.push(arg.to_vec());
        at = next;
    }
    debug_assert_eq!(at, progress.at, "both passes read the same bytes");
    Parse::Command { args, used: at }
}

/// Reads the bulk argument at `at`: its bytes and where the next one starts, or what to
/// answer instead.
fn argument<'a>(buf: &'a [u8], at: usize, limits: &Limits) -> Result<(&'a [u8], usize), Parse> {
    match buf.get(at) {
        None => return Err(Parse::Incomplete),
        Some(b'$') => {}
        // Dropping only what came before lets a command sent after a short one parse.
        Some(other) => {
            return Err(invalid(
                format!(
                    "ERR Protocol error: expected '$', got '{}'",
                    other.escape_ascii()
                ),
                at,
            ))
        }
    }
    let (len, data) = header(buf, at, limits, LONG_BULK)?;
    let len = len
        .and_then(|len| usize::try_from(len).ok())
        .filter(|&len| len <= limits.max_bulk)
        .ok_or_else(|| invalid(INVALID_BULK, data))?;
    let rest = buf.get(data..).unwrap_or_default();
    if rest.len() < 2 || rest.len() - 2 < len {
        return Err(Parse::Incomplete);
    }
    let (arg, after) = rest.split_at(len);
    if !after.starts_with(b"\r\n") {
        return Err(invalid(NO_CRLF, data + len + 2));
    }
    Ok((arg, data + len + 2))
}
