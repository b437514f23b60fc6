//! Admitting a connection: the token challenge within a deadline and the connection caps,
//! then the resume decision (stream from the log, seed by a snapshot, or refuse).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_bytes::ByteBuf;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::OwnedSemaphorePermit;

use super::drop_slot::answer_drop;
use super::snapshot::{send_header, send_snapshot};
use super::stream::{read_acks, stream_to};
use super::verify::VERIFIER_TIMEOUT;
use super::{Claim, Shared, Writer, MAX_AUTHENTICATED, MAX_UNAUTHENTICATED};
use crate::error::{ReplicationError, Result};
use crate::net::admission::Ticket;
use crate::net::heard::{HeardReader, LastHeard};
use crate::net::server::Incoming;
use crate::net::stall::StallWriter;
use crate::net::AbortOnDrop;
use crate::replication::handshake::{self, opening, Denied, LogView, Opening, Role};
use crate::replication::machine::LinkId;
use crate::replication::protocol::{
    read_handshake_frame, write_frame, Message, PeerKind, RefuseCode, DROP_SLOT_REQUEST,
    FOLLOW_REQUEST,
};
use crate::replication::slots::SlotPin;
use crate::store::{fork_lsn, EpochHistory};

/// How long a new connection has to prove the token.
const AUTH_DEADLINE: Duration = Duration::from_secs(5);

/// A failure while admitting a peer refuses it as a protocol error.
impl From<ReplicationError> for Denied {
    fn from(err: ReplicationError) -> Self {
        Self::new(RefuseCode::Protocol, err.to_string())
    }
}

/// Why a connection ended in its handshake.
enum Unadmitted {
    /// It was refused: counted, and told why.
    Denied(Denied),
    /// It closed before it said anything (a port probe, a health check): nothing was
    /// asked, so nothing is refused or counted.
    Silent,
}

impl From<Denied> for Unadmitted {
    fn from(denied: Denied) -> Self {
        Self::Denied(denied)
    }
}

/// What a peer said in its hello, once its proof verified.
struct Hello {
    kind: PeerKind,
    name: String,
    nonce: ByteBuf,
    epoch: u64,
    flushed_lsn: u64,
    flushed_id: (u64, u32),
    lineage: u64,
    durable: bool,
    /// Its epoch history (empty from an older peer).
    history: Vec<(u64, u64)>,
    /// Where it answers other members, if it listens.
    listen: Option<String>,
    /// Its store directory's id (0: it has none or does not say).
    store_id: u64,
    /// A replica that holds back: its entries from its confirmed one on.
    held: Option<Vec<(u64, (u64, u32))>>,
}

/// Where streaming to an accepted replica or consumer starts.
enum Start<'a> {
    /// From the log, after the LSN the peer holds.
    Log,
    /// After a snapshot; the pin keeps the log it will stream from until it acks what was
    /// committed while the snapshot was sent, or until the connection ends, however it ends.
    Snapshot(SlotPin<'a>),
    /// After a snapshot's header alone, at the visible LSN (a consumer: it has no slot).
    Header,
}

/// What a successful handshake leads to.
enum Accepted<'a> {
    /// A replica (or consumer) to stream to.
    Stream {
        kind: PeerKind,
        /// Whether the peer fsyncs what it acks.
        durable: bool,
        name: String,
        /// Its store directory's id.
        store_id: u64,
        /// The name held for it until its connection is registered.
        claim: Claim<'a>,
        from_lsn: u64,
        /// What its readers see of what it holds.
        shown_lsn: u64,
        start: Start<'a>,
        /// It holds back entries not durable here: it may be shipped them.
        holds_back: bool,
    },
    /// A monitor or a verifier that got its report.
    Monitor,
}

