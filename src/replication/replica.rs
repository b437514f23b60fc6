//! The replica side: follows a primary over TCP, appending its entries to a follower store,
//! and reconnects with backoff after any failure.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::handshake::{self, Role};
use super::protocol::{
    read_frame, read_frame_within, read_handshake_frame, write_frame, Message, PeerKind,
};
use super::status::LinkState;
use crate::error::{ReplicationError, Result};
use crate::net::stall::StallWriter;
use crate::net::{runtime, AbortOnDrop};
use crate::store::{Store, StoreOptions};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a replica follows its primary.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// The primary's address.
    pub primary: String,
    /// Shared token (must match the primary's).
    pub token: Option<String>,
    /// This replica's name: its slot on the primary.
    pub name: String,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Options of the replica's own store (`follower` is forced on).
    pub store: StoreOptions,
}

/// What a replica knows about its link and lag.
#[derive(Debug, Clone)]
pub struct ReplicaState {
    /// The link's state.
    pub state: LinkState,
    /// The primary's last LSN, as last heard.
    pub primary_last_lsn: u64,
    /// The primary's epoch, as last heard.
    pub primary_epoch: u64,
    /// The primary's clock at the last heartbeat, and when it arrived here.
    heartbeat: Option<(u64, Instant)>,
    /// Commit time (primary's clock) of the oldest entry missing here, as of the last
    /// heartbeat (0 when none was missing).
    pub oldest_missing_ms: u64,
    /// Why the link last failed.
    pub last_error: Option<String>,
    /// Successful handshakes so far.
    pub connections: u64,
    /// While a snapshot is received: rows received and rows in all.
    pub snapshot: Option<(u64, u64)>,
    /// Snapshots installed so far.
    pub snapshots: u64,
}

impl ReplicaState {
    /// The primary's clock now, estimated from its last heartbeat.
    #[must_use]
    pub fn primary_now_ms(&self) -> Option<u64> {
        self.heartbeat.map(|(at, received)| {
            at + u64::try_from(received.elapsed().as_millis()).unwrap_or(u64::MAX)
        })
    }
}

struct Shared {
    store: Store,
    options: ReplicaOptions,
    state: Mutex<ReplicaState>,
}

