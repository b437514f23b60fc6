//! Sending entries: whole entries packed into frames, an entry larger than a frame in
//! parts. A primary ships its log this way, and a member sends a candidate what it lacks.

use serde_bytes::ByteBuf;
use tokio::io::AsyncWrite;

use super::protocol::{write_frame, Message, MAX_FRAME_BYTES};
use crate::error::ReplicationError;
use crate::log::RawEntry;

/// Room left in a frame for the message around the payloads.
const FRAME_SLACK: usize = 1024;

/// Sends a batch: whole entries packed into frames, an entry larger than a frame in parts;
/// `epoch` is the sender's, and its log is durable up to `durable_lsn`.
///
/// # Errors
/// A write fails (or stalls past the writer's limit).
pub async fn send_entries<W: AsyncWrite + Unpin>(
    writer: &mut W,
    batch: Vec<RawEntry>,
    epoch: u64,
    durable_lsn: u64,
) -> Result<(), ReplicationError> {
    for message in entry_messages(batch, epoch, durable_lsn) {
        write_frame(writer, &message).await?;
    }
    Ok(())
}

/// The messages that carry a batch, in order: whole entries packed into frames, an entry
/// larger than a frame in parts.
#[must_use]
pub fn entry_messages(batch: Vec<RawEntry>, epoch: u64, durable_lsn: u64) -> Vec<Message> {
    let limit = MAX_FRAME_BYTES - FRAME_SLACK;
    let mut messages = Vec::new();
    let mut frame: Vec<ByteBuf> = Vec::new();
    let mut frame_bytes = 0;
    for entry in batch {
        let size = entry.payload.len() + 16;
        if !frame.is_empty() && frame_bytes + size > limit {
            messages.push(Message::Entries {
                payloads: std::mem::take(&mut frame),
                epoch,
                durable_lsn,
            });
            frame_bytes = 0;
        }
        if size > limit {
            let total = entry.payload.len() as u64;
            for (index, chunk) in entry.payload.chunks(limit).enumerate() {
                messages.push(Message::EntryPart {
                    total,
                    offset: (index * limit) as u64,
                    data: ByteBuf::from(chunk.to_vec()),
                    lsn: entry.lsn,
                    durable_lsn,
                });
            }
            continue;
        }
        frame_bytes += size;
        frame.push(ByteBuf::from(entry.payload));
    }
    if !frame.is_empty() {
        messages.push(Message::Entries {
            payloads: frame,
            epoch,
            durable_lsn,
        });
    }
    messages
}
