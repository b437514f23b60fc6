//! The primary side: a TCP server that streams the store's log to replicas.

mod admit;
mod ahead;
mod from_writer;
mod members;
mod outbox;
mod snapshot;
mod stream;
mod switchover;
mod verify;

pub use switchover::Switchover;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::watch;

use super::commit_times::CommitTimes;
use super::machine::{LinkId, Micros, Peer, PrimaryConfig, PrimaryMachine};
use super::monitor::announce_epoch;
use super::protocol::{Message, PeerKind};
use super::quorum::{SyncOptions, SyncWaiters};
use super::slots::{Slot, Slots};
use super::status::{lag_seconds, now_ms, ReplicaLink, SyncRole, SyncState};
use super::verify::VerifyReport;
use crate::error::{Result, StoreError};
use crate::net::admission::Admission;
use crate::net::client::Backoff;
use crate::net::rated::Rated;
use crate::net::runtime;
use crate::net::server::{accept_loop, bind};
use crate::net::stall::StallWriter;
use crate::store::{LogHolds, Registration, RetentionPolicy, Store, VisibleSubscription};

/// The longest heartbeat interval (replicas drop a link silent for 5 s).
const MAX_HEARTBEAT: Duration = Duration::from_secs(2);
/// The shortest heartbeat interval a primary is given.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
/// The smallest `max_batch_bytes`: a batch must have room for at least a small entry.
pub const MIN_BATCH_BYTES: usize = 4096;
/// Replicas, consumers and monitors served at once, at most (more are refused as busy).
const MAX_AUTHENTICATED: usize = 256;
/// A link that keeps up ships entries no sync writer waits for at most this often, even
/// with a zero `ship_interval`: a replica fsyncs each batch it gets, so a primary with one
/// durable writer that shipped every commit on its own would double the fsyncs of a disk
/// that the two share. Entries a sync writer waits for ship at once.
const MIN_SHIP_INTERVAL: Duration = Duration::from_millis(1);
/// Connections that have not proved the token yet, at most: a newer one displaces the
/// oldest, so that strangers holding sockets open never lock out replicas and monitors.
const MAX_UNAUTHENTICATED: usize = 32;

/// How a primary serves its replicas.
#[derive(Debug, Clone)]
pub struct PrimaryOptions {
    /// Address to listen on (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Shared token; without one only loopback peers may connect.
    pub token: Option<String>,
    /// Entries are shipped in batches at most this often (zero ships eagerly: within about
    /// a millisecond, and at once when a sync writer waits for them).
    pub ship_interval: Duration,
    /// Bytes of entries per batch at most (one entry larger than this still goes alone).
    pub max_batch_bytes: usize,
    /// How often an idle connection carries a heartbeat.
    pub heartbeat_interval: Duration,
    /// Keep at most this many bytes of log, even if a slot still needs them (that replica
    /// will then need a snapshot). `None`: the store's `retain_bytes`.
    pub retain_bytes: Option<u64>,
    /// Drop log segments whose entries are all older than this, even if a slot still needs
    /// them. `None`: the store's `retain_seconds`.
    pub retain_seconds: Option<Duration>,
    /// How often slots are persisted and retention runs.
    pub retention_interval: Duration,
    /// Quorum, timeout and per-table modes of sync writes.
    pub sync: SyncOptions,
    /// Ship a sync writer's entry to replicas that hold back as soon as it is written, so
    /// that this primary's fdatasync and theirs overlap (see [`ahead`]): a sync write then
    /// costs about the longer path plus a round trip, not the sum of both. Such a replica
    /// shows the entry once told it is durable here (told at once while a sync writer
    /// waits), and a sync write counts a replica only once it shows it. Off by default:
    /// each sync write then costs every replica a second frame and a second apply, which
    /// on two cores shared with the replicas cost async writers beside a sync writer
    /// about a fifth of their rate (`benches/bench_sync.py --ship-ahead`).
    pub ship_ahead: bool,
}

impl PrimaryOptions {
    /// A link that takes no bytes, or sends no ack, for this long is dropped, whatever it
    /// is doing (streaming, receiving a snapshot, answering the handshake): four
    /// heartbeats and a second. An ack may take a second longer per
    /// [`APPLIED_PER_SECOND`](crate::replication::machine::primary::APPLIED_PER_SECOND)
    /// bytes shipped and not acknowledged (a replica acks a batch once it is applied).
    #[must_use]
    pub fn stall_timeout(&self) -> Duration {
        self.heartbeat_interval * 4 + Duration::from_secs(1)
    }