/// Serves one connection: the handshake, then a snapshot if needed and the stream.
pub(super) async fn serve(shared: Arc<Shared>, incoming: Incoming) {
    let Incoming {
        stream,
        peer,
        ticket,
        mut shutdown,
    } = incoming;
    let (mut reader, writer) = stream.into_split();
    let mut writer = StallWriter::new(writer, shared.options.stall_timeout());
    let (accepted, _place) = match handshake(&shared, &mut reader, &mut writer, &peer, ticket).await
    {
        Ok(accepted) => accepted,
        Err(Unadmitted::Silent) => {
            tracing::debug!(%peer, "a connection closed before it said anything");
            return;
        }
        Err(Unadmitted::Denied(Denied {
            code,
            reason,
            fork_lsn,
        })) => {
            shared.reject(&peer, &reason);
            let refused = Message::Refused {
                reason,
                code,
                epoch: shared.store.epoch(),
                fork_lsn,
            };
            // Best effort: a peer that is gone or stalled does not get it.
            let _ = write_frame(&mut writer, &refused).await;
            return;
        }
    };
    let Accepted::Stream {
        kind,
        durable,
        name,
        store_id,
        claim,
        from_lsn,
        shown_lsn,
        start,
        holds_back,
    } = accepted
    else {
        return;
    };
    let holds_back = holds_back && shared.options.ship_ahead;
    let resumed = (from_lsn, shown_lsn, holds_back);
    let (id, mut stop) = shared.connect(kind, durable, &name, store_id, &peer, resumed);
    if holds_back {
        shared.hold_back_link();
    }
    drop(claim);
    let result = tokio::select! {
        result = snapshot_then_stream(&shared, &id, &start, reader, writer) => result,
        _ = stop.changed() => Ok(()),
        _ = shutdown.changed() => Ok(()),
    };
    if let Err(err) = &result {
        tracing::info!(replica = %name, error = %err, "replica connection ended");
    }
    shared.machine(|m| m.disconnect(&id));
    if holds_back {
        shared.release_link();
    }
    // Unpins the slot if the replica never acked its snapshot.
    drop(start);
}

async fn snapshot_then_stream(
    shared: &Arc<Shared>,
    id: &LinkId,
    start: &Start<'_>,
    reader: OwnedReadHalf,
    mut writer: Writer,
) -> Result<(), ReplicationError> {
    // Acks are read from here on, through a snapshot too: a replica receiving and
    // installing one acks nothing until it is installed, and says meanwhile that it is
    // alive, which a write waiting for it to read on then waits for.
    let heard = LastHeard::now();
    writer.hear_from(Arc::clone(&heard));
    let peer = reader.peer_addr().ok();
    let reader = HeardReader::new(reader, heard);
    let acks = AbortOnDrop(tokio::spawn(read_acks(
        Arc::clone(shared),
        id.clone(),
        peer,
        reader,
    )));
    match start {
        Start::Log => {}
        Start::Snapshot(pin) => {
            send_snapshot(shared, id, pin, &mut writer).await?;
        }
        Start::Header => send_header(shared, id, &mut writer).await?,
    }
    stream_to(shared, id, acks, writer).await
}

/// The handshake: the peer proves the token within [`AUTH_DEADLINE`] (or is displaced by
/// newer strangers first), takes an authenticated place (held until the connection ends),
/// and is welcomed or refused.
async fn handshake<'a>(
    shared: &'a Arc<Shared>,
    reader: &mut OwnedReadHalf,
    writer: &mut Writer,
    peer: &SocketAddr,
    mut ticket: Ticket,
) -> Result<(Accepted<'a>, OwnedSemaphorePermit), Unadmitted> {
    if !handshake::peer_allowed(shared.options.token.is_some(), peer.ip()) {
        return Err(Denied::new(
            RefuseCode::Auth,
            "no token is configured, so only loopback peers may connect",
        )
        .into());
    }
    let hello = tokio::select! {
        hello = tokio::time::timeout(AUTH_DEADLINE, authenticate(shared, reader, writer)) => {
            hello.map_err(|_| Denied::new(RefuseCode::Protocol, format!("no valid hello within {AUTH_DEADLINE:?}")))??
        }
        () = ticket.displaced() => return Err(Denied::new(
            RefuseCode::Busy,
            format!("displaced: more than {MAX_UNAUTHENTICATED} connections were waiting to authenticate"),
        ).into()),
    };
    let Some(permit) = ticket.authenticated() else {
        return Err(Denied::new(
            RefuseCode::Busy,
            format!("{MAX_AUTHENTICATED} peers are connected already: retry later"),
        )
        .into());
    };
    Ok((welcome(shared, reader, writer, peer, hello).await?, permit))
}

