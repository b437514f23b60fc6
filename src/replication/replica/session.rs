//! Following a primary once connected: the [`ReplicaMachine`] checks every message and
//! says what to append and what to acknowledge; this glue reads frames ahead, applies
//! through the consumer, syncs what it applied beside the next appends, and writes the
//! acks (which carry what is durable).

use std::sync::Arc;
use std::time::Instant;

use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, watch};

use super::connect::{connect, Writer};
use super::handover::{take_over, Handover};
use super::{lock, remembered, Shared, IDLE_TIMEOUT};
use crate::error::{NetError, ReplicationError};
use crate::net::heard::{HeardReader, LastHeard};
use crate::net::AbortOnDrop;
use crate::replication::machine::{ReplicaAction, ReplicaMachine, APPLY_BATCH_BYTES};
use crate::replication::protocol::{read_frame, write_frame, Message, RefuseCode};

/// Frames read ahead of the applier, at most.
const READ_AHEAD_FRAMES: usize = 64;

/// One connection's life: connect, then append and acknowledge until the link fails or
/// `shutdown` is signalled. Sets `connected` once the handshake succeeded.
pub(super) async fn session(
    shared: &Arc<Shared>,
    shutdown: &mut watch::Receiver<bool>,
    connected: &mut bool,
) -> Result<(), ReplicationError> {
    let (reader, mut writer, mut machine) = connect(shared).await?;
    *connected = true;
    tracing::info!(primary = %shared.primary(), from_lsn = machine.flushed_lsn(), "following");
    // Frames are read ahead while a batch is applied, so that everything that arrived
    // meanwhile is applied next in one append: a replica keeps up with a primary that
    // ships every commit on its own. One fdatasync covers every append made while the
    // previous one ran.
    let (frames, mut inbox) = mpsc::channel(READ_AHEAD_FRAMES);
    // Bytes of a frame still arriving are not silence (a large one on a slow link).
    let heard = LastHeard::now();
    let reader = HeardReader::new(reader, Arc::clone(&heard));
    let _read_ahead = AbortOnDrop(tokio::spawn(read_frames(reader, frames)));
    // The store applies entries before its fdatasync; the end of each sync is acknowledged
    // (what acks carry is durable).
    let mut syncs = Syncs::default();
    // One timer for the session, moved only when it fires early: registering a new one
    // for every wait woke the runtime's driver (a system call, and one more turn of the
    // loop) on every frame.
    let silent = tokio::time::sleep(IDLE_TIMEOUT);
    tokio::pin!(silent);
    // When the session last began to wait: only its waits count as silence, and only
    // while no byte comes.
    let mut waiting_since = tokio::time::Instant::now();
    loop {
        syncs.start_if_behind(shared, &machine);
        let first = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            synced = synced(&mut syncs.running), if syncs.running.is_some() => {
                syncs.ended(!inbox.is_empty());
                let synced = synced?;
                drop(not_granted(shared, &machine)?);
                let ack = machine.durable(synced, 0);
                publish(shared, &machine);
                send_ack(&mut writer, ack).await?;
                waiting_since = tokio::time::Instant::now();
                continue;
            }
            frame = inbox.recv() => frame.unwrap_or_else(|| Err(ReplicationError::Protocol("the stream ended".into())))?,
            () = &mut silent => {
                let quiet_since = waiting_since.max(heard.at());
                if quiet_since.elapsed() >= IDLE_TIMEOUT {
                    return Err(silence());
                }
                silent.as_mut().reset(quiet_since + IDLE_TIMEOUT);
                continue;
            }
        };
        let mut batch = Batch::default();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            let entries = matches!(message, Message::Entries { .. } | Message::EntryPart { .. });
            if !entries {
                // Whatever comes after entries is answered once they are applied.
                flush(shared, &mut machine, &mut writer, batch.take(), false).await?;
                observe(shared, &machine, &message)?;
            }
            match message {
                Message::VerifyRequest { id, since_lsn } => {
                    answer_verify(shared, &mut writer, id, since_lsn).await?;
                    continue;
                }
                Message::Lead { address } => {
                    // A switchover elsewhere: the link ends at the next await.
                    shared.repoint(&address);
                    continue;
                }
                Message::Handover {
                    epoch,
                    last_lsn,
                    settings,
                    members,
                } => {
                    // The old primary learns that this log holds everything, durably.
                    sync_now(shared, &mut machine, &mut writer).await?;
                    let handover = Handover {
                        epoch,
                        last_lsn,
                        settings,
                        members,
                    };
                    let address = take_over(shared, &machine, handover).await?;
                    // The old primary waits for this to know the switchover is done.
                    write_frame(&mut writer, &Message::Lead { address }).await?;
                    return Ok(());
                }
                _ => {}
            }
            batch.receive(&mut machine, &mut writer, message).await?;
            if !entries {
                // A heartbeat confirms entries held back: they are shown now.
                flush(shared, &mut machine, &mut writer, batch.take(), false).await?;
                // A heartbeat can settle the link (caught up with an idle primary) with no
                // entry to apply: status shows it now, not after the next write.
                lock(&shared.state).state = machine.state();
            }
            if entries && (batch.bytes as u64) < APPLY_BATCH_BYTES {
                if let Ok(frame) = inbox.try_recv() {
                    next = Some(frame?);
                }
            }
        }
        // The reader runs on this thread too: frames that came while the last batch was
        // applied wait in the socket until it reads them. Yielding lets it: the scheduler
        // polls the driver, then runs the reader it woke before this task (the follow
        // loop is a task for that reason, see `start_thread`).
        tokio::task::yield_now().await;
        let then_sync = syncs.inline(!batch.pending.is_empty(), !inbox.is_empty());
        flush(shared, &mut machine, &mut writer, batch.take(), then_sync).await?;
        if then_sync {
            tokio::task::yield_now().await;
            syncs.ended(!inbox.is_empty());
        }
        waiting_since = tokio::time::Instant::now();
    }
}

