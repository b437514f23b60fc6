//! The primary side: a TCP server that streams the store's log to replicas.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::handshake::{self, LogView, Role};
use super::protocol::{
    read_frame, read_handshake_frame, write_frame, Message, PeerKind, RefuseCode, MAX_FRAME_BYTES,
};
use super::slots::{Slot, Slots};
use super::status::{lag_seconds, now_ms, LinkState, ReplicaLink};
use crate::error::{ReplicationError, Result};
use crate::log::{LogPosition, RawEntry};
use crate::net::runtime;
use crate::store::Store;

/// The longest heartbeat interval (replicas drop a link silent for 5 s).
const MAX_HEARTBEAT: Duration = Duration::from_secs(2);
/// A backlog this small is read on the async task itself (see `stream_to`).
const INLINE_READ_ENTRIES: u64 = 64;
/// Connections served at once, at most (more are refused and counted).
const MAX_CONNECTIONS: usize = 256;
/// How long a peer has to answer during the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Entries read from the log per batch at most.
const BATCH_ENTRIES: usize = 4096;
/// Rows read from a snapshot per batch, and bytes of rows per frame (a single row larger
/// than a frame cannot exist: values are capped well below it).
const SNAPSHOT_ROWS: usize = 4096;
const SNAPSHOT_FRAME_BYTES: usize = 1 << 20;
/// Room left in a frame for the message around the payloads.
const FRAME_SLACK: usize = 1024;

/// How a primary serves its replicas.
#[derive(Debug, Clone)]
pub struct PrimaryOptions {
    /// Address to listen on (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Shared token; without one only loopback peers may connect.
    pub token: Option<String>,
    /// Entries are shipped in batches at most this often (zero ships eagerly).
    pub ship_interval: Duration,
    /// Bytes of entries per batch at most (one entry larger than this still goes alone).
    pub max_batch_bytes: usize,
    /// How often an idle connection carries a heartbeat.
    pub heartbeat_interval: Duration,
    /// Keep at most this many bytes of log, even if a slot still needs them (that replica
    /// will then need a snapshot). `None`: no cap.
    pub retain_bytes: Option<u64>,
    /// Drop log segments whose entries are all older than this, even if a slot still needs
    /// them. `None`: no cap.
    pub retain_seconds: Option<Duration>,
    /// How often slots are persisted and retention runs.
    pub retention_interval: Duration,
}

impl Default for PrimaryOptions {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".to_owned(),
            token: None,
            ship_interval: Duration::from_millis(50),
            max_batch_bytes: 4 << 20,
            heartbeat_interval: Duration::from_millis(500),
            retain_bytes: None,
            retain_seconds: None,
            retention_interval: Duration::from_secs(1),
        }
    }
}

struct Link {
    kind: PeerKind,
    status: ReplicaLink,
    generation: u64,
    /// Shipped but unacknowledged entries: `(lsn, commit ms, bytes)`.
    unacked: VecDeque<(u64, u64, u64)>,
    stop: watch::Sender<bool>,
}

struct Shared {
    store: Store,
    slots: Slots,
    options: PrimaryOptions,
    links: Mutex<BTreeMap<String, Link>>,
    generations: AtomicU64,
    rejected: AtomicU64,
    last_rejection: Mutex<Option<String>>,
    visible: watch::Sender<u64>,
}

/// A running primary. Dropping it (or [`Primary::close`]) stops the server.
pub struct Primary {
    shared: Arc<Shared>,
    address: SocketAddr,
    shutdown: watch::Sender<bool>,
    notifier: Mutex<Option<std::thread::JoinHandle<()>>>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What [`Primary::status`] reports.
#[derive(Debug, Clone)]
pub struct PrimaryStatus {
    /// The primary's last LSN.
    pub last_lsn: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Connections refused since start.
    pub rejected: u64,
    /// Why the last one was refused.
    pub last_rejection: Option<String>,
    /// Every replica seen since start.
    pub replicas: Vec<ReplicaLink>,
}

fn io_err(context: &str) -> impl FnOnce(std::io::Error) -> ReplicationError + '_ {
    move |source| ReplicationError::Io {
        context: context.to_owned(),
        source,
    }
}