/// The unauthenticated part: a challenge, and a hello whose proof verifies.
async fn authenticate(
    shared: &Shared,
    reader: &mut OwnedReadHalf,
    writer: &mut Writer,
) -> Result<Hello, Unadmitted> {
    let nonce = handshake::nonce();
    // A peer gone before the challenge is written, or that closes without a byte, was
    // only looking whether the port answers. One that closes without reading the
    // challenge resets the connection rather than ending it: that too said nothing.
    let challenge = Message::Challenge {
        nonce: ByteBuf::from(nonce.clone()),
    };
    if write_frame(writer, &challenge).await.is_err()
        || matches!(reader.peek(&mut [0u8]).await, Ok(0) | Err(_))
    {
        return Err(Unadmitted::Silent);
    }
    let Message::Hello {
        kind,
        name,
        proof,
        nonce: peer_nonce,
        epoch,
        flushed_lsn,
        flushed_id,
        lineage,
        fsync,
        history,
        listen,
        store_id,
        held,
    } = read_handshake_frame(reader, AUTH_DEADLINE, "hello")
        .await
        .map_err(Denied::from)?
    else {
        return Err(Denied::new(RefuseCode::Protocol, "expected a hello").into());
    };
    if !handshake::verify(shared.token(), Role::Peer, &nonce, &proof) {
        let reason = handshake::unproven(shared.token(), Role::Peer, &nonce, &proof);
        return Err(Denied::new(RefuseCode::Auth, reason).into());
    }
    Ok(Hello {
        kind,
        name,
        nonce: peer_nonce,
        epoch,
        flushed_lsn,
        flushed_id,
        lineage,
        durable: fsync,
        history,
        listen,
        store_id,
        held: held.filter(|_| kind == PeerKind::Replica),
    })
}

/// A peer with one question (a monitor, a verifier, an operator): its answer, and the
/// connection ends. A candidate has none to ask a primary.
async fn answer_once<'a>(
    shared: &Arc<Shared>,
    (reader, writer): (&mut OwnedReadHalf, &mut Writer),
    peer: &SocketAddr,
    kind: PeerKind,
    name: String,
) -> Result<Accepted<'a>, Denied> {
    let answer = match kind {
        PeerKind::Monitor => shared.report(),
        PeerKind::Verifier => {
            let report = shared
                .verify(VERIFIER_TIMEOUT)
                .await
                .map_err(|e| Denied::new(RefuseCode::Protocol, e.to_string()))?;
            Message::VerifyReport { report }
        }
        PeerKind::Operator if name == FOLLOW_REQUEST => {
            return Err(Denied::new(
                RefuseCode::Protocol,
                "this is a primary, which follows nobody: `replikv follow` goes to a \
                 replica's member address (its listen=) or to a cache node",
            ))
        }
        PeerKind::Operator if name == DROP_SLOT_REQUEST => answer_drop(shared, reader).await?,
        PeerKind::Operator => {
            super::switchover::answer_request(shared, writer, peer, name).await?;
            return Ok(Accepted::Monitor);
        }
        PeerKind::Candidate | PeerKind::Replica | PeerKind::Consumer => {
            return Err(Denied::new(
                RefuseCode::Protocol,
                "this is a primary: a promotion asks the replicas' member addresses",
            ))
        }
    };
    write_frame(writer, &answer).await?;
    Ok(Accepted::Monitor)
}

/// Checks a streaming peer's name, and the address it listens at (said to every member in
/// each heartbeat, and dialled by promotions: a string that is not an address would be
/// repeated, unbounded, to all of them).
fn check_names(name: &str, listen: Option<&str>) -> Result<(), Denied> {
    if crate::store::validate_table_name(name).is_err() {
        return Err(Denied::new(
            RefuseCode::Protocol,
            format!("invalid replica name {name:?}"),
        ));
    }
    if let Some(listen) = listen.filter(|a| a.parse::<SocketAddr>().is_err()) {
        let said: String = listen.chars().take(64).collect();
        return Err(Denied::new(
            RefuseCode::Protocol,
            format!("{name} listens at {said:?}, which is not an IP address and port"),
        ));
    }
    Ok(())
}

