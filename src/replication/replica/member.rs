//! A replica's member server: where a promotion elsewhere asks it to raise its epoch
//! (DESIGN §1). It grants an epoch only if it is newer than any it has seen
//! ([`grants`]), durably, and from then on appends nothing more from an older primary; it
//! then sends the candidate the entries it lacks, and follows it once it leads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{lock, Shared};
use crate::error::ReplicationError;
use crate::log::LogPosition;
use crate::net::admission::Admission;
use crate::net::rated::Rated;
use crate::net::runtime;
use crate::net::server::{accept_loop, Incoming};
use crate::net::stall::StallWriter;
use crate::replication::handshake::{self, Role};
use crate::replication::machine::promotion::{grants, View};
use crate::replication::protocol::{
    read_frame_within, read_handshake_frame, write_frame, Message, PeerKind, RefuseCode,
    DROP_SLOT_REQUEST, FOLLOW_REQUEST,
};
use crate::replication::ship::send_entries;
use crate::store::Store;

/// How long a candidate may take over each step (its hello, its next request).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections waiting for their hello, and candidates served at once, at most.
const MAX_WAITING: usize = 16;
const MAX_CANDIDATES: usize = 4;
/// Entries per batch sent to a candidate, at most.
const FETCH_ENTRIES: usize = 4096;
const FETCH_BYTES: usize = 16 << 20;

/// The running member server.
pub(super) struct Server {
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Answers candidates on `listener` for the replica of `shared`, whose store is
    /// `store`.
    pub(super) fn start(shared: Arc<Shared>, store: Store, listener: TcpListener) -> Self {
        let (shutdown, stop) = watch::channel(false);
        let admission = Admission::new(MAX_WAITING, MAX_CANDIDATES);
        // Anyone can connect to this port: what ends badly is logged once a second at most.
        let ended_logged = Arc::new(Rated::default());
        let task = runtime().spawn(accept_loop(listener, admission, stop, move |incoming| {
            let (shared, store) = (Arc::clone(&shared), store.clone());
            let ended_logged = Arc::clone(&ended_logged);
            async move {
                let peer = incoming.peer;
                if let Err(err) = answer(&shared, &store, incoming).await {
                    if let Some(skipped) = ended_logged.admit(Instant::now()) {
                        tracing::info!(%peer, error = %err, skipped, "a candidate's request ended");
                    }
                }
            }
        }));
        Self { shutdown, task }
    }

    /// Stops listening and waits until the address is free (from outside the runtime).
    pub(super) fn stop(self) {
        self.shutdown.send_replace(true);
        if tokio::runtime::Handle::try_current().is_err() {
            let _ = runtime().block_on(self.task);
        }
    }
}