impl Primary {
    /// Starts serving `store`'s log.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn start(store: Store, mut options: PrimaryOptions) -> Result<Self> {
        // An empty token is no token: it must not open a primary to every peer.
        options.token = options.token.filter(|token| !token.is_empty());
        // Replicas drop a link that stays silent for 5 s: heartbeat well within that.
        options.heartbeat_interval = options.heartbeat_interval.min(MAX_HEARTBEAT);
        let listener = runtime()
            .block_on(TcpListener::bind(&options.listen))
            .map_err(io_err(&format!("cannot listen on {}", options.listen)))?;
        let address = listener
            .local_addr()
            .map_err(io_err("reading the bound address"))?;
        let slots = Slots::load(store.path())?;
        let (visible, _) = watch::channel(store.last_lsn());
        let shared = Arc::new(Shared {
            slots,
            store,
            options,
            links: Mutex::new(BTreeMap::new()),
            generations: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            last_rejection: Mutex::new(None),
            visible,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let server = runtime().spawn(accept_loop(
            Arc::clone(&shared),
            listener,
            shutdown_rx.clone(),
        ));
        runtime().spawn(retention_loop(Arc::clone(&shared), shutdown_rx.clone()));
        let notifier = {
            let shared = Arc::clone(&shared);
            let shutdown_rx = shutdown_rx.clone();
            std::thread::Builder::new()
                .name("replikv-notify".into())
                .spawn(move || notify_loop(&shared, &shutdown_rx))
                .map_err(io_err("starting the notifier thread"))?
        };
        tracing::info!(%address, "primary listening");
        Ok(Self {
            shared,
            address,
            shutdown,
            notifier: Mutex::new(Some(notifier)),
            server: Mutex::new(Some(server)),
        })
    }

    /// The address it listens on (with the real port when 0 was asked for).
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The store it serves.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Per-replica state and lag.
    #[must_use]
    pub fn status(&self) -> PrimaryStatus {
        self.shared.status()
    }

    /// Blocks until at least `replicas` replicas acknowledged `lsn`, or `timeout` passes.
    /// Returns how many have (like Redis `WAIT`).
    #[must_use]
    pub fn wait_for(&self, lsn: u64, replicas: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let acked = lock(&self.shared.links)
                .values()
                .filter(|l| l.status.acked_lsn >= lsn)
                .count();
            if acked >= replicas || Instant::now() >= deadline {
                return acked;
            }
            std::thread::sleep(
                Duration::from_millis(2).min(deadline.saturating_duration_since(Instant::now())),
            );
        }
    }

    /// The durable slots: one per replica name, with the LSN it acknowledged.
    #[must_use]
    pub fn slots(&self) -> Vec<Slot> {
        self.shared.slots.list()
    }

    /// Drops a slot, so that the log is no longer kept for that replica. Returns whether
    /// it existed. A replica that connects again gets a new slot.
    ///
    /// # Errors
    /// Persisting the change failed.
    pub fn drop_slot(&self, name: &str) -> Result<bool> {
        self.shared.slots.drop_slot(name)
    }

    /// Persists the slots and drops the log segments no slot needs (within the caps), now
    /// rather than at the next retention tick. Returns how many segments were dropped.
    ///
    /// # Errors
    /// An I/O failure.
    pub fn retain(&self) -> Result<usize> {
        self.shared.retain()
    }

