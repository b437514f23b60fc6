//! The primary side: a TCP server that streams the store's log to replicas.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit};

use super::commit_times::CommitTimes;
use super::handshake::{self, LogView, Role};
use super::protocol::{
    read_frame, read_handshake_frame, write_frame, Message, PeerKind, RefuseCode, MAX_FRAME_BYTES,
};
use super::slots::{Slot, SlotPin, Slots};
use super::status::{lag_seconds, now_ms, LinkState, ReplicaLink};
use crate::error::{ReplicationError, Result};
use crate::log::{LogPosition, RawEntry};
use crate::net::admission::{Admission, Ticket};
use crate::net::stall::StallWriter;
use crate::net::{runtime, AbortOnDrop};
use crate::store::{Store, VisibleSubscription};

/// The longest heartbeat interval (replicas drop a link silent for 5 s).
const MAX_HEARTBEAT: Duration = Duration::from_secs(2);
/// A backlog this small is read on the async task itself (see `stream_to`).
const INLINE_READ_ENTRIES: u64 = 64;
/// Replicas, consumers and monitors served at once, at most (more are refused as busy).
const MAX_AUTHENTICATED: usize = 256;
/// Connections that have not proved the token yet, at most: a newer one displaces the
/// oldest, so that strangers holding sockets open never lock out replicas and monitors.
const MAX_UNAUTHENTICATED: usize = 32;
/// How long a new connection has to prove the token.
const AUTH_DEADLINE: Duration = Duration::from_secs(5);
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

impl PrimaryOptions {
    /// A link that takes no bytes, or sends no ack, for this long is dropped, whatever it
    /// is doing (streaming, receiving a snapshot, answering the handshake): four
    /// heartbeats and a second.
    #[must_use]
    pub fn stall_timeout(&self) -> Duration {
        self.heartbeat_interval * 4 + Duration::from_secs(1)
    }
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

/// An entry shipped to a peer and not acknowledged yet.
struct InFlight {
    lsn: u64,
    commit_ms: u64,
    bytes: u64,
}

struct Link {
    kind: PeerKind,
    status: ReplicaLink,
    generation: u64,
    /// Shipped but unacknowledged entries, oldest first, and their bytes in all.
    in_flight: VecDeque<InFlight>,
    in_flight_bytes: u64,
    stop: watch::Sender<bool>,
}

impl Link {
    /// The commit time of the oldest entry this peer lacks (`None` when it lacks none):
    /// exact for an entry in flight, else when the first entry not shipped to it became
    /// visible. Never reads the log: heartbeats and `status()` call it under the lock.
    fn oldest_missing_ms(&self, last_lsn: u64, times: &CommitTimes) -> Option<u64> {
        if self.status.acked_lsn >= last_lsn {
            return None;
        }
        if let Some(oldest) = self.in_flight.front() {
            return Some(oldest.commit_ms);
        }
        (self.status.sent_lsn < last_lsn)
            .then(|| times.visible_by(self.status.sent_lsn + 1))
            .flatten()
    }

