//! A blocking connection to one cache node: commands go out as RESP multibulk, many in
//! one write, and their replies are read back in order through a buffer.

use std::io::{self, BufReader, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::reply::{ReadError, ReplyReader, Value};
use crate::error::{CacheError, NetError, Result};

/// Bytes read from the socket per read call, at most.
const READ_BUFFER: usize = 64 << 10;
/// Request bytes that one write carries at most when it holds more than one command. A
/// node stops reading while it writes replies; a request that fits the socket buffers is
/// accepted whole even while its replies wait to be read, so the two sides can never
/// wait on each other. (A single command is always one write: it gets no reply before
/// all of it has arrived.)
const MAX_BATCH_BYTES: usize = 64 << 10;
/// A request buffer larger than this is given back after use rather than kept.
const KEEP_REQUEST_BUFFER: usize = 1 << 20;

/// A connection to one node.
#[derive(Debug)]
pub struct Conn {
    address: String,
    timeout: Duration,
    replies: ReplyReader<BufReader<TcpStream>>,
    /// The next write, reused from write to write.
    request: Vec<u8>,
}

impl Conn {
    /// Connects to `address` within `timeout` (which also bounds every later read and
    /// write), and authenticates with `token` if one is given.
    ///
    /// # Errors
    /// [`NetError::Connect`] when the node cannot be reached, [`CacheError::Reply`] when it
    /// refuses the token.
    pub fn connect(address: &str, token: Option<&str>, timeout: Duration) -> Result<Conn> {
        let stream = open(address, timeout).map_err(|source| NetError::Connect {
            address: address.to_owned(),
            source,
        })?;
        let mut conn = Conn {
            address: address.to_owned(),
            timeout,
            replies: ReplyReader::new(BufReader::with_capacity(READ_BUFFER, stream)),
            request: Vec::new(),
        };
        if let Some(token) = token {
            let answer = conn
                .pipeline(&[[b"AUTH".as_slice(), token.as_bytes()]])?
                .pop()
                .expect("invariant: a pipeline answers every command");
            if !matches!(answer, Value::Status(_)) {
                return Err(refused(address, "AUTH", &answer).into());
            }
        }
        Ok(conn)
    }

    /// Sends `commands` (each one a command name and its arguments) and returns their
    /// replies in order: one round trip, or one per 64 KiB of requests for a very large
    /// pipeline.
    /// A command the node refuses gives a [`Value::Error`]; the connection goes on.
    ///
    /// # Errors
    /// [`NetError`] when the link fails or times out, [`CacheError::Protocol`] when the node
    /// sends something that is not a reply; either way the connection must be dropped.
    pub fn pipeline<C, A>(&mut self, commands: &[C]) -> Result<Vec<Value>>
    where
        C: AsRef<[A]>,
        A: AsRef<[u8]>,
    {
        let mut replies = Vec::with_capacity(commands.len());
        for batch in batches(commands) {
            self.send(batch)?;
            replies.extend(self.receive(batch.len())?);
        }
        Ok(replies)
    }

    /// Writes `commands` in one write, without reading: a caller that talks to several
    /// nodes sends to each, then reads from each, and waits one round trip in all. Keep
    /// a batch to what [`batches`] makes.
    ///
    /// # Errors
    /// [`NetError`] when the write fails or times out.
    pub(super) fn send<C, A>(&mut self, commands: &[C]) -> Result<()>
    where
        C: AsRef<[A]>,
        A: AsRef<[u8]>,
    {
        self.request.clear();
        for command in commands {
            encode_command(&mut self.request, command.as_ref());
        }
        let mut stream = self.replies.get_ref().get_ref();
        let written = stream.write_all(&self.request);
        if self.request.capacity() > KEEP_REQUEST_BUFFER {
            self.request = Vec::new();
        }
        written.map_err(|err| self.net_error("writing to", err).into())
    }

    /// Reads the next `count` replies.
    ///
    /// # Errors
    /// As [`Conn::pipeline`].
    pub(super) fn receive(&mut self, count: usize) -> Result<Vec<Value>> {
        (0..count)
            .map(|_| match self.replies.read() {
                Ok(value) => Ok(value),
                Err(ReadError::Io(err)) => Err(self.net_error("reading from", err).into()),
                Err(ReadError::Malformed(reason)) => Err(CacheError::Protocol {
                    node: self.address.clone(),
                    reason,
                }
                .into()),
            })
            .collect()
    }

    fn net_error(&self, doing: &str, err: io::Error) -> NetError {
        let node = &self.address;
        match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => NetError::TimedOut {
                context: format!("{doing} cache node {node} (after {:?})", self.timeout),
            },
            io::ErrorKind::UnexpectedEof => NetError::Io {
                context: format!("{doing} cache node {node}"),
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "it closed the connection"),
            },
            _ => NetError::Io {
                context: format!("{doing} cache node {node}"),
                source: err,
            },
        }
    }
}

/// The error for `node`'s `reply` to `command`: its refusal, or a reply of the wrong shape.
#[must_use]
pub(super) fn refused(node: &str, command: &str, reply: &Value) -> CacheError {
    let reason = match reply {
        Value::Error(text) => text.clone(),
        other => format!("unexpected reply to {command}: {}", other.kind()),
    };
    CacheError::Reply {
        node: node.to_owned(),
        reason,
    }
}

/// A TCP connection to the first of `address`'s resolved addresses that answers, with
/// Nagle off (a request is one write and waits for its reply) and `timeout` on every
/// read and write.
fn open(address: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for candidate in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&candidate, timeout) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                return Ok(stream);
            }
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing")
    }))
}

/// Appends `args` as one multibulk command.
fn encode_command<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    header(out, b'*', args.len());
    for arg in args {
        let arg = arg.as_ref();
        header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn header(out: &mut Vec<u8>, kind: u8, len: usize) {
    out.push(kind);
    write!(out, "{len}\r\n").expect("invariant: writing to a Vec cannot fail");
}

/// `commands` cut into batches that are each safe to send in one write before reading
/// its replies: several commands of at most [`MAX_BATCH_BYTES`] in all, or one command.
pub(super) fn batches<C, A>(commands: &[C]) -> Vec<&[C]>
where
    C: AsRef<[A]>,
    A: AsRef<[u8]>,
{
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, command) in commands.iter().enumerate() {
        // Headers take at most this many bytes per argument, and per command.
        let size = 24
            + command
                .as_ref()
                .iter()
                .map(|arg| arg.as_ref().len() + 24)
                .sum::<usize>();
        if index > start && bytes + size > MAX_BATCH_BYTES {
            batches.push(&commands[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    if start < commands.len() {
        batches.push(&commands[start..]);
    }
    batches
}

#[cfg(test)]
mod tests;