    /// Stops the server and every connection; the store stays open.
    pub fn close(&self) {
        if self.shutdown.send_replace(true) {
            return;
        }
        for link in lock(&self.shared.links).values() {
            link.stop.send_replace(true);
        }
        if let Some(handle) = lock(&self.notifier).take() {
            let _ = handle.join();
        }
        let server = lock(&self.server).take();
        // Waiting needs a thread outside the runtime (a Python caller is); inside it the
        // server still stops, a moment later.
        if let (Some(server), Err(_)) = (server, tokio::runtime::Handle::try_current()) {
            let _ = runtime()
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), server).await });
        }
        if let Err(err) = self.shared.slots.persist() {
            tracing::warn!(error = %err, "could not persist the replication slots");
        }
    }
}

impl Drop for Primary {
    fn drop(&mut self) {
        self.close();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Turns the store's visibility (a condition variable) into a watch channel for the tasks.
///
/// Wakes only while some connection listens, and at most once per `ship_interval`: nothing
/// ships more often, and a wake per commit would cost the writers a context switch each.
fn notify_loop(shared: &Shared, shutdown: &watch::Receiver<bool>) {
    let idle = Duration::from_millis(50);
    let mut last = shared.store.last_lsn();
    while !*shutdown.borrow() && !shared.store.is_closed() {
        if shared.visible.receiver_count() == 0 {
            std::thread::sleep(idle);
            continue;
        }
        let visible = shared.store.wait_for_lsn(last + 1, idle);
        if visible != last {
            last = visible;
            shared.visible.send_replace(visible);
            std::thread::sleep(shared.options.ship_interval);
        }
    }
}

async fn retention_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(shared.options.retention_interval);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {
                let shared = Arc::clone(&shared);
                match tokio::task::spawn_blocking(move || shared.retain()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => tracing::warn!(error = %err, "log retention failed"),
                    Err(err) => tracing::warn!(error = %err, "log retention panicked"),
                }
            }
        }
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    // Every connection is a task of this set: the loop aborts them all before it ends, so
    // that `close()` returns only when nothing of the server runs or holds the port.
    let mut connections = tokio::task::JoinSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                connections.shutdown().await;
                return;
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if !handshake::peer_allowed(shared.options.token.is_some(), peer.ip()) {
                    shared.reject(&peer, "no token is configured, so only loopback peers may connect");
                    continue;
                }
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    shared.reject(&peer, "too many connections");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let serving = serve(Arc::clone(&shared), stream, peer, shutdown.clone());
                connections.spawn(async move {
                    serving.await;
                    drop(permit);
                });
            }
        }
    }
}

impl Shared {
    /// The status report a monitor gets.
    fn report(&self) -> Message {
        let status = self.status();
        Message::Status {
            last_lsn: status.last_lsn,
            epoch: status.epoch,
            rejected: status.rejected,
            replicas: status.replicas,
        }
    }