    /// Records a cumulative ack; returns the LSN acknowledged (never beyond what was sent).
    fn acknowledge(&mut self, flushed_lsn: u64) -> u64 {
        let flushed_lsn = flushed_lsn.min(self.status.sent_lsn);
        self.status.acked_lsn = self.status.acked_lsn.max(flushed_lsn);
        self.status.last_seen_ms = now_ms();
        while let Some(oldest) = self.in_flight.front().filter(|e| e.lsn <= flushed_lsn) {
            self.in_flight_bytes -= oldest.bytes;
            self.in_flight.pop_front();
        }
        flushed_lsn
    }
}

struct Shared {
    store: Store,
    slots: Slots,
    options: PrimaryOptions,
    links: Mutex<BTreeMap<String, Link>>,
    generations: AtomicU64,
    rejected: AtomicU64,
    last_rejection: Mutex<Option<String>>,
    /// The newest visible LSN, which streaming tasks wait on (see [`Shared::entries_visible`]).
    visible: watch::Sender<u64>,
    commit_times: CommitTimes,
    admission: Arc<Admission>,
}

/// A running primary. [`Primary::close`] stops the server and waits for it; dropping it
/// only signals the stop (it may run where blocking is not allowed, e.g. with the GIL).
pub struct Primary {
    shared: Arc<Shared>,
    address: SocketAddr,
    shutdown: watch::Sender<bool>,
    /// Tells the tasks of every batch the store makes visible (see [`Shared::visible`]).
    _visible: VisibleSubscription,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The writing half of a connection: every write fails after the stall timeout.
type Writer = StallWriter<OwnedWriteHalf>;

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
            commit_times: CommitTimes::new(store.last_lsn(), now_ms()),
            store,
            options,
            links: Mutex::new(BTreeMap::new()),
            generations: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            last_rejection: Mutex::new(None),
            visible,
            admission: Admission::new(MAX_UNAUTHENTICATED, MAX_AUTHENTICATED),
        });
        // Subscribed before any replica can connect. Weak: the store holds the listener,
        // and `Shared` holds the store.
        let subscriber = Arc::downgrade(&shared);
        let visible = shared.store.on_visible(move |lsn| {
            if let Some(shared) = subscriber.upgrade() {
                shared.entries_visible(lsn);
            }
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let server = runtime().spawn(accept_loop(
            Arc::clone(&shared),
            listener,
            shutdown_rx.clone(),
        ));
        runtime().spawn(retention_loop(Arc::clone(&shared), shutdown_rx));
        tracing::info!(%address, "primary listening");
        Ok(Self {
            shared,
            address,
            shutdown,
            _visible: visible,
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

    /// Signals the server and every connection to stop; waits for nothing.
    fn signal_stop(&self) {
        self.shutdown.send_replace(true);
        for link in lock(&self.shared.links).values() {
            link.stop.send_replace(true);
        }
    }

    /// Stops the server and every connection, waits until the port is free and persists
    /// the slots; the store stays open.
    pub fn close(&self) {
        self.signal_stop();
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
    /// Only signals the stop: the tasks end at their next await point and the retention
    /// task persists the slots a last time. Waiting belongs to [`Primary::close`].
    fn drop(&mut self) {
        self.signal_stop();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn retention_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(shared.options.retention_interval);
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                // A primary that is dropped rather than closed keeps its last acks.
                let slots = Arc::clone(&shared);
                match tokio::task::spawn_blocking(move || slots.slots.persist()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => tracing::warn!(error = %err, "could not persist the replication slots"),
                    Err(err) => tracing::warn!(error = %err, "persisting the replication slots panicked"),
                }
                return;
            }
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
                let ticket = shared.admission.admit();
                let _ = stream.set_nodelay(true);
                connections.spawn(serve(Arc::clone(&shared), stream, peer, ticket, shutdown.clone()));
            }
        }
    }
}

impl Shared {
    /// Hears from the store that entries up to `lsn` are visible (once per group-commit
    /// batch, on the thread that led it): dates them (see [`CommitTimes`]) and wakes the
    /// streaming tasks parked waiting for entries. A task that is shipping, or pacing itself
    /// to `ship_interval`, is not woken: it finds the entries when it next looks, so one
    /// wake-up carries every batch made visible meanwhile.
    fn entries_visible(&self, lsn: u64) {
        self.commit_times.record(lsn, now_ms());
        self.visible.send_if_modified(|seen| {
            let newer = lsn > *seen;
            *seen = (*seen).max(lsn);
            newer
        });
    }

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

    /// Every link's state and lag: in memory only, so cheap enough for any caller.
    fn status(&self) -> PrimaryStatus {
        let last_lsn = self.store.last_lsn();
        let now = now_ms();
        let replicas = lock(&self.links)
            .values()
            .map(|link| {
                let mut status = link.status.clone();
                status.lag_lsn = last_lsn.saturating_sub(status.acked_lsn);
                status.lag_bytes = link.in_flight_bytes;
                status.lag_seconds =
                    lag_seconds(link.oldest_missing_ms(last_lsn, &self.commit_times), now);
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
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            stop,
        };
        if let Some(old) = lock(&self.links).insert(name.to_owned(), link) {
            old.stop.send_replace(true);
        }
        (generation, stop_rx)
    }

    /// Runs `f` on the link of `name` if it is still the connection `generation`.
    fn update<T>(&self, name: &str, generation: u64, f: impl FnOnce(&mut Link) -> T) -> Option<T> {
        lock(&self.links)
            .get_mut(name)
            .filter(|link| link.generation == generation)
            .map(f)
    }
}

/// A refused connection: the code and reason sent to the peer, logged and counted.
struct Refusal {
    code: RefuseCode,
    reason: String,
}

impl Refusal {
    fn new(code: RefuseCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

impl From<ReplicationError> for Refusal {
    fn from(err: ReplicationError) -> Self {
        Self::new(RefuseCode::Protocol, err.to_string())
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
}

/// Where streaming to an accepted replica or consumer starts.
enum Start<'a> {
    /// After this LSN, which the peer holds.
    After(u64),
    /// After a snapshot; the pin keeps the log it will stream from until its first ack or
    /// until the connection ends, however it ends.
    Snapshot(SlotPin<'a>),
}

/// What a successful handshake leads to.
enum Accepted<'a> {
    /// A replica (or consumer) to stream to.
    Stream {
        kind: PeerKind,
        name: String,
        from_lsn: u64,
        start: Start<'a>,
    },
    /// A monitor that got its status report.
    Monitor,
}

async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    ticket: Ticket,
    shutdown: watch::Receiver<bool>,
) {
    let (mut reader, writer) = stream.into_split();
    let mut writer = StallWriter::new(writer, shared.options.stall_timeout());
    let (accepted, _place) = match handshake(&shared, &mut reader, &mut writer, &peer, ticket).await
    {
        Ok(accepted) => accepted,
        Err(Refusal { code, reason }) => {
            shared.reject(&peer, &reason);
            // Best effort: a peer that is gone or stalled does not get it.
            let _ = write_frame(&mut writer, &Message::Refused { reason, code }).await;
            return;
        }
    };
    let Accepted::Stream {
        kind,
        name,
        from_lsn,
        start,
    } = accepted
    else {
        return;
    };
    let (generation, mut stop) = shared.register(kind, &name, &peer, from_lsn);
    let mut shutdown = shutdown;
    let result = tokio::select! {
        result = snapshot_then_stream(&shared, &name, generation, &start, reader, writer) => result,
        _ = stop.changed() => Ok(()),
        _ = shutdown.changed() => Ok(()),
    };
    if let Err(err) = &result {
        tracing::info!(replica = %name, error = %err, "replica connection ended");
    }
    shared.update(&name, generation, |link| {
        link.status.state = LinkState::Disconnected;
    });
    // Unpins the slot if the replica never acked its snapshot.
    drop(start);
}

async fn snapshot_then_stream(
    shared: &Arc<Shared>,
    name: &str,
    generation: u64,
    start: &Start<'_>,
    reader: OwnedReadHalf,
    mut writer: Writer,
) -> Result<(), ReplicationError> {
    let from_lsn = match start {
        Start::After(lsn) => *lsn,
        Start::Snapshot(pin) => send_snapshot(shared, name, generation, pin, &mut writer).await?,
    };
    stream_to(shared, name, generation, from_lsn, reader, writer).await
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
) -> Result<(Accepted<'a>, OwnedSemaphorePermit), Refusal> {
    if !handshake::peer_allowed(shared.options.token.is_some(), peer.ip()) {
        return Err(Refusal::new(
            RefuseCode::Auth,
            "no token is configured, so only loopback peers may connect",
        ));
    }
    let hello = tokio::select! {
        hello = tokio::time::timeout(AUTH_DEADLINE, authenticate(shared, reader, writer)) => {
            hello.map_err(|_| Refusal::new(RefuseCode::Protocol, format!("no valid hello within {AUTH_DEADLINE:?}")))??
        }
        () = ticket.displaced() => return Err(Refusal::new(
            RefuseCode::Busy,
            format!("displaced: more than {MAX_UNAUTHENTICATED} connections were waiting to authenticate"),
        )),
    };
    let Some(permit) = ticket.authenticated() else {
        return Err(Refusal::new(
            RefuseCode::Busy,
            format!("{MAX_AUTHENTICATED} peers are connected already: retry later"),
        ));
    };
    Ok((welcome(shared, writer, peer, hello).await?, permit))
}

/// The unauthenticated part: a challenge, and a hello whose proof verifies.
async fn authenticate(
    shared: &Shared,
    reader: &mut OwnedReadHalf,
    writer: &mut Writer,
) -> Result<Hello, Refusal> {
    let nonce = handshake::nonce();
    write_frame(
        writer,
        &Message::Challenge {
            nonce: ByteBuf::from(nonce.clone()),
        },
    )
    .await?;
    let Message::Hello {
        kind,
        name,
        proof,
        nonce: peer_nonce,
        epoch,
        flushed_lsn,
        flushed_id,
        lineage,
    } = read_handshake_frame(reader, AUTH_DEADLINE, "hello").await?
    else {
        return Err(Refusal::new(RefuseCode::Protocol, "expected a hello"));
    };
    if !handshake::verify(shared.token(), Role::Peer, &nonce, &proof) {
        return Err(Refusal::new(RefuseCode::Auth, "wrong token"));
    }
    Ok(Hello {
        kind,
        name,
        nonce: peer_nonce,
        epoch,
        flushed_lsn,
        flushed_id,
        lineage,
    })
}

/// The authenticated part: a monitor gets its report; a replica or consumer gets the
/// resume decision (its slot created, or pinned for a snapshot) and a welcome.
async fn welcome<'a>(
    shared: &'a Arc<Shared>,
    writer: &mut Writer,
    peer: &SocketAddr,
    hello: Hello,
) -> Result<Accepted<'a>, Refusal> {
    let Hello {
        kind,
        name,
        nonce: peer_nonce,
        epoch,
        flushed_lsn,
        flushed_id,
        lineage,
    } = hello;
    if kind == PeerKind::Monitor {
        write_frame(writer, &shared.report()).await?;
        return Ok(Accepted::Monitor);
    }
    if crate::store::validate_table_name(&name).is_err() {
        return Err(Refusal::new(
            RefuseCode::Protocol,
            format!("invalid replica name {name:?}"),
        ));
    }
    let store = shared.store.clone();
    let primary_epoch = store.epoch();
    if epoch > primary_epoch {
        return Err(Refusal::new(
            RefuseCode::Fenced,
            format!("{peer} has seen epoch {epoch}, newer than this primary's {primary_epoch}"),
        ));
    }
    let internal = |e: &dyn std::fmt::Display| Refusal::new(RefuseCode::Protocol, e.to_string());
    let view = tokio::task::spawn_blocking(move || -> Result<LogView> {
        Ok(LogView {
            oldest_lsn: store.oldest_lsn()?,
            last_lsn: store.last_lsn(),
            id_at_resume: store.entry_id(flushed_lsn).ok().flatten(),
        })
    })
    .await
    .map_err(|e| internal(&e))?
    .map_err(|e| internal(&e))?;
    // A replica whose position left the log is re-seeded by a snapshot; a fork is never
    // papered over that way (it needs an explicit resync).
    let primary_lineage = shared.store.lineage().map_err(|e| internal(&e))?;
    let snapshot = needs_snapshot(
        kind,
        peer,
        flushed_lsn,
        flushed_id,
        lineage,
        primary_lineage,
        view,
    )?;
    // A replica's slot is pinned from here, before any snapshot is taken: retention cannot
    // then cut the entries that will follow it.
    let start = if snapshot {
        Start::Snapshot(shared.slots.pin(&name, view.last_lsn))
    } else {
        if kind == PeerKind::Replica {
            shared.slots.ensure(&name, flushed_lsn);
        }
        Start::After(flushed_lsn)
    };
    if kind == PeerKind::Replica {
        // The slot is on disk before the replica is welcomed (an fsync: off the runtime).
        let persisting = Arc::clone(shared);
        tokio::task::spawn_blocking(move || persisting.slots.persist())
            .await
            .map_err(|e| internal(&e))?
            .map_err(|e| internal(&e))?;
    }
    let welcome = Message::Welcome {
        proof: ByteBuf::from(handshake::prove(shared.token(), Role::Primary, &peer_nonce)),
        epoch: primary_epoch,
        last_lsn: view.last_lsn,
        snapshot,
        lineage: primary_lineage,
    };
    write_frame(writer, &welcome).await?;
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
        start,
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
        Err((RefuseCode::NeedsSnapshot, _)) if kind == PeerKind::Replica => Err(Refusal::new(
            RefuseCode::Diverged,
            format!(
                "{peer} holds another store's history (a different lineage): resync it explicitly"
            ),
        )),
        Err((code, reason)) => Err(Refusal::new(code, reason)),
    }
}