/// What the frames read in one go ask for: entries to append, and where to show readers
/// up to once they are.
#[derive(Default)]
struct Batch {
    pending: Vec<Vec<u8>>,
    bytes: usize,
    release: Option<u64>,
}

impl Batch {
    /// Hands `message` to the machine and keeps what it asks for (acks go out at once).
    async fn receive(
        &mut self,
        machine: &mut ReplicaMachine,
        writer: &mut Writer,
        message: Message,
    ) -> Result<(), ReplicationError> {
        let actions = match machine.receive(message) {
            Ok(actions) => actions,
            Err(err) => {
                tell_fenced(writer, &err).await;
                return Err(err);
            }
        };
        for action in actions {
            match action {
                ReplicaAction::Append(payloads) => {
                    self.bytes += payloads.iter().map(Vec::len).sum::<usize>();
                    self.pending.extend(payloads);
                }
                ack @ ReplicaAction::Ack { .. } => send_ack(writer, ack).await?,
                // Shown once what comes before it is appended.
                ReplicaAction::Release(lsn) => self.release = Some(lsn),
            }
        }
        Ok(())
    }

    /// The entries to append and the LSN to show up to, leaving the batch empty.
    fn take(&mut self) -> (Vec<Vec<u8>>, Option<u64>) {
        self.bytes = 0;
        (std::mem::take(&mut self.pending), self.release.take())
    }
}

/// The primary sends at least a heartbeat every interval: waiting this long for anything
/// means a stalled link, which is dropped so that the replica reconnects. Only the
/// session's waits count, never the time it spends applying, and only while no byte comes.
fn silence() -> ReplicationError {
    NetError::TimedOut {
        context: format!("nothing from the primary for {IDLE_TIMEOUT:?}"),
    }
    .into()
}