    /// Persists the slots, then drops whole log segments before the oldest slot's position
    /// (nothing without slots), moved forward as far as the byte and age caps demand.
    fn retain(&self) -> Result<usize> {
        self.slots.persist()?;
        let segments = self.store.log_segments()?;
        if segments.len() < 2 {
            return Ok(0);
        }
        // Without slots nothing is dropped for want of readers: the log is also the change
        // history of `changes()`; only the caps bound it then.
        // The entry at a slot's position stays: a resume checks its identity.
        let mut before = self.slots.min_acked().unwrap_or(0);
        if let Some(cap) = self.options.retain_bytes {
            let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
            for pair in segments.windows(2) {
                if total <= cap {
                    break;
                }
                total -= pair[0].bytes;
                before = before.max(pair[1].first_lsn);
            }
        }
        if let Some(max_age) = self.options.retain_seconds {
            let oldest_kept_ms =
                now_ms().saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX));
            for pair in segments.windows(2) {
                // A segment's newest entry is the one just before the next segment starts.
                let mut position = LogPosition::after(pair[1].first_lsn.saturating_sub(2));
                let newest = self.store.read_log_raw(&mut position, 1, usize::MAX)?;
                if newest
                    .first()
                    .is_none_or(|e| e.timestamp_ms >= oldest_kept_ms)
                {
                    break;
                }
                before = before.max(pair[1].first_lsn);
            }
        }
        // A replica being seeded keeps the log it will stream from, whatever the caps say.
        if let Some(pinned) = self.slots.min_pinned() {
            before = before.min(pinned);
        }
        if before < segments[1].first_lsn {
            return Ok(0);
        }
        let dropped = self.store.drop_log_before(before)?;
        if dropped > 0 {
            tracing::info!(dropped, before, "dropped log segments no replica needs");
        }
        Ok(dropped)
    }

    /// The commit time of the first entry after `acked` (`None` if there is none yet):
    /// from the shipped-but-unacked list when it starts there, else from the log.
    fn oldest_missing_ms(&self, acked: u64, shipped: Option<(u64, u64)>) -> Option<u64> {
        if acked >= self.store.last_lsn() {
            return None;
        }
        if let Some((lsn, commit)) = shipped.filter(|(lsn, _)| *lsn == acked + 1) {
            debug_assert_eq!(lsn, acked + 1);
            return Some(commit);
        }
        let mut position = LogPosition::after(acked);
        self.store
            .read_log_raw(&mut position, 1, usize::MAX)
            .ok()
            .and_then(|entries| entries.first().map(|e| e.timestamp_ms))
    }

    fn status(&self) -> PrimaryStatus {
        let last_lsn = self.store.last_lsn();
        let now = now_ms();
        let links = lock(&self.links);
        let replicas = links
            .values()
            .map(|link| {
                let mut status = link.status.clone();
                status.lag_lsn = last_lsn.saturating_sub(status.acked_lsn);
                status.lag_bytes = link.unacked.iter().map(|(_, _, bytes)| bytes).sum();
                let shipped = link.unacked.front().map(|(lsn, commit, _)| (*lsn, *commit));
                let oldest_missing = self.oldest_missing_ms(status.acked_lsn, shipped);
                status.lag_seconds = lag_seconds(oldest_missing, now);
                status
            })
            .collect();
        PrimaryStatus {
            last_lsn,
            epoch: self.store.epoch(),
            rejected: self.rejected.load(Ordering::Relaxed),
            last_rejection: lock(&self.last_rejection).clone(),
            replicas,
        }
    }

    fn reject(&self, peer: &SocketAddr, reason: &str) {
        tracing::warn!(%peer, %reason, "refused a replication connection");
        self.rejected.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_rejection) = Some(format!("{peer}: {reason}"));
    }

    fn token(&self) -> &[u8] {
        self.options.token.as_deref().unwrap_or("").as_bytes()
    }

    /// Registers a connection for `name`, stopping an older one for the same name.
    fn register(
        &self,
        kind: PeerKind,
        name: &str,
        peer: &SocketAddr,
        acked: u64,
    ) -> (u64, watch::Receiver<bool>) {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let (stop, stop_rx) = watch::channel(false);
        let link = Link {
            kind,
            status: ReplicaLink {
                name: name.to_owned(),
                address: peer.to_string(),
                state: LinkState::CatchingUp,
                sent_lsn: acked,
                acked_lsn: acked,
                lag_lsn: 0,
                lag_bytes: 0,
                lag_seconds: 0.0,
                last_seen_ms: now_ms(),
            },
            generation,
            unacked: VecDeque::new(),
            stop,
        };
        if let Some(old) = lock(&self.links).insert(name.to_owned(), link) {
            old.stop.send_replace(true);
        }
        (generation, stop_rx)
    }

    fn update(&self, name: &str, generation: u64, f: impl FnOnce(&mut Link)) {
        if let Some(link) = lock(&self.links).get_mut(name) {
            if link.generation == generation {
                f(link);
            }
        }
    }
}