/// A running replica.
pub struct Replica {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Replica {
    /// Opens (or creates) the follower store at `path` and starts following.
    ///
    /// # Errors
    /// The store cannot be opened.
    pub fn start(path: impl AsRef<std::path::Path>, mut options: ReplicaOptions) -> Result<Self> {
        options.token = options.token.filter(|token| !token.is_empty());
        let store_options = StoreOptions {
            follower: true,
            ..options.store.clone()
        };
        let store = Store::open(path, store_options)?;
        let shared = Arc::new(Shared {
            store,
            options,
            state: Mutex::new(ReplicaState {
                state: LinkState::Connecting,
                primary_last_lsn: 0,
                primary_epoch: 0,
                heartbeat: None,
                oldest_missing_ms: 0,
                last_error: None,
                connections: 0,
                snapshot: None,
                snapshots: 0,
            }),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = runtime().spawn(follow(Arc::clone(&shared), shutdown_rx));
        Ok(Self {
            shared,
            shutdown,
            task: Mutex::new(Some(task)),
        })
    }

    /// The replica's store (read-only for users).
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Its name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.options.name
    }

    /// The primary's address.
    #[must_use]
    pub fn primary(&self) -> &str {
        &self.shared.options.primary
    }

    /// A copy of its link state.
    #[must_use]
    pub fn state(&self) -> ReplicaState {
        lock(&self.shared.state).clone()
    }

    /// Stops following and closes the store.
    ///
    /// # Errors
    /// Closing the store failed.
    pub fn close(&self) -> Result<()> {
        self.shutdown.send_replace(true);
        let task = lock(&self.task).take();
        // The task ends at its next await point; wait so no append races the close. Only a
        // thread outside the runtime can wait (the store's close drains appends anyway).
        if let (Some(task), Err(_)) = (task, tokio::runtime::Handle::try_current()) {
            let _ = runtime().block_on(task);
        }
        self.shared.store.close()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Whether retrying cannot help.
fn is_final(err: &ReplicationError) -> bool {
    matches!(
        err,
        ReplicationError::Auth(_)
            | ReplicationError::Diverged(_)
            | ReplicationError::NeedsSnapshot(_)
            | ReplicationError::Fenced(_)
            | ReplicationError::Version { .. }
    )
}

async fn follow(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if *shutdown.borrow() {
            return;
        }
        lock(&shared.state).state = LinkState::Connecting;
        let mut connected = false;
        let mut stop = shutdown.clone();
        // A close must not wait on a stalled primary: the session is dropped mid-await.
        let result = tokio::select! {
            result = session(&shared, &mut shutdown, &mut connected) => result,
            _ = stop.changed() => Ok(()),
        };
        {
            let mut state = lock(&shared.state);
            match result {
                Ok(()) => return,
                Err(err) if is_final(&err) => {
                    tracing::error!(primary = %shared.options.primary, error = %err, "replication stopped");
                    state.state = LinkState::Failed;
                    state.last_error = Some(err.to_string());
                    return;
                }
                Err(err) => {
                    tracing::info!(primary = %shared.options.primary, error = %err, "replication link lost; retrying");
                    state.state = LinkState::Disconnected;
                    state.last_error = Some(err.to_string());
                }
            }
        }
        if connected {
            backoff = Duration::from_millis(50);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(shared.options.max_backoff);
    }
}

/// Reassembles an entry sent in parts.
#[derive(Default)]
struct Parts {
    buffer: Vec<u8>,
}

impl Parts {
    /// Adds a part; returns the whole entry once its last part arrived.
    fn push(
        &mut self,
        total: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<Option<Vec<u8>>, ReplicationError> {
        let total = usize::try_from(total)
            .ok()
            .filter(|t| *t <= crate::codec::MAX_RECORD_BYTES);
        let Some(total) = total else {
            return Err(ReplicationError::Protocol(
                "an entry part claims an impossible size".into(),
            ));
        };
        if offset != self.buffer.len() as u64 || self.buffer.len() + data.len() > total {
            return Err(ReplicationError::Protocol(
                "entry parts out of order".into(),
            ));
        }
        self.buffer.extend_from_slice(data);
        Ok((self.buffer.len() == total).then(|| std::mem::take(&mut self.buffer)))
    }
}

/// The writing half of the link: a primary that stops reading fails the write.
type Writer = StallWriter<OwnedWriteHalf>;

/// Connects and runs the handshake; returns the stream halves and the resume point.
async fn connect(shared: &Arc<Shared>) -> Result<(OwnedReadHalf, Writer, u64), ReplicationError> {
    let options = &shared.options;
    let token = options.token.as_deref().unwrap_or("").as_bytes();
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(&options.primary))
        .await
        .map_err(|_| ReplicationError::NoResponse(format!("connecting to {}", options.primary)))?
        .map_err(|source| ReplicationError::Io {
            context: format!("connecting to {}", options.primary),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let mut writer = StallWriter::new(writer, IDLE_TIMEOUT);
    let nonce = match read_handshake_frame(&mut reader, HANDSHAKE_TIMEOUT, "challenge").await? {
        Message::Challenge { nonce } => nonce,
        Message::Refused { reason, code } => return Err(code.into_error(reason)),
        _ => return Err(ReplicationError::Protocol("expected a challenge".into())),
    };
    let store = shared.store.clone();
    let (flushed_lsn, flushed_id, lineage) =
        tokio::task::spawn_blocking(move || -> Result<(u64, (u64, u32), u64)> {
            let lsn = store.last_lsn();
            Ok((
                lsn,
                store.entry_id(lsn)?.unwrap_or((0, 0)),
                store.lineage()?,
            ))
        })
        .await
        .map_err(|e| ReplicationError::Protocol(e.to_string()))?
        .map_err(|e| ReplicationError::Protocol(format!("cannot read the local log: {e}")))?;
    let my_nonce = handshake::nonce();
    let hello = Message::Hello {
        kind: PeerKind::Replica,
        name: options.name.clone(),
        proof: ByteBuf::from(handshake::prove(token, Role::Peer, &nonce)),
        nonce: ByteBuf::from(my_nonce.clone()),
        epoch: shared.store.epoch(),
        flushed_lsn,
        flushed_id,
        lineage,
        fsync: options.store.fsync,
    };
    write_frame(&mut writer, &hello).await?;
    match read_handshake_frame(&mut reader, HANDSHAKE_TIMEOUT, "welcome").await? {
        Message::Welcome {
            proof,
            epoch,
            last_lsn,
            snapshot,
            lineage: primary_lineage,
        } => {
            if !handshake::verify(token, Role::Primary, &my_nonce, &proof) {
                return Err(ReplicationError::Auth(
                    "the primary could not prove the token".into(),
                ));
            }
            if flushed_lsn == 0 && lineage != primary_lineage {
                // An empty replica joins its primary's history.
                let store = shared.store.clone();
                tokio::task::spawn_blocking(move || store.adopt_lineage(primary_lineage))
                    .await
                    .map_err(|e| ReplicationError::Protocol(e.to_string()))?
                    .map_err(|e| {
                        ReplicationError::Protocol(format!("cannot record the lineage: {e}"))
                    })?;
            }
            {
                let mut state = lock(&shared.state);
                state.primary_epoch = epoch;
                state.primary_last_lsn = last_lsn;
                state.connections += 1;
                state.last_error = None;
                state.state = if snapshot {
                    LinkState::Snapshot
                } else if flushed_lsn >= last_lsn {
                    LinkState::Streaming
                } else {
                    LinkState::CatchingUp
                };
            }
            if snapshot {
                let lsn = receive_snapshot(shared, &mut reader).await?;
                return Ok((reader, writer, lsn));
            }
        }
        Message::Refused { reason, code } => return Err(code.into_error(reason)),
        _ => return Err(ReplicationError::Protocol("expected a welcome".into())),
    }
    Ok((reader, writer, flushed_lsn))
}

/// Acknowledges everything up to `lsn`: a follower applies each entry as it appends it, so
/// what is durable in its log is also what its readers see.
async fn ack(writer: &mut Writer, lsn: u64) -> Result<(), ReplicationError> {
    write_frame(
        writer,
        &Message::Ack {
            flushed_lsn: lsn,
            applied_lsn: lsn,
        },
    )
    .await
}

/// Receives a snapshot into a staging area and swaps it in; returns its LSN.
async fn receive_snapshot(
    shared: &Arc<Shared>,
    reader: &mut OwnedReadHalf,
) -> Result<u64, ReplicationError> {
    let failed =
        |e: crate::Error| ReplicationError::Protocol(format!("cannot install the snapshot: {e}"));
    let joined = |e: tokio::task::JoinError| ReplicationError::Protocol(e.to_string());
    let Message::SnapshotBegin {
        lsn,
        epoch,
        id,
        lineage,
        tables,
    } = read_frame_within(reader, HANDSHAKE_TIMEOUT, "a snapshot").await?
    else {
        return Err(ReplicationError::Protocol("expected a snapshot".into()));
    };
    let total: u64 = tables.iter().map(|(_, rows, _)| rows).sum();
    tracing::info!(lsn, rows = total, "receiving a snapshot");
    {
        let mut state = lock(&shared.state);
        state.snapshot = Some((0, total));
    }
    let store = shared.store.clone();
    let mut installer =
        tokio::task::spawn_blocking(move || store.begin_install(lsn, epoch, id, lineage))
            .await
            .map_err(joined)?
            .map_err(failed)?;
    loop {
        match read_frame_within(reader, IDLE_TIMEOUT, "snapshot rows").await? {
            Message::SnapshotRows { table, rows } => {
                let rows = rows
                    .into_iter()
                    .map(|(k, v)| (k.into_vec(), v.into_vec()))
                    .collect();
                installer = tokio::task::spawn_blocking(move || {
                    installer.add(&table, rows).map(|()| installer)
                })
                .await
                .map_err(joined)?
                .map_err(failed)?;
                lock(&shared.state).snapshot = Some((installer.rows(), total));
            }
            Message::SnapshotEnd => break,
            _ => {
                return Err(ReplicationError::Protocol(
                    "unexpected message in a snapshot".into(),
                ))
            }
        }
    }
    let expected = tables
        .into_iter()
        .map(|(name, rows, checksum)| (name, crate::store::TableSum { rows, checksum }))
        .collect();
    tokio::task::spawn_blocking(move || installer.finish(&expected))
        .await
        .map_err(joined)?
        .map_err(failed)?;
    let mut state = lock(&shared.state);
    state.snapshot = None;
    state.snapshots += 1;
    state.state = LinkState::CatchingUp;
    Ok(lsn)
}

async fn session(
    shared: &Arc<Shared>,
    shutdown: &mut watch::Receiver<bool>,
    connected: &mut bool,
) -> Result<(), ReplicationError> {
    let (reader, mut writer, flushed_lsn) = connect(shared).await?;
    *connected = true;
    tracing::info!(primary = %shared.options.primary, from_lsn = flushed_lsn, "following");
    // Frames are read ahead while a batch is applied, so that everything that arrived
    // meanwhile is applied next in one append (one fdatasync): a replica keeps up with a
    // primary that ships every commit on its own.
    let (frames, mut inbox) = mpsc::channel(READ_AHEAD_FRAMES);
    let _read_ahead = AbortOnDrop(tokio::spawn(read_frames(reader, frames)));
    let mut parts = Parts::default();
    loop {
        let first = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            frame = inbox.recv() => frame.unwrap_or_else(|| Err(ReplicationError::Protocol("the stream ended".into())))?,
        };
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0;
        let mut other = None;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Entries { payloads: batch } => {
                    bytes += batch.iter().map(|p| p.len()).sum::<usize>();
                    payloads.extend(batch.into_iter().map(ByteBuf::into_vec));
                }
                Message::EntryPart {
                    total,
                    offset,
                    data,
                } => {
                    bytes += data.len();
                    payloads.extend(parts.push(total, offset, &data)?);
                }
                message => {
                    other = Some(message);
                    break;
                }
            }
            if bytes < APPLY_BATCH_BYTES {
                if let Ok(frame) = inbox.try_recv() {
                    next = Some(frame?);
                }
            }
        }
        if !payloads.is_empty() {
            apply(shared, &mut writer, payloads).await?;
        }
        match other {
            None => {}
            Some(Message::Heartbeat {
                last_lsn,
                oldest_missing_ms,
                now_ms,
            }) => {
                {
                    let mut state = lock(&shared.state);
                    state.primary_last_lsn = state.primary_last_lsn.max(last_lsn);
                    state.heartbeat = Some((now_ms, Instant::now()));
                    state.oldest_missing_ms = oldest_missing_ms;
                    if shared.store.last_lsn() >= state.primary_last_lsn {
                        state.state = LinkState::Streaming;
                    }
                }
                ack(&mut writer, shared.store.last_lsn()).await?;
            }
            Some(Message::Refused { reason, code }) => return Err(code.into_error(reason)),
            Some(_) => {
                return Err(ReplicationError::Protocol(
                    "unexpected message from the primary".into(),
                ))
            }
        }
    }
}

/// How long a link may stay silent before the replica drops it and reconnects.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames read ahead of the applier, at most.
const READ_AHEAD_FRAMES: usize = 64;
/// Bytes of entries applied in one append, at most (more wait for the next).
const APPLY_BATCH_BYTES: usize = 32 << 20;

async fn read_frames(
    mut reader: OwnedReadHalf,
    frames: mpsc::Sender<Result<Message, ReplicationError>>,
) {
    loop {
        // The primary sends at least a heartbeat every interval: silence means a stalled
        // link, which is dropped so that the replica reconnects.
        let frame = tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut reader))
            .await
            .unwrap_or_else(|_| {
                Err(ReplicationError::NoResponse(format!(
                    "nothing from the primary for {IDLE_TIMEOUT:?}"
                )))
            });
        let failed = frame.is_err();
        if frames.send(frame).await.is_err() || failed {
            return;
        }
    }
}

/// Appends and applies a batch of entries, then acknowledges it.
async fn apply(
    shared: &Arc<Shared>,
    writer: &mut Writer,
    payloads: Vec<Vec<u8>>,
) -> Result<(), ReplicationError> {
    let store = shared.store.clone();
    let applied = tokio::task::spawn_blocking(move || store.append_replicated(&payloads))
        .await
        .map_err(|e| ReplicationError::Protocol(e.to_string()))?
        .map_err(|e| ReplicationError::Protocol(format!("cannot apply replicated entries: {e}")))?;
    {
        let mut state = lock(&shared.state);
        state.primary_last_lsn = state.primary_last_lsn.max(applied);
        state.state = if applied >= state.primary_last_lsn {
            LinkState::Streaming
        } else {
            LinkState::CatchingUp
        };
    }
    ack(writer, applied).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_reassemble_in_order_and_refuse_anything_else() {
        let mut parts = Parts::default();
        assert_eq!(parts.push(6, 0, b"abc").unwrap(), None);
        assert_eq!(parts.push(6, 3, b"def").unwrap(), Some(b"abcdef".to_vec()));
        let mut parts = Parts::default();
        assert!(parts.push(6, 3, b"def").is_err(), "a gap");
        let mut parts = Parts::default();
        assert!(parts.push(4, 0, b"abcdef").is_err(), "more than the total");
        assert!(
            Parts::default().push(u64::MAX, 0, b"a").is_err(),
            "an impossible size"
        );
    }
}