    /// The protocol's rules, as the state machine takes them.
    fn machine_config(&self) -> PrimaryConfig {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        PrimaryConfig {
            quorum: self.sync.quorum,
            ship_interval: micros(self.ship_interval.max(MIN_SHIP_INTERVAL)),
            heartbeat_interval: micros(self.heartbeat_interval),
            stall_timeout: micros(self.stall_timeout()),
            catch_up_entries: 4096,
        }
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
            sync: SyncOptions::default(),
            ship_ahead: false,
        }
    }
}

/// The protocol's state and, per peer, what only the transport needs: one lock for both.
struct Links {
    machine: PrimaryMachine,
    wires: BTreeMap<String, Wire>,
    /// Names whose hello is being admitted, with the store it came from: between the
    /// check and the connection's registration, another store's hello under the same name
    /// would pass the check too (both retrying after a restart, say).
    admitting: BTreeMap<String, u64>,
}

/// A name held for one store's hello while it is admitted (see [`Shared::claim`]), until
/// its connection is registered or the admission fails.
pub(super) struct Claim<'a> {
    links: &'a Mutex<Links>,
    name: String,
    store_id: u64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut links = lock(self.links);
        if links.admitting.get(&self.name) == Some(&self.store_id) {
            links.admitting.remove(&self.name);
        }
    }
}

/// The transport side of a peer's current (or last) connection.
struct Wire {
    address: String,
    stop: watch::Sender<bool>,
    last_seen_ms: u64,
    /// The socket of the connection while it streams, for writers' threads to ship on.
    outbox: Option<(LinkId, Arc<outbox::Outbox>)>,
}

/// A streaming connection's socket offered to writers' threads, until dropped.
struct SharedSocket<'a> {
    shared: &'a Shared,
    id: LinkId,
}

impl Drop for SharedSocket<'_> {
    fn drop(&mut self) {
        let mut links = lock(&self.shared.links);
        if let Some(wire) = links.wires.get_mut(&self.id.name) {
            if wire.outbox.as_ref().is_some_and(|(id, _)| *id == self.id) {
                wire.outbox = None;
            }
        }
    }
}

/// The commit time of the oldest entry `peer` lacks (`None` when it lacks none): exact for
/// an entry in flight, else when the first entry not shipped to it became visible. Never
/// reads the log: heartbeats and `status()` call it under the lock.
fn oldest_missing_ms(peer: &Peer, last_lsn: u64, times: &CommitTimes) -> Option<u64> {
    if peer.acked_lsn >= last_lsn {
        return None;
    }
    if let Some(oldest) = peer.in_flight.front() {
        return Some(oldest.commit_ms);
    }
    (peer.sent_lsn < last_lsn)
        .then(|| times.visible_by(peer.sent_lsn + 1))
        .flatten()
}

struct Shared {
    store: Store,
    slots: Slots,
    options: PrimaryOptions,
    links: Mutex<Links>,
    /// The sync writers' view of the quorum, published by the machine after each change.
    sync: Arc<SyncWaiters>,
    /// The origin of the machine's clock.
    started: Instant,
    rejected: AtomicU64,
    last_rejection: Mutex<Option<String>>,
    /// Refusals are logged at most once a second (each is counted in `rejected`).
    rejections_logged: Rated,
    /// The newest visible LSN, which streaming tasks wait on (see [`Shared::entries_visible`]).
    visible: watch::Sender<u64>,
    /// The newest LSN written to the log, while replicas that hold back are connected
    /// (see [`ahead`]); links read it when they wake, and nothing waits on it.
    written: AtomicU64,
    ahead: Mutex<ahead::Ahead>,
    commit_times: CommitTimes,
    admission: Arc<Admission>,
    /// The stream links a verification asks for their replicas' sums.
    link_queues: verify::LinkQueues,
    /// Where its counting replicas answer a promotion (heartbeats tell them each other's).
    members: members::Members,
    /// A switchover waiting for its target to say it serves: the target's name, and where
    /// to tell its address.
    handing_over: Mutex<Option<(String, tokio::sync::oneshot::Sender<String>)>>,
    /// A switchover an operator asked for, until the owner carries it out.
    requested: Mutex<Option<switchover::Request>>,
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
    /// Keeps this primary registered on its store for sync writes until it stops.
    registration: Mutex<Option<Registration>>,
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
    /// Whether sync writes can complete now.
    pub sync_state: SyncState,
}

