//! Streaming to one peer: the primary's state machine
//! ([`crate::replication::machine::PrimaryMachine`]) decides (ship, heartbeat, drop, wait);
//! this glue reads the log, frames entries and reads the peer's acks.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::tcp::OwnedReadHalf;

use super::from_writer::{shipped, INLINE_READ_ENTRIES};
use super::outbox::Outbox;
use super::{Shared, Writer};
use crate::error::ReplicationError;
use crate::log::{LogPosition, RawEntry};
use crate::net::heard::HeardReader;
use crate::net::AbortOnDrop;
use crate::replication::handover::Settings;
use crate::replication::machine::{LinkAction, LinkId};
use crate::replication::protocol::{read_peer_frame, write_frame, Message, RefuseCode};
use crate::replication::ship::send_entries;
use crate::replication::status::now_ms;

/// Entries read from the log per batch at most.
const BATCH_ENTRIES: usize = 4096;

/// Streams entries to `id` as the machine decides, until it drops the link (no ack for
/// the stall timeout), the peer's reader ends (garbage or a closed connection) or a
/// write stalls. A sync writer's thread may ship entries over the same socket meanwhile
/// (see [`super::from_writer`]): every write here takes the socket's turn first.
pub(super) async fn stream_to(
    shared: &Arc<Shared>,
    id: &LinkId,
    mut acks: AbortOnDrop<()>,
    mut writer: Writer,
) -> Result<(), ReplicationError> {
    let mut visible = shared.visible.subscribe();
    let mut wanted = shared.sync.wanted();
    let mut position: Option<LogPosition> = None;
    let mut requests = shared.link_queues.register(&id.name);
    let outbox = Arc::new(Outbox::new(&writer)?);
    let _shared_socket = shared.share_socket(id, &outbox);
    loop {
        while let Some(request) = requests.pending() {
            let turn = outbox.turn(&mut writer).await?;
            write_frame(&mut writer, &request.message).await?;
            turn.end();
            request.sent();
        }
        let now = shared.now_us();
        let last_lsn = shared.store.last_lsn();
        let sync_wanted = *wanted.borrow_and_update();
        // Read after the wishes: a wish announced at the written LSN finds it here.
        let written_lsn = shared.written.load(Ordering::Acquire);
        let drained = drained_at(&writer, now);
        let (action, idle, awaits_visible, ahead) = shared.machine(|m| {
            if let Some(at) = drained {
                m.took_bytes(id, at);
            }
            m.visible(last_lsn);
            m.written(written_lsn);
            m.sync_wanted(sync_wanted);
            let ahead = m.peer(id).is_some_and(|p| p.holds_back);
            (m.poll(id, now), m.caught_up(id), m.awaits_visible(), ahead)
        });
        match action {
            LinkAction::Drop => {
                tracing::info!(replica = %id.name, "no ack within the stall timeout: dropping the link");
                return Ok(());
            }
            LinkAction::Heartbeat { last_lsn } => {
                let turn = outbox.turn(&mut writer).await?;
                let oldest_missing_ms = shared.oldest_missing_ms(id, last_lsn).unwrap_or(0);
                let ((members, members_version), member_ids) =
                    shared.machine(|m| (m.heartbeat_sent(id, last_lsn, now), m.member_ids()));
                let beat = Message::Heartbeat {
                    last_lsn,
                    oldest_missing_ms,
                    now_ms: now_ms(),
                    epoch: shared.store.own_epoch(),
                    quorum: shared.announced_quorum.load(Ordering::Acquire),
                    members,
                    peers: shared.members.addresses(),
                    settings: Some(Settings::of(&shared.options)),
                    members_version,
                    member_ids,
                };
                write_frame(&mut writer, &beat).await?;
                turn.end();
            }
            LinkAction::Ship {
                after_lsn,
                up_to_lsn,
                durable_lsn,
            } => {
                let from = position
                    .filter(|p| p.next_lsn() == after_lsn + 1)
                    .unwrap_or_else(|| LogPosition::after(after_lsn));
                let (batch, moved) = read_batch(shared, from, up_to_lsn, after_lsn).await?;
                if batch.is_empty() {
                    // Visible entries always read back: an empty batch would spin forever.
                    return Err(ReplicationError::Protocol(format!(
                        "the log returned no entry after {after_lsn} (visible: {up_to_lsn})"
                    )));
                }
                position = Some(moved);
                let turn = outbox.turn(&mut writer).await?;
                let shipped = shipped(&batch);
                let range = (after_lsn, up_to_lsn);
                if !shared.record_shipping(id, range, &shipped, durable_lsn, now) {
                    // A writer's thread shipped them meanwhile.
                    turn.end();
                    continue;
                }
                let epoch = shared.store.own_epoch();
                send_entries(&mut writer, batch, epoch, durable_lsn).await?;
                turn.end();
            }
            LinkAction::WaitUntil(at) => {
                let wait = Duration::from_micros(at.saturating_sub(shared.now_us()));
                // New entries matter only to a link that has shipped everything, or that
                // waits for a sync writer's entry to be visible: one that paces itself
                // ships them at its time anyway, and waking it on each commit cost the
                // writers a context switch per commit and link. A sync writer's wish
                // matters only to a link that paces itself: an idle one wakes for the
                // entry itself, and a second wake-up per sync write costs it a loop.
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = visible.changed(), if idle || awaits_visible => {}
                    // A replica that holds back is shipped a sync writer's entry as soon
                    // as it is written: its wish is announced then (other entries ship as
                    // they become visible, with no wake-up per commit).
                    _ = wanted.changed(), if !idle || ahead => {}
                    Some(request) = requests.next() => {
                        let turn = outbox.turn(&mut writer).await?;
                        write_frame(&mut writer, &request.message).await?;
                        turn.end();
                        request.sent();
                    }
                    // A writer's thread left bytes the socket would not take.
                    () = outbox.unsent_left() => outbox.turn(&mut writer).await?.end(),
                    _ = &mut acks.0 => return Ok(()),
                }
            }
        }
    }
}