/// One candidate: its hello and the grant, then its fetches and its lead.
async fn answer(
    shared: &Shared,
    store: &Store,
    incoming: Incoming,
) -> Result<(), ReplicationError> {
    let token = shared.options.token.as_deref().unwrap_or("").as_bytes();
    let Incoming {
        stream,
        peer,
        mut ticket,
        ..
    } = incoming;
    let (mut reader, writer) = stream.into_split();
    let mut writer = StallWriter::new(writer, STEP_TIMEOUT);
    if !handshake::peer_allowed(shared.options.token.is_some(), peer.ip()) {
        return refuse(
            &mut writer,
            RefuseCode::Auth,
            store.epoch(),
            "no token is configured, so only loopback peers may ask",
        )
        .await;
    }
    let nonce = handshake::nonce();
    let challenge = Message::Challenge {
        nonce: ByteBuf::from(nonce.clone()),
    };
    write_frame(&mut writer, &challenge).await?;
    // The caps hold here as at a primary's port: strangers holding sockets open displace
    // each other (each holds a file descriptor of this process), never a candidate.
    let hello = tokio::select! {
        hello = read_handshake_frame(&mut reader, STEP_TIMEOUT, "hello") => hello?,
        () = ticket.displaced() => {
            let reason = format!("displaced: more than {MAX_WAITING} connections were waiting to authenticate");
            return refuse(&mut writer, RefuseCode::Busy, store.epoch(), &reason).await;
        }
    };
    let Message::Hello {
        kind,
        name,
        proof,
        nonce: their_nonce,
        epoch,
        ..
    } = hello
    else {
        let reason = wrong_port(shared, None, false);
        return refuse(&mut writer, RefuseCode::Protocol, store.epoch(), &reason).await;
    };
    let proven = handshake::verify(token, Role::Peer, &nonce, &proof);
    if !matches!(kind, PeerKind::Candidate | PeerKind::Operator) {
        let reason = wrong_port(shared, Some(kind), proven);
        return refuse(&mut writer, RefuseCode::Protocol, store.epoch(), &reason).await;
    }
    if !proven {
        let reason = handshake::unproven(token, Role::Peer, &nonce, &proof);
        return refuse(&mut writer, RefuseCode::Auth, store.epoch(), reason).await;
    }
    let Some(_place) = ticket.authenticated() else {
        let reason = format!("{MAX_CANDIDATES} candidates are served already: retry later");
        return refuse(&mut writer, RefuseCode::Busy, store.epoch(), &reason).await;
    };
    if kind == PeerKind::Operator {
        if name != FOLLOW_REQUEST {
            // A switchover or a slot's drop, asked here rather than of the primary.
            let what = if name == DROP_SLOT_REQUEST {
                "a slot is dropped"
            } else {
                "a switchover is asked"
            };
            let reason = format!(
                "this is the member address of replica {:?}: {what} at the primary's own \
                 address",
                shared.options.name
            );
            return refuse(&mut writer, RefuseCode::Protocol, store.epoch(), &reason).await;
        }
        return follow_as_told(shared, &mut reader, &mut writer).await;
    }
    let granted = tokio::task::block_in_place(|| grant(shared, store, epoch));
    let (flushed_lsn, history) = match granted {
        Ok(log) => log,
        Err(seen) => {
            let reason = format!(
                "{:?} has seen epoch {seen}: it grants {name:?} no epoch up to that",
                shared.options.name
            );
            return refuse(&mut writer, RefuseCode::Fenced, seen, &reason).await;
        }
    };
    tracing::info!(replica = %shared.options.name, candidate = %name, epoch, flushed_lsn, "granted a promotion's epoch");
    // The link to the deposed primary ends now: a new one says the new epoch (which
    // deposes that primary if it still runs) and is refused, until a lead re-points it.
    shared.kick.notify_one();
    let grant = Message::Granted {
        proof: ByteBuf::from(handshake::prove(token, Role::Primary, &their_nonce)),
        flushed_lsn,
        history,
        counted: shared.consumer.counted_member(),
        view: recorded_view(shared),
        store_id: store.store_id().unwrap_or(0),
    };
    write_frame(&mut writer, &grant).await?;
    serve_candidate(shared, store, epoch, &mut reader, &mut writer).await
}

/// The membership this replica recorded from its primary's heartbeats, which a candidate
/// it grants must meet too.
fn recorded_view(shared: &Shared) -> View {
    let state = lock(&shared.state);
    View {
        quorum: state.primary_quorum,
        members: state.primary_members,
        names: state
            .primary_peers
            .iter()
            .map(|(name, _)| name.clone())
            .collect(),
        ids: state.primary_member_ids.clone(),
    }
}

/// Why a peer that is neither a candidate nor an operator is refused, for the person who
/// pointed it here (`replikv status` or `verify` given a replica's `listen` address): what
/// this port is, and where to point it instead. The replica's name and its primary's
/// address go only to a peer that proved the token.
fn wrong_port(shared: &Shared, kind: Option<PeerKind>, proven: bool) -> String {
    let asker = match kind {
        Some(PeerKind::Monitor) => "replikv status",
        Some(PeerKind::Verifier) => "replikv verify",
        Some(PeerKind::Replica) => "the replica",
        Some(PeerKind::Consumer) => "the consumer (a cache node, a change feed)",
        _ => "it",
    };
    let (port, primary) = if proven {
        (
            format!("the member port of replica '{}'", shared.options.name),
            format!(", {}", shared.primary()),
        )
    } else {
        (
            "a replica's member port".to_owned(),
            " (the primary the replica's status names)".to_owned(),
        )
    };
    format!(
        "this address is {port} (its listen address), which answers only promotions and \
         replikv follow: point {asker} at its primary's address instead{primary}"
    )
}