/// Where the replica's syncs run: right after an append, on the follow thread, while
/// writes come one at a time (a lone sync writer waits for each, and a hop to another
/// thread and back costs it about a fifth of its latency); on the blocking pool, beside
/// the appends, while they keep coming (an inline sync would hold them back from readers).
/// A sync during which entries came switches to the second; one during which none came,
/// back to the first.
#[derive(Default)]
struct Syncs {
    /// The sync running beside the appends.
    running: Option<Syncing>,
    /// Entries came during the last sync.
    streaming: bool,
    /// Entries were applied while the one running runs.
    arrived: bool,
}

impl Syncs {
    /// Starts a sync beside the appends if what is applied is not all durable and none
    /// runs.
    fn start_if_behind(&mut self, shared: &Arc<Shared>, machine: &ReplicaMachine) {
        if self.running.is_none() && machine.appended_lsn() > machine.flushed_lsn() {
            self.running = Some(start_sync(shared));
        }
    }

    /// Whether the append about to be made (`applying` entries) syncs right after, on this
    /// worker; `waiting`: more frames are read already.
    fn inline(&mut self, applying: bool, waiting: bool) -> bool {
        self.arrived |= self.running.is_some() && applying;
        self.running.is_none() && !self.streaming && !waiting
    }

    /// A sync ended; `waiting`: frames came meanwhile and wait.
    fn ended(&mut self, waiting: bool) {
        self.running = None;
        self.streaming = std::mem::take(&mut self.arrived) || waiting;
    }
}

/// Records what a heartbeat says about the primary, for status and lag, and its quorum
/// and member count durably: the machine's acks say it holds them once it sees the
/// heartbeat (which is what lets a joining replica count toward the quorum), so a failure
/// to record them ends the session before it does.
fn observe(
    shared: &Shared,
    machine: &ReplicaMachine,
    message: &Message,
) -> Result<(), ReplicationError> {
    if let Message::Heartbeat {
        last_lsn,
        oldest_missing_ms,
        now_ms,
        quorum,
        members,
        peers,
        settings,
        member_ids,
        ..
    } = message
    {
        let (quorum, members) = (*quorum, *members);
        let known = {
            let state = lock(&shared.state);
            (state.primary_quorum, state.primary_members)
        };
        let (peers_changed, settings_changed, ids_changed) = {
            let state = lock(&shared.state);
            (
                quorum > 0 && *peers != state.primary_peers,
                settings.as_ref().is_some_and(
                    |said| !matches!(&state.primary_settings, Ok(Some(known)) if known == said),
                ),
                quorum > 0 && *member_ids != state.primary_member_ids,
            )
        };
        if let Some(side) = &shared.store_side {
            // Kept on disk too: a replica restarted after its primary died asks the
            // members, and serves with the settings once promoted.
            let dir = side.store.path();
            if ids_changed {
                // Durable before the ack that says this membership is known: a
                // promotion must tell a replaced member's directory from the new one.
                remembered::save_member_ids(dir, member_ids).map_err(|err| {
                    ReplicationError::Protocol(format!(
                        "could not record the primary's members' store ids: {err}"
                    ))
                })?;
            }
            if peers_changed {
                if let Err(err) = remembered::save_members(dir, peers) {
                    tracing::warn!(error = %err, "could not remember the primary's members");
                }
            }
            if let (true, Some(settings)) = (settings_changed, settings) {
                if let Err(err) = remembered::save_settings(dir, settings) {
                    tracing::warn!(error = %err, "could not remember the primary's settings");
                }
            }
        }
        if quorum > 0 && (quorum, members) != known {
            // On disk before it shows (a change is rare): a replica restarted after its
            // primary died can still promote.
            shared
                .consumer
                .remember_quorum(quorum, members)
                .map_err(|err| {
                    ReplicationError::Protocol(format!(
                        "could not record the primary's quorum and members: {err}"
                    ))
                })?;
        }
        let mut state = lock(&shared.state);
        state.primary_quorum = quorum;
        state.primary_members = members;
        if quorum > 0 {
            state.primary_peers.clone_from(peers);
            state.primary_member_ids.clone_from(member_ids);
        }
        if settings_changed {
            state.primary_settings = Ok(settings.clone());
        }
        state.primary_last_lsn = state.primary_last_lsn.max(*last_lsn);
        state.heartbeat = Some((*now_ms, Instant::now()));
        state.oldest_missing_ms = *oldest_missing_ms;
        state.state = machine.state();
    }
    Ok(())
}