async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let (mut reader, mut writer) = stream.into_split();
    let name = match accept(&shared, &mut reader, &mut writer, &peer).await {
        Ok(accepted) => accepted,
        Err((reason, code)) => {
            shared.reject(&peer, &reason);
            if let Some(code) = code {
                let _ = write_frame(&mut writer, &Message::Refused { reason, code }).await;
            }
            return;
        }
    };
    let Accepted::Stream {
        kind,
        name,
        from_lsn,
        snapshot,
    } = name
    else {
        return;
    };
    let (generation, stop) = shared.register(kind, &name, &peer, from_lsn);
    let flushed_lsn = if snapshot {
        match send_snapshot(&shared, &name, generation, &mut writer).await {
            Ok(lsn) => lsn,
            Err(err) => {
                tracing::warn!(replica = %name, error = %err, "sending a snapshot failed");
                shared.update(&name, generation, |link| {
                    link.status.state = LinkState::Disconnected;
                });
                return;
            }
        }
    } else {
        from_lsn
    };
    let result = stream_to(
        &shared,
        &name,
        generation,
        flushed_lsn,
        reader,
        writer,
        stop,
        shutdown,
    )
    .await;
    if let Err(err) = &result {
        tracing::info!(replica = %name, error = %err, "replica connection ended");
    }
    shared.slots.unpin(&name);
    shared.update(&name, generation, |link| {
        link.status.state = LinkState::Disconnected;
    });
}

type Refusal = (String, Option<RefuseCode>);

/// What a successful handshake leads to.
enum Accepted {
    /// A replica (or consumer) to stream to, after `from_lsn` or after a snapshot.
    Stream {
        kind: PeerKind,
        name: String,
        from_lsn: u64,
        snapshot: bool,
    },
    /// A monitor that got its status report.
    Monitor,
}

/// The handshake: challenge, proof, resume decision, welcome.
async fn accept(
    shared: &Shared,
    reader: &mut OwnedReadHalf,
    writer: &mut OwnedWriteHalf,
    peer: &SocketAddr,
) -> Result<Accepted, Refusal> {
    let no_code = |e: ReplicationError| (e.to_string(), None);
    let nonce = handshake::nonce();
    write_frame(
        writer,
        &Message::Challenge {
            nonce: ByteBuf::from(nonce.clone()),
        },
    )
    .await
    .map_err(no_code)?;
    let hello = read_handshake_frame(reader, HANDSHAKE_TIMEOUT, "hello")
        .await
        .map_err(no_code)?;
    let Message::Hello {
        kind,
        name,
        proof,
        nonce: peer_nonce,
        epoch,
        flushed_lsn,
        flushed_id,
        lineage,
    } = hello
    else {
        return Err(("expected a hello".to_owned(), Some(RefuseCode::Protocol)));
    };
    if !handshake::verify(shared.token(), Role::Peer, &nonce, &proof) {
        return Err(("wrong token".to_owned(), Some(RefuseCode::Auth)));
    }
    if kind == PeerKind::Monitor {
        write_frame(writer, &shared.report())
            .await
            .map_err(no_code)?;
        return Ok(Accepted::Monitor);
    }
    if crate::store::validate_table_name(&name).is_err() {
        return Err((
            format!("invalid replica name {name:?}"),
            Some(RefuseCode::Protocol),
        ));
    }
    let store = shared.store.clone();
    let primary_epoch = store.epoch();
    if epoch > primary_epoch {
        return Err((
            format!("{peer} has seen epoch {epoch}, newer than this primary's {primary_epoch}"),
            Some(RefuseCode::Fenced),
        ));
    }
    let view = tokio::task::spawn_blocking(move || -> Result<LogView> {
        Ok(LogView {
            oldest_lsn: store.oldest_lsn()?,
            last_lsn: store.last_lsn(),
            id_at_resume: store.entry_id(flushed_lsn).ok().flatten(),
        })
    })
    .await
    .map_err(|e| (e.to_string(), None))?
    .map_err(|e| (e.to_string(), None))?;
    // A replica whose position left the log is re-seeded by a snapshot; a fork is never
    // papered over that way (it needs an explicit resync).
    let primary_lineage = shared.store.lineage().map_err(|e| (e.to_string(), None))?;
    let snapshot = needs_snapshot(
        kind,
        peer,
        flushed_lsn,
        flushed_id,
        lineage,
        primary_lineage,
        view,
    )?;
    if kind == PeerKind::Replica {
        // Pin the log from here before any snapshot is taken: retention cannot then cut
        // the entries that will follow it.
        let pin = if snapshot { view.last_lsn } else { flushed_lsn };
        shared
            .slots
            .ensure(&name, pin, snapshot)
            .map_err(|e| (e.to_string(), None))?;
    }
    let welcome = Message::Welcome {
        proof: ByteBuf::from(handshake::prove(shared.token(), Role::Primary, &peer_nonce)),
        epoch: primary_epoch,
        last_lsn: view.last_lsn,
        snapshot,
        lineage: primary_lineage,
    };
    write_frame(writer, &welcome).await.map_err(no_code)?;
    tracing::info!(%peer, replica = %name, ?kind, from_lsn = flushed_lsn, "replica connected");
    // Links are named by replica; other kinds of peer never take a replica's place.
    let name = if kind == PeerKind::Replica {
        name
    } else {
        format!("{name} ({kind:?})")
    };
    Ok(Accepted::Stream {
        kind,
        name,
        from_lsn: flushed_lsn,
        snapshot,
    })
}