/// The authenticated part: a monitor gets its report; a replica or consumer gets the
/// resume decision (its slot created, or pinned for a snapshot) and a welcome.
async fn welcome<'a>(
    shared: &'a Arc<Shared>,
    reader: &mut OwnedReadHalf,
    writer: &mut Writer,
    peer: &SocketAddr,
    hello: Hello,
) -> Result<Accepted<'a>, Denied> {
    let Hello {
        kind,
        name,
        nonce: peer_nonce,
        epoch,
        flushed_lsn,
        flushed_id,
        lineage,
        durable,
        history,
        listen,
        store_id,
        held,
    } = hello;
    let primary_epoch = shared.store.epoch();
    if epoch > primary_epoch {
        // Another store was promoted (any peer that proves the token may say so, a
        // monitor sent by the promotion too): this one is deposed and takes no writes.
        shared.fence(epoch).await;
        return Err(Denied::new(
            RefuseCode::Fenced,
            format!("{peer} has seen epoch {epoch}, newer than this primary's {primary_epoch}"),
        ));
    }
    if !matches!(kind, PeerKind::Replica | PeerKind::Consumer) {
        return answer_once(shared, (reader, writer), peer, kind, name).await;
    }
    check_names(&name, listen.as_deref())?;
    // Before the slot is touched: another replica's slot must not move to this one's LSN.
    let claim = match shared.claim(&kind.link_name(&name), store_id) {
        Ok(claim) => claim,
        Err(address) => return Err(name_in_use(kind, &name, address.as_deref())),
    };
    let (matched, resume_lsn, resume_id) =
        resume_point(shared, held.as_deref(), (flushed_lsn, flushed_id), &history).await?;
    // A replica that holds back was matched against what is written here, durable or not
    // (it may hold entries whose fdatasync runs now): it resumes against the same log.
    let view = log_view(shared, resume_lsn, history, held.is_some()).await?;
    let internal = |e: &dyn std::fmt::Display| Denied::new(RefuseCode::Protocol, e.to_string());
    let primary_lineage = shared.store.lineage().map_err(|e| internal(&e))?;
    if flushed_lsn > 0 && lineage != primary_lineage {
        // Another lineage shares no entry with this store: everything it holds is its own.
        return Err(Denied {
            code: RefuseCode::Diverged,
            reason: format!(
                "{peer} holds another store's history (a different lineage): all of its \
                 {flushed_lsn} entries are its own"
            ),
            fork_lsn: Some(1),
        });
    }
    // A fork is never papered over by a snapshot (it needs an explicit resync).
    let start = match opening(kind, resume_lsn, resume_id, view)? {
        // A replica's slot is pinned from here, before the snapshot is taken: retention
        // cannot then cut the entries that will follow it.
        Opening::Snapshot => Start::Snapshot(shared.slots.pin(&name, view.last_lsn, durable)),
        Opening::Header => Start::Header,
        Opening::Resume => {
            if kind == PeerKind::Replica {
                shared.slots.ensure(&name, resume_lsn, durable);
            }
            Start::Log
        }
    };
    let snapshot = !matches!(start, Start::Log);
    if kind == PeerKind::Replica {
        shared.slots.held_by(&name, store_id);
        if shared.machine(|m| m.would_join(&name, store_id, kind, durable)) {
            // Durable with the slot, before the welcome: a restart counts it only once
            // every member knows it joined, as this run does.
            shared.slots.mark_joining(&name);
        }
        shared.members.learn(&name, durable, listen);
        // The slot is on disk before the replica is welcomed (an fsync: off the runtime).
        let persisting = Arc::clone(shared);
        tokio::task::spawn_blocking(move || persisting.slots.persist())
            .await
            .map_err(|e| internal(&e))?
            .map_err(|e| internal(&e))?;
    }
    let welcome = Message::Welcome {
        proof: ByteBuf::from(handshake::prove(shared.token(), Role::Primary, &peer_nonce)),
        epoch: shared.store.own_epoch(),
        last_lsn: view.last_lsn,
        snapshot,
        lineage: primary_lineage,
        matched_lsn: matched,
    };
    write_frame(writer, &welcome).await?;
    tracing::info!(%peer, replica = %name, ?kind, from_lsn = resume_lsn, "replica connected");
    let name = kind.link_name(&name);
    Ok(Accepted::Stream {
        kind,
        durable,
        name,
        store_id,
        claim,
        from_lsn: resume_lsn,
        // A replica that holds back shows its readers what its primary confirmed to it:
        // its hello names its entries from there.
        shown_lsn: held
            .as_deref()
            .map_or(resume_lsn, |held| handshake::shown_of(held).min(resume_lsn)),
        start,
        holds_back: held.is_some(),
    })
}

/// What the log holds for a peer at `flushed_lsn` with `history` (as written, durable or
/// not, if `written`: see [`view_at`]). A deposed primary streams to nobody (its entries
/// from then on are not the new primary's: a replica that took them would diverge).
async fn log_view(
    shared: &Arc<Shared>,
    flushed_lsn: u64,
    history: Vec<(u64, u64)>,
    written: bool,
) -> Result<LogView, Denied> {
    let store = shared.store.clone();
    if let Err(deposed) = store.check_epoch() {
        return Err(Denied::new(RefuseCode::Fenced, deposed.to_string()));
    }
    let peer_history = peer_history(&history)?;
    let unreadable_below = shared.unreadable_below.load(Ordering::Acquire);
    tokio::task::spawn_blocking(move || {
        view_at(&store, flushed_lsn, peer_history.as_ref(), written)
            .map(|view| view.unreadable_below(unreadable_below))
    })
    .await
    .map_err(|e| internal(&e))?
    .map_err(|e| internal(&e))
}