/// Tells a primary it is deposed (best effort: the link is dropped anyway), so that it
/// stops taking writes at once rather than when a promotion reaches it.
async fn tell_fenced(writer: &mut Writer, err: &ReplicationError) {
    if let ReplicationError::Fenced { epoch, reason } = err {
        let refused = Message::Refused {
            reason: reason.clone(),
            code: RefuseCode::Fenced,
            epoch: *epoch,
            fork_lsn: None,
        };
        let _ = write_frame(writer, &refused).await;
    }
}

/// Answers a verification with the sums of what is applied (the entries received before
/// the request were flushed above).
async fn answer_verify(
    shared: &Shared,
    writer: &mut Writer,
    id: u64,
    since_lsn: u64,
) -> Result<(), ReplicationError> {
    let sums = shared
        .consumer
        .recent_sums(since_lsn)
        .map_err(|e| ReplicationError::Protocol(format!("cannot read the sums to verify: {e}")))?;
    write_frame(writer, &Message::VerifyReply { id, sums }).await
}

/// Refuses to go on once a promotion here was granted an epoch past the link's: its
/// candidate was told what this log holds durably, so the old primary must hear of nothing
/// that became durable after (an ack of it would count toward a sync write the new
/// primary may not have). Checked after each sync run without the grant's lock, as a
/// grant may come while it runs; the guard holds the lock for a caller that syncs under it.
fn not_granted<'a>(
    shared: &'a Shared,
    machine: &ReplicaMachine,
) -> Result<std::sync::MutexGuard<'a, u64>, ReplicationError> {
    let granted = lock(&shared.granted);
    if *granted > machine.epoch() {
        // A candidate was told this log is final: the primary is deposed.
        return Err(ReplicationError::Fenced {
            epoch: *granted,
            reason: format!(
                "epoch {} was granted to a promotion here: the primary of epoch {} is deposed",
                *granted,
                machine.epoch()
            ),
        });
    }
    Ok(granted)
}

async fn send_ack(writer: &mut Writer, action: ReplicaAction) -> Result<(), ReplicationError> {
    if let ReplicaAction::Ack {
        flushed_lsn,
        applied_lsn,
        members_version,
    } = action
    {
        let ack = Message::Ack {
            flushed_lsn,
            applied_lsn,
            members_version,
        };
        write_frame(writer, &ack).await?;
    }
    Ok(())
}

/// A sync of the store running on the blocking pool; it ends with the flushed LSN.
type Syncing = tokio::task::JoinHandle<Result<u64, ReplicationError>>;

fn start_sync(shared: &Arc<Shared>) -> Syncing {
    let consumer = Arc::clone(&shared.consumer);
    tokio::task::spawn_blocking(move || {
        consumer
            .sync()
            .map_err(|e| ReplicationError::Protocol(format!("cannot sync replicated entries: {e}")))
    })
}

/// The end of the sync that runs (`syncing` is `Some`).
async fn synced(syncing: &mut Option<Syncing>) -> Result<u64, ReplicationError> {
    match syncing.as_mut() {
        Some(task) => task.await.map_err(|e| {
            ReplicationError::Protocol(format!("the sync of replicated entries stopped: {e}"))
        })?,
        None => std::future::pending().await,
    }
}