/// Raises the store's epoch to `epoch` if it [`grants`] it, with appends held off, and
/// returns its final log `(flushed_lsn, history)`; else the epoch it has seen.
fn grant(shared: &Shared, store: &Store, epoch: u64) -> Result<(u64, Vec<(u64, u64)>), u64> {
    let mut granted = lock(&shared.granted);
    let seen = store.epoch();
    if !grants(seen, epoch) {
        return Err(seen);
    }
    // `raise_epoch` rises exactly when `grants` says so; a failure grants nothing.
    match store.raise_epoch(epoch) {
        Ok(true) => {}
        Ok(false) => return Err(store.epoch()),
        Err(err) => {
            tracing::error!(error = %err, epoch, "cannot record a promotion's epoch");
            return Err(seen.max(epoch));
        }
    }
    *granted = epoch;
    // Entries held back count: they are durable here, and may hold an acknowledged write.
    Ok((store.synced_lsn(), store.epoch_history().pairs().to_vec()))
}

/// After the grant: sends the entries the candidate asks for, and follows it once it
/// says it leads.
async fn serve_candidate(
    shared: &Shared,
    store: &Store,
    epoch: u64,
    reader: &mut OwnedReadHalf,
    writer: &mut StallWriter<tokio::net::tcp::OwnedWriteHalf>,
) -> Result<(), ReplicationError> {
    loop {
        match read_frame_within(reader, STEP_TIMEOUT * 3, "a candidate's request").await? {
            Message::Fetch {
                after_lsn,
                up_to_lsn,
            } => {
                let mut position = LogPosition::after(after_lsn);
                while position.next_lsn() <= up_to_lsn {
                    let wanted = usize::try_from(up_to_lsn + 1 - position.next_lsn())
                        .unwrap_or(usize::MAX)
                        .min(FETCH_ENTRIES);
                    let reading = store.clone();
                    let (batch, moved) = tokio::task::spawn_blocking(move || {
                        let batch = reading.read_log_held(&mut position, wanted, FETCH_BYTES);
                        (batch, position)
                    })
                    .await
                    .map_err(|e| ReplicationError::Protocol(e.to_string()))?;
                    // Told to the candidate, which would otherwise see the link drop.
                    let name = &shared.options.name;
                    let batch = match batch {
                        Ok(batch) if !batch.is_empty() => batch,
                        Ok(_) => {
                            let reason =
                                format!("member {name:?}'s log ends before LSN {up_to_lsn}");
                            return refuse(writer, RefuseCode::Protocol, epoch, &reason).await;
                        }
                        Err(err) => {
                            let reason = format!("member {name:?} cannot read its log: {err}");
                            return refuse(writer, RefuseCode::Protocol, epoch, &reason).await;
                        }
                    };
                    position = moved;
                    // What this member's log holds is durable in it: the candidate adopts
                    // it all.
                    let durable = position.next_lsn() - 1;
                    send_entries(writer, batch, epoch, durable).await?;
                }
            }
            Message::Lead { address } => {
                tracing::info!(replica = %shared.options.name, primary = %address, "following the promoted replica");
                shared.repoint(&address);
                return Ok(());
            }
            other => {
                return Err(ReplicationError::Protocol(format!(
                    "unexpected message from a candidate (type {})",
                    other.type_byte()
                )))
            }
        }
    }
}

/// An operator's instruction (`replikv follow`): a lead to follow, echoed once taken.
async fn follow_as_told(
    shared: &Shared,
    reader: &mut OwnedReadHalf,
    writer: &mut StallWriter<tokio::net::tcp::OwnedWriteHalf>,
) -> Result<(), ReplicationError> {
    match read_frame_within(reader, STEP_TIMEOUT, "an instruction").await? {
        Message::Lead { address } => {
            tracing::info!(replica = %shared.options.name, primary = %address, "told to follow");
            shared.repoint(&address);
            write_frame(writer, &Message::Lead { address }).await
        }
        other => Err(ReplicationError::Protocol(format!(
            "unexpected instruction (type {})",
            other.type_byte()
        ))),
    }
}

async fn refuse(
    writer: &mut StallWriter<tokio::net::tcp::OwnedWriteHalf>,
    code: RefuseCode,
    epoch: u64,
    reason: &str,
) -> Result<(), ReplicationError> {
    let refused = Message::Refused {
        reason: reason.to_owned(),
        code,
        epoch,
        fork_lsn: None,
    };
    write_frame(writer, &refused).await?;
    Err(code.into_error(reason.to_owned(), epoch, None))
}
