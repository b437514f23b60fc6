//! Inline commands, as people type them: one line, words split on whitespace, and quoted
//! words the way Redis reads them.

use super::parse::{invalid, line_end, Limits, Parse};

const LONG_INLINE: &str = "ERR Protocol error: too big inline request";
const UNBALANCED: &str = "ERR Protocol error: unbalanced quotes in request";
const TOO_MANY: &str = "ERR Protocol error: too many arguments in inline request";

/// Parses the inline command at the front of `buf`: a line ending in "\n" or "\r\n".
pub(super) fn parse(buf: &[u8], limits: &Limits) -> Parse {
    let newline = match line_end(buf, 0, limits.max_inline, LONG_INLINE) {
        Ok(newline) => newline,
        Err(parse) => return parse,
    };
    let used = newline + 1;
    let line = buf.get(..newline).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > limits.max_inline {
        return invalid(LONG_INLINE, used);
    }
    match split(line, limits.max_args) {
        Ok(args) => Parse::Command { args, used },
        Err(error) => invalid(error, used),
    }
}

/// The words of `line`, quotes and escapes resolved, or the error to answer.
fn split(line: &[u8], max_args: usize) -> Result<Vec<Vec<u8>>, &'static str> {
    let mut args = Vec::new();
    let mut at = 0;
    loop {
        while line.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        if at >= line.len() {
            return Ok(args);
        }
        if args.len() == max_args {
            return Err(TOO_MANY);
        }
        let (arg, end) = word(line, at).ok_or(UNBALANCED)?;
        args.push(arg);
        at = end;
    }
}

/// The word that starts at `at` and where it ends, or `None` if its quotes do not
/// balance. As in Redis, a quote may open anywhere in a word (`a"b c"` is `ab c`) but
/// must close at its end.
fn word(line: &[u8], mut at: usize) -> Option<(Vec<u8>, usize)> {
    let mut arg = Vec::new();
    loop {
        let rest = line.get(at..).unwrap_or_default();
        let plain = rest
            .iter()
            .position(|&byte| byte.is_ascii_whitespace() || byte == b'"' || byte == b'\'')
            .unwrap_or(rest.len());
        arg.extend_from_slice(&rest[..plain]);
        at += plain;
        at = match line.get(at) {
            Some(b'"') => double_quoted(line, at + 1, &mut arg)?,
            Some(b'\'') => single_quoted(line, at + 1, &mut arg)?,
            _ => return Some((arg, at)),
        };
        if !line.get(at).is_none_or(u8::is_ascii_whitespace) {
            return None;
        }
    }
}

/// Appends the inside of a double-quoted word whose text starts at `at`, escapes
/// resolved (`\n \r \t \b \a \xHH`, any other byte after '\' stands for itself); returns
/// where the closing quote ends.
fn double_quoted(line: &[u8], mut at: usize, arg: &mut Vec<u8>) -> Option<usize> {
    loop {
        match *line.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => {
                let escaped = *line.get(at + 1)?;
                if escaped == b'x' {
                    if let Some(byte) = line.get(at + 2..at + 4).and_then(hex_byte) {
                        arg.push(byte);
                        at += 4;
                        continue;
                    }
                }
                arg.push(match escaped {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => other,
                });
                at += 2;
            }
            byte => {
                arg.push(byte);
                at += 1;
            }
        }
    }
}

/// Appends the inside of a single-quoted word whose text starts at `at` (only `\'` is an
/// escape there); returns where the closing quote ends.
fn single_quoted(line: &[u8], mut at: usize, arg: &mut Vec<u8>) -> Option<usize> {
    loop {
        match *line.get(at)? {
            b'\'' => return Some(at + 1),
            b'\\' if line.get(at + 1) == Some(&b'\'') => {
                arg.push(b'\'');
                at += 2;
            }
            byte => {
                arg.push(byte);
                at += 1;
            }
        }
    }
}

/// The byte two hex digits spell.
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |byte: u8| char::from(byte).to_digit(16);
    match pair {
        [high, low] => Some((digit(*high)? << 4 | digit(*low)?) as u8),
        _ => None,
    }
}