/// Whether the peer may stream from its position (`false`), must first be re-seeded by a
/// snapshot (`true`), or is refused. Only an empty store, or one of this primary's lineage,
/// may be replaced by a snapshot: anything else holds another history that a snapshot
/// would silently overwrite.
fn needs_snapshot(
    kind: PeerKind,
    peer: &SocketAddr,
    flushed_lsn: u64,
    flushed_id: (u64, u32),
    lineage: u64,
    primary_lineage: u64,
    view: LogView,
) -> Result<bool, Refusal> {
    match handshake::resume_decision(flushed_lsn, flushed_id, view) {
        Ok(_) => Ok(false),
        Err((RefuseCode::NeedsSnapshot, _))
            if kind == PeerKind::Replica && (flushed_lsn == 0 || lineage == primary_lineage) =>
        {
            Ok(true)
        }
        Err((RefuseCode::NeedsSnapshot, _)) if kind == PeerKind::Replica => Err((
            format!(
                "{peer} holds another store's history (a different lineage): resync it explicitly"
            ),
            Some(RefuseCode::Diverged),
        )),
        Err((code, reason)) => Err((reason, Some(code))),
    }
}

#[allow(clippy::too_many_arguments)]
async fn stream_to(
    shared: &Arc<Shared>,
    name: &str,
    generation: u64,
    from_lsn: u64,
    reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    mut stop: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ReplicationError> {
    let mut acks = tokio::spawn(read_acks(
        Arc::clone(shared),
        name.to_owned(),
        generation,
        reader,
    ));
    let mut visible = shared.visible.subscribe();
    let mut heartbeat = tokio::time::interval(shared.options.heartbeat_interval);
    let mut position = LogPosition::after(from_lsn);
    let mut last_ship: Option<Instant> = None;
    let result = loop {
        let backlog = (shared.store.last_lsn() + 1).saturating_sub(position.next_lsn());
        if backlog > 0 {
            // A replica behind by a full batch or more is caught up as fast as it can take
            // entries; the interval only paces a replica that keeps up.
            let paced = backlog < BATCH_ENTRIES as u64;
            if let Some(wait) = last_ship
                .filter(|_| paced)
                .map(|at| shared.options.ship_interval.saturating_sub(at.elapsed()))
            {
                if !wait.is_zero() {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => break Ok(()),
                        _ = shutdown.changed() => break Ok(()),
                        _ = &mut acks => break Ok(()),
                    }
                }
            }
            let store = shared.store.clone();
            let max_bytes = shared.options.max_batch_bytes;
            // A few fresh entries are still in the page cache: reading them here costs less
            // than a hop to the blocking pool, which shows in the lag of eager shipping.
            let batch = if backlog <= INLINE_READ_ENTRIES {
                store.read_log_raw(&mut position, BATCH_ENTRIES, max_bytes)
            } else {
                let (batch, moved) = tokio::task::spawn_blocking(move || {
                    let batch = store.read_log_raw(&mut position, BATCH_ENTRIES, max_bytes);
                    (batch, position)
                })
                .await
                .map_err(|e| ReplicationError::Protocol(format!("log reader failed: {e}")))?;
                position = moved;
                batch
            };
            let batch = batch
                .map_err(|e| ReplicationError::Protocol(format!("cannot read the log: {e}")))?;
            if let Err(err) = ship(shared, name, generation, &mut writer, batch).await {
                break Err(err);
            }
            last_ship = Some(Instant::now());
            continue;
        }
        tokio::select! {
            _ = visible.changed() => {}
            _ = heartbeat.tick() => {
                let acked = lock(&shared.links).get(name).map_or(from_lsn, |l| l.status.acked_lsn);
                let beat = Message::Heartbeat {
                    last_lsn: shared.store.last_lsn(),
                    oldest_missing_ms: shared.oldest_missing_ms(acked, None).unwrap_or(0),
                    now_ms: now_ms(),
                };
                if let Err(err) = write_frame(&mut writer, &beat).await {
                    break Err(err);
                }
            }
            _ = stop.changed() => break Ok(()),
            _ = shutdown.changed() => break Ok(()),
            _ = &mut acks => break Ok(()),
        }
    };
    acks.abort();
    result
}