/// Streams entries after `from_lsn` with heartbeats while idle, until the peer's acks stop
/// (its reader ends: silence, garbage or a closed connection) or a write stalls.
async fn stream_to(
    shared: &Arc<Shared>,
    name: &str,
    generation: u64,
    from_lsn: u64,
    reader: OwnedReadHalf,
    mut writer: Writer,
) -> Result<(), ReplicationError> {
    let mut acks = AbortOnDrop(tokio::spawn(read_acks(
        Arc::clone(shared),
        name.to_owned(),
        generation,
        reader,
    )));
    let mut visible = shared.visible.subscribe();
    let mut heartbeat = tokio::time::interval(shared.options.heartbeat_interval);
    let mut position = LogPosition::after(from_lsn);
    let mut last_ship: Option<Instant> = None;
    loop {
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
                        _ = &mut acks.0 => return Ok(()),
                    }
                }
            }
            let store = shared.store.clone();
            let max_bytes = shared.options.max_batch_bytes;
            // A small backlog is among the newest records, which the store keeps in memory:
            // reading it here costs no system call, and less than a hop to the blocking
            // pool, which would show in the lag of eager shipping.
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
            ship(shared, name, generation, &mut writer, batch).await?;
            last_ship = Some(Instant::now());
            continue;
        }
        tokio::select! {
            _ = visible.changed() => {}
            _ = heartbeat.tick() => {
                let last_lsn = shared.store.last_lsn();
                let oldest_missing_ms = shared
                    .update(name, generation, |link| link.oldest_missing_ms(last_lsn, &shared.commit_times))
                    .flatten()
                    .unwrap_or(0);
                let beat = Message::Heartbeat { last_lsn, oldest_missing_ms, now_ms: now_ms() };
                write_frame(&mut writer, &beat).await?;
            }
            _ = &mut acks.0 => return Ok(()),
        }
    }
}