/// Makes everything applied durable on this worker, then acknowledges it (if it was not).
async fn sync_now(
    shared: &Arc<Shared>,
    machine: &mut ReplicaMachine,
    writer: &mut Writer,
) -> Result<(), ReplicationError> {
    if machine.appended_lsn() <= machine.flushed_lsn() {
        return Ok(());
    }
    let flushed = shared
        .consumer
        .sync()
        .map_err(|e| ReplicationError::Protocol(format!("cannot sync replicated entries: {e}")))?;
    drop(not_granted(shared, machine)?);
    let ack = machine.durable(flushed, 0);
    publish(shared, machine);
    send_ack(writer, ack).await
}

/// Shows the link's state and the primary's last LSN as the machine knows them now.
fn publish(shared: &Shared, machine: &ReplicaMachine) {
    let mut state = lock(&shared.state);
    state.primary_last_lsn = state.primary_last_lsn.max(machine.primary_last_lsn());
    state.state = machine.state();
}

/// Appends and applies `payloads`, then shows readers what the primary confirmed up to
/// `release` (and syncs them, with `then_sync`), then acknowledges what is durable, if
/// that moved.
async fn flush(
    shared: &Arc<Shared>,
    machine: &mut ReplicaMachine,
    writer: &mut Writer,
    (payloads, release): (Vec<Vec<u8>>, Option<u64>),
    then_sync: bool,
) -> Result<(), ReplicationError> {
    if payloads.is_empty() && release.is_none() {
        return Ok(());
    }
    // Applied on the follow thread itself, which runs this link only (see
    // [`super::Follower`]): a hop to the blocking pool cost an eager replica about a third
    // of its append time.
    let consumer = &shared.consumer;
    // The grant's lock is held while it applies and syncs: a grant then reports all of it.
    let applied = || -> Result<(u64, u64), ReplicationError> {
        let _granting = not_granted(shared, machine)?;
        let applying = |e: crate::Error| {
            if e.is_not_written() {
                ReplicationError::NoRoom(e.to_string())
            } else {
                ReplicationError::Protocol(format!("cannot apply replicated entries: {e}"))
            }
        };
        let (flushed, mut applied) = if payloads.is_empty() {
            (machine.flushed_lsn(), machine.applied_lsn())
        } else {
            if machine.holds_back() && machine.appended_lsn() > machine.confirmed_lsn() {
                consumer.expect_unconfirmed().map_err(applying)?;
            }
            consumer.apply(&payloads).map_err(applying)?
        };
        if let Some(lsn) = release {
            applied = consumer.release(lsn).map_err(applying)?;
        }
        let appended = machine.appended_lsn();
        if then_sync && flushed < appended {
            let flushed = consumer.sync().map_err(|e| {
                ReplicationError::Protocol(format!("cannot sync replicated entries: {e}"))
            })?;
            return Ok((flushed, applied));
        }
        Ok((flushed, applied))
    };
    let (flushed, applied) = applied()?;
    let ack = machine.durable(flushed, applied);
    publish(shared, machine);
    // What is appended but not durable is acked once a sync ends; entries just shown are
    // acked now (a sync writer may wait for that alone: what the ack says is durable is).
    if flushed < machine.appended_lsn() && release.is_none() {
        return Ok(());
    }
    send_ack(writer, ack).await
}

async fn read_frames(
    reader: HeardReader<OwnedReadHalf>,
    frames: mpsc::Sender<Result<Message, ReplicationError>>,
) {
    // Buffered: a small frame's length and body then take one read, not two.
    let mut reader = tokio::io::BufReader::new(reader);
    loop {
        // No deadline here: the session times its own waits (this task does not run while
        // the session applies, so a deadline here would count that time as silence).
        let frame = read_frame(&mut reader).await;
        let failed = frame.is_err();
        if frames.send(frame).await.is_err() || failed {
            return;
        }
    }
}