/// Sends a consistent copy of every table, in frames of about `SNAPSHOT_FRAME_BYTES`, and
/// returns the LSN it reflects (streaming resumes after it).
async fn send_snapshot(
    shared: &Arc<Shared>,
    name: &str,
    generation: u64,
    writer: &mut OwnedWriteHalf,
) -> Result<u64, ReplicationError> {
    let store = shared.store.clone();
    let view = tokio::task::spawn_blocking(move || store.snapshot_view())
        .await
        .map_err(|e| ReplicationError::Protocol(e.to_string()))?
        .map_err(|e| ReplicationError::Protocol(format!("cannot take a snapshot: {e}")))?;
    shared
        .slots
        .ensure(name, view.lsn, true)
        .map_err(|e| ReplicationError::Protocol(format!("cannot pin the slot: {e}")))?;
    shared.update(name, generation, |link| {
        link.status.state = LinkState::Snapshot;
        link.status.sent_lsn = view.lsn;
    });
    let tables = view
        .sums
        .iter()
        .map(|(t, s)| (t.clone(), s.rows, s.checksum))
        .collect();
    write_frame(
        writer,
        &Message::SnapshotBegin {
            lsn: view.lsn,
            epoch: view.epoch,
            id: view.id,
            lineage: view.lineage,
            tables,
        },
    )
    .await?;
    let lsn = view.lsn;
    let names: Vec<String> = view.sums.keys().cloned().collect();
    let view = Arc::new(view);
    for table in names {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (reader, table_name, from) = (Arc::clone(&view), table.clone(), after.clone());
            let rows = tokio::task::spawn_blocking(move || {
                reader.rows(&table_name, from.as_deref(), SNAPSHOT_ROWS)
            })
            .await
            .map_err(|e| ReplicationError::Protocol(e.to_string()))?
            .map_err(|e| ReplicationError::Protocol(format!("cannot read the snapshot: {e}")))?;
            let Some((last, _)) = rows.last() else { break };
            after = Some(last.clone());
            let mut frame = Vec::new();
            let mut bytes = 0;
            for (key, value) in rows {
                bytes += key.len() + value.len() + 8;
                frame.push((ByteBuf::from(key), ByteBuf::from(value)));
                if bytes >= SNAPSHOT_FRAME_BYTES {
                    write_frame(
                        writer,
                        &Message::SnapshotRows {
                            table: table.clone(),
                            rows: std::mem::take(&mut frame),
                        },
                    )
                    .await?;
                    bytes = 0;
                }
            }
            if !frame.is_empty() {
                write_frame(
                    writer,
                    &Message::SnapshotRows {
                        table: table.clone(),
                        rows: frame,
                    },
                )
                .await?;
            }
        }
    }
    write_frame(writer, &Message::SnapshotEnd).await?;
    tracing::info!(replica = %name, lsn, "snapshot sent");
    Ok(lsn)
}