fn internal(e: &dyn std::fmt::Display) -> Denied {
    Denied::new(RefuseCode::Protocol, e.to_string())
}

/// A peer's epoch history as it said it (`None` from an older peer, which sends none).
fn peer_history(history: &[(u64, u64)]) -> Result<Option<EpochHistory>, Denied> {
    if history.is_empty() {
        return Ok(None);
    }
    EpochHistory::new(history.to_vec())
        .map(Some)
        .map_err(|reason| internal(&format!("invalid epoch history: {reason}")))
}

/// What the log holds at `lsn`, for a peer whose epochs went through `theirs`.
///
/// For a replica that holds back (`written`), the log as written, durable or not: entries
/// it was shipped ahead that are still being synced here are not cut (it may have
/// acknowledged them, and a quorum counted that).
fn view_at(
    store: &crate::store::Store,
    lsn: u64,
    theirs: Option<&EpochHistory>,
    written: bool,
) -> Result<LogView> {
    let (last_lsn, id_at_resume) = if written {
        (store.written_lsn(), store.written_entry_id(lsn))
    } else {
        (store.last_lsn(), store.entry_id(lsn))
    };
    Ok(LogView {
        oldest_lsn: store.oldest_lsn()?,
        last_lsn,
        id_at_resume: id_at_resume.ok().flatten(),
        fork_lsn: theirs.and_then(|theirs| fork_lsn(&store.epoch_history(), last_lsn, theirs, lsn)),
    })
}

/// Where a peer resumes, `(matched, lsn, id)`: after what it holds (`flushed`), or for a
/// replica that holds back, after the last of its entries this log holds the same
/// (`matched`): it cuts those after it (shipped before they were durable here, and lost).
async fn resume_point(
    shared: &Arc<Shared>,
    held: Option<&[(u64, (u64, u32))]>,
    flushed: (u64, (u64, u32)),
    history: &[(u64, u64)],
) -> Result<(Option<u64>, u64, (u64, u32)), Denied> {
    let Some(held) = held else {
        return Ok((None, flushed.0, flushed.1));
    };
    let matched = held_match(shared, held.to_vec(), history).await?;
    let resumed = matched
        .filter(|lsn| *lsn < flushed.0)
        .and_then(|lsn| held.iter().find(|(l, _)| *l == lsn).copied())
        .unwrap_or(flushed);
    Ok((matched, resumed.0, resumed.1))
}

/// Where the log of a replica that holds back (`held`: its entries from its confirmed
/// one on) matches this one up to, or `None` if not even its confirmed entry does (its
/// hello's own position then decides: a snapshot or a refusal).
async fn held_match(
    shared: &Arc<Shared>,
    held: Vec<(u64, (u64, u32))>,
    history: &[(u64, u64)],
) -> Result<Option<u64>, Denied> {
    let store = shared.store.clone();
    let theirs = peer_history(history)?;
    let unreadable_below = shared.unreadable_below.load(Ordering::Acquire);
    tokio::task::spawn_blocking(move || {
        let view = |lsn| {
            view_at(&store, lsn, theirs.as_ref(), true).map_or(
                LogView {
                    oldest_lsn: u64::MAX,
                    last_lsn: 0,
                    id_at_resume: None,
                    fork_lsn: None,
                },
                |view| view.unreadable_below(unreadable_below),
            )
        };
        handshake::resume_holding(&held, view).ok()
    })
    .await
    .map_err(|e| internal(&e))
}

/// The refusal of a hello under a name another store's peer is connected under (from
/// `address`, if known) or being admitted under.
fn name_in_use(kind: PeerKind, name: &str, address: Option<&str>) -> Denied {
    let noun = if kind == PeerKind::Replica {
        "replica"
    } else {
        "consumer"
    };
    let state = address.map_or_else(
        || "is being admitted".to_owned(),
        |address| format!("is connected, from {address}"),
    );
    Denied::new(
        RefuseCode::NameInUse,
        format!(
            "another {noun} named '{name}' {state}: give each a name of its own (name=..., \
             or --name on the command line); this one is let in once that one disconnects"
        ),
    )
}
