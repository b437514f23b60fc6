//! The replication wire protocol (DESIGN §5): framed, versioned, checksummed messages.
//!
//! ```text
//! frame = len u32 BE | version u8 | type u8 | payload | crc32c(version, type, payload) u32 BE
//! ```
//! `len` counts every byte after itself and is capped at [`MAX_FRAME_BYTES`]: a larger
//! length is refused before anything is allocated. The payload is the message encoded as
//! `MessagePack` with serde; `type` repeats the message kind so that a reader can refuse a
//! frame without decoding it.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{NetError, ReplicationError};
use crate::net::heard::{idle_bounded, Idle};

#[cfg(test)]
mod fuzz;
mod message;
#[cfg(test)]
mod tests;

pub use message::{
    unexpected, Message, PeerKind, RefuseCode, DROP_SLOT_REQUEST, FOLLOW_REQUEST, MAX_EPOCH,
    MAX_LSN,
};

/// The protocol version this build speaks.
/// Version 2 (issue 8) added fields to `Hello`, `Entries`, `Heartbeat`, `Refused` and
/// `SnapshotBegin`, and the verification messages. A peer of version 1 cannot decode those
/// longer messages (`MessagePack` arrays with more elements than it expects): the
/// version byte makes the two refuse each other with a clear error instead.
/// Version 3 added `members_version` to `Heartbeat` and `Ack` (see the primary machine's
/// `membership.rs`), for the same reason.
/// Version 4 added the members' store ids to `Heartbeat`, `Granted` and the view a grant
/// carries, so that a promotion tells a member from another directory given its name.
pub const PROTOCOL_VERSION: u8 = 4;
/// The largest frame accepted (after the length field). Entries larger than this travel in
/// parts; a single snapshot row (key and value) must fit in one frame.
pub const MAX_FRAME_BYTES: usize = 64 << 20;
/// The largest frame a peer sends a primary after its handshake: acks, and the sums of a
/// verification (a few dozen bytes per table). Only a primary sends large frames.
pub const PEER_FRAME_BYTES: usize = 4 << 20;
/// The largest handshake frame (challenge, hello, welcome).
pub const HANDSHAKE_FRAME_BYTES: usize = 64 << 10;
/// Bytes of version, type and CRC around a payload.
const FRAME_OVERHEAD: usize = 6;

fn protocol(reason: impl Into<String>) -> ReplicationError {
    ReplicationError::Protocol(reason.into())
}

/// Encodes one frame.
///
/// # Errors
/// [`ReplicationError::Protocol`] if the message does not fit in a frame.
pub fn encode_frame(message: &Message) -> Result<Vec<u8>, ReplicationError> {
    let payload = rmp_serde::to_vec(message)
        .map_err(|e| protocol(format!("cannot encode a message: {e}")))?;
    let len = payload.len() + FRAME_OVERHEAD;
    if len > MAX_FRAME_BYTES {
        return Err(protocol(format!(
            "a {len}-byte frame exceeds the {MAX_FRAME_BYTES}-byte limit"
        )));
    }
    let mut frame = Vec::with_capacity(4 + len);
    frame.extend_from_slice(
        &u32::try_from(len)
            .expect("invariant: len <= MAX_FRAME_BYTES")
            .to_be_bytes(),
    );
    frame.push(PROTOCOL_VERSION);
    frame.push(message.type_byte());
    frame.extend_from_slice(&payload);
    let crc = crc32c::crc32c(&frame[4..]);
    frame.extend_from_slice(&crc.to_be_bytes());
    Ok(frame)
}

/// Checks a frame's length field before its body is read: never allocate for a lie.
///
/// # Errors
/// [`ReplicationError::Protocol`] for a length below the minimum or above the cap.
pub fn check_frame_len(header: [u8; 4]) -> Result<usize, ReplicationError> {
    let len = u32::from_be_bytes(header) as usize;
    if !(FRAME_OVERHEAD..=MAX_FRAME_BYTES).contains(&len) {
        return Err(protocol(format!(
            "frame length {len} is outside {FRAME_OVERHEAD}..={MAX_FRAME_BYTES}"
        )));
    }
    Ok(len)
}