/// Sends a batch: whole entries packed into frames, an entry larger than a frame in parts.
async fn ship(
    shared: &Shared,
    name: &str,
    generation: u64,
    writer: &mut OwnedWriteHalf,
    batch: Vec<RawEntry>,
) -> Result<(), ReplicationError> {
    let Some(last) = batch.last() else {
        return Ok(());
    };
    let last_lsn = last.lsn;
    let shipped: Vec<(u64, u64, u64)> = batch
        .iter()
        .map(|e| (e.lsn, e.timestamp_ms, e.payload.len() as u64))
        .collect();
    let limit = MAX_FRAME_BYTES - FRAME_SLACK;
    let mut frame: Vec<ByteBuf> = Vec::new();
    let mut frame_bytes = 0;
    for entry in batch {
        let size = entry.payload.len() + 16;
        if !frame.is_empty() && frame_bytes + size > limit {
            write_frame(
                writer,
                &Message::Entries {
                    payloads: std::mem::take(&mut frame),
                },
            )
            .await?;
            frame_bytes = 0;
        }
        if size > limit {
            let total = entry.payload.len() as u64;
            for (index, chunk) in entry.payload.chunks(limit).enumerate() {
                let part = Message::EntryPart {
                    total,
                    offset: (index * limit) as u64,
                    data: ByteBuf::from(chunk.to_vec()),
                };
                write_frame(writer, &part).await?;
            }
            continue;
        }
        frame_bytes += size;
        frame.push(ByteBuf::from(entry.payload));
    }
    if !frame.is_empty() {
        write_frame(writer, &Message::Entries { payloads: frame }).await?;
    }
    let primary_last = shared.store.last_lsn();
    shared.update(name, generation, |link| {
        link.status.sent_lsn = last_lsn;
        link.status.state = if last_lsn >= primary_last {
            LinkState::Streaming
        } else {
            LinkState::CatchingUp
        };
        link.unacked.extend(shipped);
    });
    Ok(())
}

async fn read_acks(shared: Arc<Shared>, name: String, generation: u64, mut reader: OwnedReadHalf) {
    // A healthy peer acks every heartbeat: silence for several of them means a stalled link.
    let silence = shared.options.heartbeat_interval * 4 + Duration::from_secs(1);
    loop {
        let Ok(frame) = tokio::time::timeout(silence, read_frame(&mut reader)).await else {
            tracing::info!(replica = %name, "no ack for {silence:?}: dropping the link");
            return;
        };
        match frame {
            Ok(Message::Ack { flushed_lsn, .. }) => shared.update(&name, generation, |link| {
                // Nobody acks what was never sent; only a replica moves its slot.
                let flushed_lsn = flushed_lsn.min(link.status.sent_lsn);
                if link.kind == PeerKind::Replica {
                    shared.slots.advance(&name, flushed_lsn);
                }
                link.status.acked_lsn = link.status.acked_lsn.max(flushed_lsn);
                link.status.last_seen_ms = now_ms();
                while link
                    .unacked
                    .front()
                    .is_some_and(|(lsn, _, _)| *lsn <= flushed_lsn)
                {
                    link.unacked.pop_front();
                }
            }),
            Ok(other) => {
                tracing::warn!(replica = %name, message = ?other.type_byte(), "unexpected message from a replica");
                return;
            }
            Err(err) => {
                tracing::debug!(replica = %name, error = %err, "replica stream ended");
                return;
            }
        }
    }
}