/// Sends a consistent copy of every table, in frames of about `SNAPSHOT_FRAME_BYTES`, and
/// returns the LSN it reflects (streaming resumes after it).
async fn send_snapshot(
    shared: &Arc<Shared>,
    name: &str,
    generation: u64,
    pin: &SlotPin<'_>,
    writer: &mut Writer,
) -> Result<u64, ReplicationError> {
    let store = shared.store.clone();
    let view = tokio::task::spawn_blocking(move || store.snapshot_view())
        .await
        .map_err(|e| ReplicationError::Protocol(e.to_string()))?
        .map_err(|e| ReplicationError::Protocol(format!("cannot take a snapshot: {e}")))?;
    pin.move_to(view.lsn);
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
    writer: &mut Writer,
    batch: Vec<RawEntry>,
) -> Result<(), ReplicationError> {
    let Some(last) = batch.last() else {
        return Ok(());
    };
    let last_lsn = last.lsn;
    let shipped: Vec<InFlight> = batch
        .iter()
        .map(|e| InFlight {
            lsn: e.lsn,
            commit_ms: e.timestamp_ms,
            bytes: e.payload.len() as u64,
        })
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
        link.in_flight_bytes += shipped.iter().map(|e| e.bytes).sum::<u64>();
        link.in_flight.extend(shipped);
    });
    Ok(())
}

async fn read_acks(shared: Arc<Shared>, name: String, generation: u64, reader: OwnedReadHalf) {
    // Buffered: a frame's length and body then take one read, not two (an eager replica
    // acks every batch it applies).
    let mut reader = tokio::io::BufReader::new(reader);
    // A healthy peer acks every heartbeat: silence for several of them means a stalled link.
    let silence = shared.options.stall_timeout();
    loop {
        let Ok(frame) = tokio::time::timeout(silence, read_frame(&mut reader)).await else {
            tracing::info!(replica = %name, "no ack for {silence:?}: dropping the link");
            return;
        };
        match frame {
            Ok(Message::Ack { flushed_lsn, .. }) => {
                let acked = shared.update(&name, generation, |link| {
                    (link.kind, link.acknowledge(flushed_lsn))
                });
                // Only a replica moves its slot (its first ack also unpins it).
                if let Some((PeerKind::Replica, acked)) = acked {
                    shared.slots.advance(&name, acked);
                }
            }
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