impl Primary {
    /// Starts serving `store`'s log.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn start(store: Store, mut options: PrimaryOptions) -> Result<Self> {
        // A closed store has nothing to serve: every replica would be refused by it.
        store.check_usable()?;
        // An empty token is no token: it must not open a primary to every peer.
        options.token = options.token.filter(|token| !token.is_empty());
        // Replicas drop a link that stays silent for 5 s: heartbeat well within that.
        options.heartbeat_interval = options.heartbeat_interval.min(MAX_HEARTBEAT);
        let sync = Arc::new(SyncWaiters::new(options.sync.clone()));
        let registration = store.serve_replication(Arc::clone(&sync) as _)?;
        let (listener, address) = runtime().block_on(bind(&options.listen))?;
        let slots = Slots::load(store.path())?;
        let (visible, _) = watch::channel(store.last_lsn());
        let mut machine = PrimaryMachine::new(options.machine_config(), store.last_lsn());
        for slot in slots.list() {
            machine.remember(&slot.name, slot.fsync, 0);
        }
        sync.publish(machine.quorum_view());
        let shared = Arc::new(Shared {
            slots,
            commit_times: CommitTimes::new(store.last_lsn(), now_ms()),
            store,
            options,
            links: Mutex::new(Links {
                machine,
                wires: BTreeMap::new(),
                admitting: BTreeMap::new(),
            }),
            sync,
            started: Instant::now(),
            rejected: AtomicU64::new(0),
            last_rejection: Mutex::new(None),
            rejections_logged: Rated::default(),
            visible,
            written: AtomicU64::new(0),
            ahead: Mutex::default(),
            admission: Admission::new(MAX_UNAUTHENTICATED, MAX_AUTHENTICATED),
            link_queues: verify::LinkQueues::default(),
            members: members::Members::default(),
            handing_over: Mutex::new(None),
            requested: Mutex::new(None),
        });
        // Subscribed before any replica can connect. Weak: the store holds the listener,
        // and `Shared` holds the store.
        let subscriber = Arc::downgrade(&shared);
        let visible = shared.store.on_visible(move |lsn| {
            if let Some(shared) = subscriber.upgrade() {
                shared.entries_visible(lsn);
            }
        });
        // What was visible before it subscribed: a wish for it is announced at once.
        shared.sync.shippable(shared.store.last_lsn());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let server = {
            let shared = Arc::clone(&shared);
            let admission = Arc::clone(&shared.admission);
            runtime().spawn(accept_loop(
                listener,
                admission,
                shutdown_rx.clone(),
                move |incoming| admit::serve(Arc::clone(&shared), incoming),
            ))
        };
        runtime().spawn(retention_loop(Arc::clone(&shared), shutdown_rx));
        tracing::info!(%address, "primary listening");
        Ok(Self {
            shared,
            address,
            shutdown,
            _visible: visible,
            server: Mutex::new(Some(server)),
            registration: Mutex::new(Some(registration)),
        })
    }

    /// The address it listens on (with the real port when 0 was asked for).
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Expects the replicas `names`, which fsync and hold everything up to `lsn` (the
    /// members of the primary a switchover took over from): their slots keep the log from
    /// there, and a sync write waits for them (rather than being refused) until they
    /// connect.
    pub fn expect(&self, names: &[String], lsn: u64) {
        let now = self.shared.now_us();
        for name in names {
            self.shared.slots.ensure(name, lsn, true);
        }
        let mut links = lock(&self.shared.links);
        for name in names {
            links.machine.remember(name, true, now);
        }
        self.shared.sync.publish(links.machine.quorum_view());
    }

    /// The token its peers prove, if any.
    #[must_use]
    pub fn token(&self) -> Option<&str> {
        self.shared.options.token.as_deref()
    }

    /// Whether it ships sync writers' entries before its fdatasync ends
    /// ([`PrimaryOptions::ship_ahead`]).
    #[must_use]
    pub fn ships_ahead(&self) -> bool {
        self.shared.options.ship_ahead
    }

    /// The options it serves with (a switchover hands them over, and heartbeats tell
    /// replicas, as [`Settings`](super::handover::Settings)).
    #[must_use]
    pub fn options(&self) -> &PrimaryOptions {
        &self.shared.options
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

    /// Blocks until at least `replicas` replicas acknowledged `lsn` as durable, or
    /// `timeout` passes. Returns how many have (like Redis `WAIT`). Only replicas that
    /// fsync count: consumers and replicas with `fsync=False` never do.
    #[must_use]
    pub fn wait_for(&self, lsn: u64, replicas: usize, timeout: Duration) -> usize {
        self.shared.sync.wait_count(lsn, replicas, timeout)
    }

    /// Compares each replica's per-table checksums with this primary's at an LSN both
    /// recorded recently (DESIGN §3.5): equal, different, or not comparable yet (with why:
    /// not streaming, no answer within `timeout` (at most an hour), too far behind).
    ///
    /// # Errors
    /// The store is closed.
    pub fn verify(&self, timeout: Duration) -> Result<VerifyReport> {
        runtime().block_on(self.shared.verify(timeout))
    }

    /// Starts [`Primary::verify`] on the runtime, for a caller that waits in its own way
    /// (Python checks for Ctrl-C meanwhile).
    #[must_use]
    pub fn spawn_verify(&self, timeout: Duration) -> tokio::task::JoinHandle<Result<VerifyReport>> {
        let shared = Arc::clone(&self.shared);
        runtime().spawn(async move { shared.verify(timeout).await })
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
        {
            let mut links = lock(&self.shared.links);
            links.machine.forget(name);
            self.shared.sync.publish(links.machine.quorum_view());
        }
        self.shared.members.forget(name);
        self.shared.slots.drop_slot(name)
    }

    /// Checkpoints, persists the slots and drops the log segments no slot needs (within
    /// the caps), now rather than at the next retention tick. Returns how many segments were dropped.
    ///
    /// # Errors
    /// An I/O failure.
    pub fn retain(&self) -> Result<usize> {
        // Asked for now: what the slots let go goes now, not after the next checkpoint.
        self.shared.store.checkpoint()?;
        self.shared.retain()
    }

    /// Signals the server and every connection to stop; waits for nothing.
    /// Keeps telling the primary at `address` (the one this store was promoted away from)
    /// about this primary's epoch, in the background with backoff, until it has heard it
    /// or this primary stops: a deposed primary that is merely cut off learns it is
    /// deposed as soon as the link returns, and then takes no more writes.
    pub fn depose(&self, address: String) {
        let epoch = self.shared.store.own_epoch();
        let token = self.shared.options.token.clone().unwrap_or_default();
        let mut stop = self.shutdown.subscribe();
        runtime().spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
            loop {
                let told =
                    announce_epoch(&address, token.as_bytes(), epoch, Duration::from_secs(5));
                match told.await {
                    Ok(()) => {
                        tracing::info!(%address, epoch, "the former primary has heard of the new epoch");
                        return;
                    }
                    Err(err) => tracing::debug!(%address, error = %err, "the former primary is not reachable yet"),
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }

    fn signal_stop(&self) {
        // A stopped primary acknowledges nothing: sync writes are refused from here, and
        // those still waiting fail now.
        drop(lock(&self.registration).take());
        self.shared.sync.stop();
        self.shutdown.send_replace(true);
        for wire in lock(&self.shared.links).wires.values() {
            wire.stop.send_replace(true);
        }
    }

    /// Whether it stopped serving: [`Primary::close`], or the end of a switchover from it.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        *self.shutdown.borrow()
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
                    // A store closed under the primary (a switchover handing it over, or
                    // a failure the store reported itself) has nothing to retain.
                    Ok(Ok(_) | Err(crate::Error::Store(StoreError::Closed { .. }))) => {}
                    Ok(Err(err)) => tracing::warn!(error = %err, "log retention failed"),
                    Err(err) => tracing::warn!(error = %err, "log retention panicked"),
                }
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
    ///
    /// When this thread is a sync writer about to wait for one of them, they leave from it
    /// where they can (see [`from_writer`]), and the tasks of the links served so are not
    /// woken.
    fn entries_visible(&self, lsn: u64) {
        self.commit_times.record(lsn, now_ms());
        let wish = self.sync.visible(lsn);
        // Only a sync writer that made its own entry visible ships from its thread: an
        // async writer leading the batch leaves it to the tasks (see [`from_writer`]).
        let shipped = self.sync.waits_here(lsn)
            && wish.is_some_and(|wanted| self.ship_from_writer(lsn, wanted));
        // Before the links hear of the entries: one woken by either sees the wishes.
        if let Some(wanted) = wish {
            self.sync.announce(wanted, !shipped);
        }
        self.visible.send_if_modified(|seen| {
            let newer = lsn > *seen;
            *seen = (*seen).max(lsn);
            newer && !shipped
        });
    }

    /// Offers the socket `id` streams on to writers' threads until the guard is dropped.
    fn share_socket(&self, id: &LinkId, outbox: &Arc<outbox::Outbox>) -> SharedSocket<'_> {
        let mut links = lock(&self.links);
        if let Some(wire) = links.wires.get_mut(&id.name) {
            wire.outbox = Some((id.clone(), Arc::clone(outbox)));
        }
        SharedSocket {
            shared: self,
            id: id.clone(),
        }
    }

    /// The status report a monitor gets.
    fn report(&self) -> Message {
        let status = self.status();
        Message::Status {
            last_lsn: status.last_lsn,
            epoch: status.epoch,
            rejected: status.rejected,
            replicas: status.replicas,
            sync_state: status.sync_state,
        }
    }

    /// Persists the slots, then drops whole log segments no slot needs, within the caps:
    /// the store's policy, or this primary's own caps where it has them. A pinned slot (a
    /// replica being seeded) keeps its log whatever the caps say.
    fn retain(&self) -> Result<usize> {
        self.slots.persist()?;
        let store_policy = self.store.retention_policy();
        let policy = RetentionPolicy {
            bytes: self.options.retain_bytes.or(store_policy.bytes),
            age: self.options.retain_seconds.or(store_policy.age),
        };
        let holds = LogHolds {
            min_acked: self.slots.min_acked(),
            min_pinned: self.slots.min_pinned(),
        };
        let dropped = self.store.retain_log(policy, holds)?;
        if dropped > 0 {
            tracing::info!(dropped, "dropped log segments no replica needs");
        }
        Ok(dropped)
    }

    /// The machine's clock: microseconds since the primary started.
    fn now_us(&self) -> Micros {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Every link's state and lag: in memory only, so cheap enough for any caller.
    fn status(&self) -> PrimaryStatus {
        let last_lsn = self.store.last_lsn();
        let now = now_ms();
        let links = lock(&self.links);
        let replicas = links
            .machine
            .peers()
            .map(|peer| {
                let wire = links.wires.get(&peer.id.name);
                let oldest_missing = oldest_missing_ms(peer, last_lsn, &self.commit_times);
                ReplicaLink {
                    name: peer.kind.peer_name(&peer.id.name).to_owned(),
                    kind: peer.kind.name().to_owned(),
                    address: wire.map(|w| w.address.clone()).unwrap_or_default(),
                    state: peer.state,
                    sent_lsn: peer.sent_lsn,
                    acked_lsn: peer.acked_lsn,
                    lag_lsn: last_lsn.saturating_sub(peer.acked_lsn),
                    lag_bytes: peer.in_flight_bytes,
                    lag_seconds: lag_seconds(oldest_missing, now),
                    last_seen_ms: wire.map_or(0, |w| w.last_seen_ms),
                    sync_state: if peer.counts() {
                        SyncRole::Quorum
                    } else {
                        SyncRole::Async
                    },
                }
            })
            .collect();
        let sync_state = SyncState::of(
            links.machine.connected_counting_replicas(),
            links.machine.counting_replicas(),
            self.options.sync.quorum,
        );
        drop(links);
        PrimaryStatus {
            last_lsn,
            epoch: self.store.epoch(),
            rejected: self.rejected.load(Ordering::Relaxed),
            last_rejection: lock(&self.last_rejection).clone(),
            replicas,
            sync_state,
        }
    }

    fn reject(&self, peer: &dyn std::fmt::Display, reason: &str) {
        if let Some(skipped) = self.rejections_logged.admit(Instant::now()) {
            tracing::warn!(%peer, %reason, skipped, "refused a replication connection");
        }
        self.rejected.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_rejection) = Some(format!("{peer}: {reason}"));
    }

    fn token(&self) -> &[u8] {
        self.options.token.as_deref().unwrap_or("").as_bytes()
    }

    /// Holds `name` for a hello from the store `store_id` while it is admitted. Refused if
    /// another store is connected under that name (see [`PrimaryMachine::held_by_another`]:
    /// the error says where from) or is being admitted under it (`None`).
    fn claim(&self, name: &str, store_id: u64) -> Result<Claim<'_>, Option<String>> {
        let mut links = lock(&self.links);
        if links.machine.held_by_another(name, store_id) {
            return Err(links.wires.get(name).map(|wire| wire.address.clone()));
        }
        if store_id != 0 {
            match links.admitting.get(name) {
                Some(&other) if other != store_id => return Err(None),
                _ => {
                    links.admitting.insert(name.to_owned(), store_id);
                }
            }
        }
        Ok(Claim {
            links: &self.links,
            name: name.to_owned(),
            store_id,
        })
    }

    /// Registers a connection for `name` that holds everything up to `from_lsn`, stopping
    /// an older one for the same name.
    fn connect(
        &self,
        kind: PeerKind,
        durable: bool,
        name: &str,
        store_id: u64,
        peer: &SocketAddr,
        (from_lsn, shown_lsn): (u64, u64),
    ) -> (LinkId, watch::Receiver<bool>) {
        let (stop, stop_rx) = watch::channel(false);
        let now = self.now_us();
        let mut links = lock(&self.links);
        let (id, _replaced) = links
            .machine
            .connect(name, store_id, kind, durable, from_lsn, now);
        links.machine.showing(&id, shown_lsn);
        self.sync.publish(links.machine.quorum_view());
        let wire = Wire {
            address: peer.to_string(),
            stop,
            last_seen_ms: now_ms(),
            outbox: None,
        };
        if let Some(old) = links.wires.insert(name.to_owned(), wire) {
            old.stop.send_replace(true);
        }
        (id, stop_rx)
    }

    /// A cumulative ack from `id`: moves the machine, wakes whoever waits on acks, and
    /// moves a replica's slot.
    fn acknowledge(&self, id: &LinkId, flushed_lsn: u64, applied_lsn: u64) {
        let now = self.now_us();
        let mut links = lock(&self.links);
        let outcome = links.machine.ack(id, flushed_lsn, applied_lsn, now);
        if let Some(wire) = links.wires.get_mut(&id.name) {
            wire.last_seen_ms = now_ms();
        }
        // Only a replica moves its slot (the ack its snapshot's pin waits for unpins it),
        // before the waiters learn of the ack: whoever `wait_for` released finds the slot
        // moved. The slots' lock is a leaf: it is never held while `links` is taken.
        if let Some(lsn) = outcome.slot_lsn {
            self.slots.advance(&id.name, lsn);
        }
        if outcome.quorum_lsn.is_some() || outcome.slot_lsn.is_some() {
            self.sync.publish(links.machine.quorum_view());
        }
    }

    /// Learned that `epoch` began elsewhere (a replica was promoted): sync writers still
    /// waiting fail with [`ReplicationError::Fenced`], the store durably records the epoch
    /// and refuses writes, and every link stops, so that no replica takes an entry from
    /// this deposed primary again. Nothing happens for an epoch not newer than the store's.
    async fn fence(self: &Arc<Self>, epoch: u64) {
        if epoch <= self.store.epoch() {
            return;
        }
        self.sync.fence(epoch);
        let store = self.store.clone();
        let raised = tokio::task::spawn_blocking(move || store.raise_epoch(epoch)).await;
        if !matches!(raised, Ok(Ok(_))) {
            tracing::error!(epoch, result = ?raised, "could not record the newer epoch durably; writes stay refused until restart");
        }
        tracing::warn!(
            epoch,
            "deposed: epoch {epoch} began elsewhere; this primary takes no more writes"
        );
        for wire in lock(&self.links).wires.values() {
            wire.stop.send_replace(true);
        }
    }

    /// The commit time of the oldest entry `id` lacks, if it lacks any.
    fn oldest_missing_ms(&self, id: &LinkId, last_lsn: u64) -> Option<u64> {
        let links = lock(&self.links);
        let peer = links.machine.peer(id)?;
        oldest_missing_ms(peer, last_lsn, &self.commit_times)
    }

    /// `name` says it serves at `address`: the switchover waiting for it (if it hands over
    /// to `name`) is done.
    fn handed_over(&self, name: &str, address: String) {
        let mut waiting = lock(&self.handing_over);
        if waiting.as_ref().is_some_and(|(to, _)| to == name) {
            if let Some((_, done)) = waiting.take() {
                let _ = done.send(address);
            }
        }
    }

    /// Runs `f` on the protocol state.
    fn machine<T>(&self, f: impl FnOnce(&mut PrimaryMachine) -> T) -> T {
        f(&mut lock(&self.links).machine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eager_link_still_batches_entries_no_sync_writer_waits_for() {
        let eager = PrimaryOptions {
            ship_interval: Duration::ZERO,
            ..PrimaryOptions::default()
        };
        assert_eq!(eager.machine_config().ship_interval, 1_000);
        let paced = PrimaryOptions::default();
        assert_eq!(paced.machine_config().ship_interval, 50_000);
    }
}