/// When, on the primary's clock (`now` being now), the peer last took bytes that had
/// waited for room in its socket: a sign of life however long its ack takes.
fn drained_at(writer: &Writer, now: u64) -> Option<u64> {
    let ago = writer.drained_at()?.elapsed().as_micros();
    Some(now.saturating_sub(u64::try_from(ago).unwrap_or(u64::MAX)))
}

/// Reads the next batch of entries from `position` (after `after_lsn`) up to `up_to`:
/// visible ones, or for a replica that holds back, written ones.
async fn read_batch(
    shared: &Arc<Shared>,
    mut position: LogPosition,
    up_to: u64,
    after_lsn: u64,
) -> Result<(Vec<RawEntry>, LogPosition), ReplicationError> {
    let store = shared.store.clone();
    let max_bytes = shared.options.max_batch_bytes;
    let backlog = up_to - after_lsn;
    if up_to > store.last_lsn() {
        // Past the visible LSN: the newest records, kept in memory.
        let batch = store.read_log_written(&mut position, up_to, BATCH_ENTRIES, max_bytes);
        let batch = batch.map_err(|e| unreadable(shared, &e, after_lsn))?;
        return Ok((batch, position));
    }
    // A small backlog is among the newest records, which the store keeps in memory: reading
    // it here costs no system call, and less than a hop to the blocking pool, which would
    // show in the lag of eager shipping.
    let (batch, position) = if backlog <= INLINE_READ_ENTRIES {
        let batch = store.read_log_raw(&mut position, BATCH_ENTRIES, max_bytes);
        (batch, position)
    } else {
        tokio::task::spawn_blocking(move || {
            let batch = store.read_log_raw(&mut position, BATCH_ENTRIES, max_bytes);
            (batch, position)
        })
        .await
        .map_err(|e| ReplicationError::Protocol(format!("log reader failed: {e}")))?
    };
    let batch = batch.map_err(|e| unreadable(shared, &e, after_lsn))?;
    Ok((batch, position))
}

/// The link's end when the log after `after_lsn` cannot be read. A damaged record makes
/// the log before the end of its segment unreadable for every peer from now on: each is
/// seeded by a snapshot of the tables when it reconnects, rather than meeting the damage
/// again and again (logged once, with what was found).
fn unreadable(shared: &Shared, failure: &crate::error::Error, after_lsn: u64) -> ReplicationError {
    if let crate::error::Error::Log(crate::error::LogError::Corrupt { .. }) = failure {
        let store = &shared.store;
        let segment_end = store.log_segments().ok().and_then(|segments| {
            segments
                .iter()
                .map(|segment| segment.first_lsn)
                .find(|&first| first > after_lsn + 1)
        });
        let below = segment_end.unwrap_or_else(|| store.last_lsn() + 1);
        if shared.unreadable_below.fetch_max(below, Ordering::AcqRel) < below {
            tracing::error!(
                error = %failure,
                below,
                "the log is damaged: peers that need it before this LSN are seeded by a \
                 snapshot of the tables (`replikv scrub` checks them)"
            );
        }
    }
    ReplicationError::Protocol(format!("cannot read the log: {failure}"))
}

/// Hands every ack of `id` to the machine; ends at the first other message, a broken frame
/// or a closed connection (silence is the machine's to judge). A message a peer has no
/// business sending, or a frame that does not decode, is refused and counted like garbage
/// before the handshake.
pub(super) async fn read_acks(
    shared: Arc<Shared>,
    id: LinkId,
    peer: Option<SocketAddr>,
    reader: HeardReader<OwnedReadHalf>,
) {
    let refuse = |reason: String| match &peer {
        Some(peer) => shared.reject(peer, &reason),
        None => shared.reject(&id.name, &reason),
    };
    // Buffered: a frame's length and body then take one read, not two (an eager replica
    // acks every batch it applies).
    let mut reader = tokio::io::BufReader::new(reader);
    loop {
        match read_peer_frame(&mut reader).await {
            Ok(Message::Ack {
                flushed_lsn,
                applied_lsn,
                members_version,
            }) => shared.acknowledge(&id, flushed_lsn, applied_lsn, members_version),
            Ok(Message::Refused {
                code: RefuseCode::Fenced,
                epoch,
                reason,
                ..
            }) => {
                tracing::warn!(replica = %id.name, epoch, %reason, "a replica has seen a newer epoch");
                shared.fence(epoch).await;
                return;
            }
            Ok(Message::VerifyReply { id: request, sums }) => {
                shared.link_queues.reply(&id.name, request, sums);
            }
            Ok(Message::Lead { address }) => {
                // The replica a switchover handed over to serves now.
                shared.handed_over(&id.name, address);
                return;
            }
            Ok(other) => {
                let kind = other.type_byte();
                refuse(format!(
                    "{} sent a message of type {kind} it may not send after its handshake",
                    id.name
                ));
                return;
            }
            Err(err @ (ReplicationError::Protocol(_) | ReplicationError::Version { .. })) => {
                refuse(format!(
                    "{} sent a frame that does not decode: {err}",
                    id.name
                ));
                return;
            }
            Err(err) => {
                tracing::debug!(replica = %id.name, error = %err, "replica stream ended");
                return;
            }
        }
    }
}