/// Decodes a frame body (the `len` bytes after the length field).
///
/// # Errors
/// [`ReplicationError::Version`] for another protocol version; [`ReplicationError::Protocol`]
/// for a bad CRC, a type byte that does not match, or a payload that does not decode.
pub fn decode_frame_body(body: &[u8]) -> Result<Message, ReplicationError> {
    if body.len() < FRAME_OVERHEAD {
        return Err(protocol("truncated frame"));
    }
    let (content, crc) = body.split_at(body.len() - 4);
    if crc32c::crc32c(content) != u32::from_be_bytes(crc.try_into().expect("invariant: 4 bytes")) {
        return Err(protocol("frame checksum mismatch"));
    }
    if content[0] != PROTOCOL_VERSION {
        return Err(ReplicationError::Version {
            ours: PROTOCOL_VERSION,
            theirs: content[0],
        });
    }
    let message: Message = rmp_serde::from_slice(&content[2..])
        .map_err(|e| protocol(format!("undecodable message: {e}")))?;
    if message.type_byte() != content[1] {
        return Err(protocol(format!(
            "frame type {} does not match its message",
            content[1]
        )));
    }
    message.check_plausible().map_err(protocol)?;
    Ok(message)
}

fn io(context: &str) -> impl FnOnce(std::io::Error) -> ReplicationError + '_ {
    move |source| {
        NetError::Io {
            context: context.to_owned(),
            source,
        }
        .into()
    }
}

/// Reads one frame; its length is checked before anything is allocated.
///
/// # Errors
/// I/O failures (including a closed connection) and protocol violations.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Message, ReplicationError> {
    read_frame_up_to(reader, MAX_FRAME_BYTES).await
}

/// Reads one frame a peer sends its primary after the handshake (at most
/// [`PEER_FRAME_BYTES`]): a peer that proved the token cannot make the primary allocate
/// a primary's frame size per connection either.
///
/// # Errors
/// As [`read_frame`], and a frame over the limit.
pub async fn read_peer_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Message, ReplicationError> {
    read_frame_up_to(reader, PEER_FRAME_BYTES).await
}

/// Reads one frame of at most `limit` bytes: before a peer has proved the token, frames
/// are kept small, so that a stranger cannot make the primary allocate much.
async fn read_frame_up_to<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<Message, ReplicationError> {
    let mut header = [0u8; 4];
    reader
        .read_exact(&mut header)
        .await
        .map_err(io("reading a frame"))?;
    let len = check_frame_len(header)?;
    if len > limit {
        return Err(ReplicationError::Protocol(format!(
            "a {len}-byte frame where at most {limit} bytes are allowed"
        )));
    }
    let mut body = vec![0u8; len];
    reader
        .read_exact(&mut body)
        .await
        .map_err(io("reading a frame"))?;
    decode_frame_body(&body)
}

/// Reads one frame, or fails after `timeout`.
///
/// # Errors
/// As [`read_frame`], and [`NetError::TimedOut`].
pub async fn read_frame_within<R: AsyncRead + Unpin>(
    reader: &mut R,
    timeout: Duration,
    what: &str,
) -> Result<Message, ReplicationError> {
    tokio::time::timeout(timeout, read_frame(reader))
        .await
        .map_err(|_| timed_out(what, timeout))?
}

/// Reads one frame, or fails once no byte of it came for `idle`: a large frame on a slow
/// link may take far longer than `idle` to arrive whole.
///
/// # Errors
/// As [`read_frame`], and [`NetError::TimedOut`].
pub async fn read_frame_idle<R: AsyncRead + Unpin>(
    reader: &mut R,
    idle: Duration,
    what: &str,
) -> Result<Message, ReplicationError> {
    idle_bounded(reader, idle, |mut reader| async move {
        read_frame(&mut reader).await
    })
    .await
    .map_err(|Idle| {
        ReplicationError::from(NetError::TimedOut {
            context: format!("no byte of {what} for {idle:?}"),
        })
    })?
}

fn timed_out(what: &str, timeout: Duration) -> ReplicationError {
    NetError::TimedOut {
        context: format!("no {what} within {timeout:?}"),
    }
    .into()
}

/// Reads one handshake frame (at most [`HANDSHAKE_FRAME_BYTES`]), or fails after `timeout`.
///
/// # Errors
/// As [`read_frame_within`], and a frame over the handshake limit.
pub async fn read_handshake_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    timeout: Duration,
    what: &str,
) -> Result<Message, ReplicationError> {
    tokio::time::timeout(timeout, read_frame_up_to(reader, HANDSHAKE_FRAME_BYTES))
        .await
        .map_err(|_| timed_out(what, timeout))?
}

/// Writes one frame.
///
/// # Errors
/// I/O failures, or a message too large for a frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &Message,
) -> Result<(), ReplicationError> {
    let frame = encode_frame(message)?;
    writer
        .write_all(&frame)
        .await
        .map_err(io("writing a frame"))
}
