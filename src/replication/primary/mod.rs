//! The primary side: a TCP server that streams the store's log to replicas.

mod admit;
mod ahead;
mod drop_slot;
mod from_writer;
mod members;
mod options;
mod outbox;
mod shared;
mod snapshot;
mod stream;
mod switchover;
mod verify;

/// The logger its submodules log under too (`replikv.replication.primary` in Python).
const LOG_TARGET: &str = module_path!();

pub use options::{PrimaryOptions, MAX_HEARTBEAT, MIN_BATCH_BYTES, MIN_HEARTBEAT};
use options::{MAX_AUTHENTICATED, MAX_UNAUTHENTICATED};
pub use switchover::Switchover;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::watch;

use super::commit_times::CommitTimes;
use super::handover::HandedMember;
use super::machine::{LinkId, Peer, PrimaryMachine};
use super::monitor::announce_epoch;
use super::quorum::SyncWaiters;
use super::slots::{QuorumChange, Slot, Slots};
use super::status::{now_ms, ReplicaLink, SyncState};
use super::verify::VerifyReport;
use crate::error::{Result, StoreError};
use crate::net::admission::Admission;
use crate::net::client::Backoff;
use crate::net::rated::Rated;
use crate::net::runtime;
use crate::net::server::{accept_loop, bind};
use crate::net::stall::StallWriter;
use crate::store::{Registration, Store, VisibleSubscription};

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
    /// A switchover runs (from its first check to its end): one at a time.
    switching: std::sync::atomic::AtomicBool,
    /// The log before this LSN could not be read (a damaged record met while streaming):
    /// a peer that needs it is seeded by a snapshot of the tables, as if retention had
    /// dropped it (0: all of it reads).
    unreadable_below: AtomicU64,
    /// A switchover an operator asked for, until the owner carries it out.
    requested: Mutex<Option<switchover::Request>>,
    /// The quorum heartbeats tell replicas (what they promote by): the configured one,
    /// or while a raised quorum does not hold everything written before it was raised,
    /// the lower one it was raised from.
    announced_quorum: AtomicU64,
    /// The last LSN written before this primary started: a raised quorum is announced once
    /// it holds this.
    raised_over: u64,
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
        // A store deposed before (a promotion elsewhere, recorded durably) serves as one:
        // its status says sync writes are unavailable, as it did before the restart.
        if store.epoch() > store.own_epoch() {
            sync.fence(store.epoch());
        }
        let registration = store.serve_replication(Arc::clone(&sync) as _)?;
        let (listener, address) = runtime().block_on(bind(&options.listen))?;
        let slots = Slots::load(store.path())?;
        let quorum = options.sync.quorum as u64;
        let announced = match slots.serve_with_quorum(quorum)? {
            QuorumChange::Same => quorum,
            QuorumChange::Lowered => {
                tracing::warn!(
                    target: LOG_TARGET,
                    quorum,
                    "the quorum is lower than this primary last served with: its replicas \
                     count toward sync writes again once every one has recorded the new quorum"
                );
                quorum
            }
            QuorumChange::Raised { from } => {
                tracing::warn!(
                    target: LOG_TARGET,
                    quorum,
                    from,
                    "the quorum is higher than this primary last served with: replicas are told \
                     the lower one until the higher one holds everything written before"
                );
                from
            }
        };
        let (visible, _) = watch::channel(store.last_lsn());
        let mut machine = PrimaryMachine::new(options.machine_config(), store.last_lsn());
        for slot in slots.list() {
            machine.remember(&slot.name, slot.fsync, slot.joining, slot.store_id, 0);
        }
        sync.publish(machine.quorum_view());
        let shared = Arc::new(Shared {
            announced_quorum: AtomicU64::new(announced),
            raised_over: store.last_lsn(),
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
            switching: std::sync::atomic::AtomicBool::new(false),
            unreadable_below: AtomicU64::new(0),
            requested: Mutex::new(None),
        });
        // A raised quorum over an empty log holds everything written before at once.
        shared.announce_raised_quorum(0);
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

    /// Expects the replicas `members`, which fsync and hold everything up to `lsn` (the
    /// members of the primary a switchover or a promotion took over from): their slots
    /// keep the log from there, a sync write waits for them (rather than being refused)
    /// until they connect, heartbeats name their directories from the start, and one
    /// still joining counts once every member has recorded it.
    pub fn expect(&self, members: &[HandedMember], lsn: u64) {
        let now = self.shared.now_us();
        for member in members {
            self.shared.slots.ensure(&member.name, lsn, true);
            self.shared.slots.held_by(&member.name, member.store_id);
            if member.joining {
                self.shared.slots.mark_joining(&member.name);
            }
        }
        let mut links = lock(&self.shared.links);
        for member in members {
            let HandedMember {
                name,
                store_id,
                joining,
            } = member;
            links.machine.remember(name, true, *joining, *store_id, now);
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
    /// fsync count: consumers and replicas with `fsync=False` never do. Replicas that hold
    /// back may acknowledge an entry before this primary's own fdatasync of it ends
    /// ([`PrimaryOptions::ship_ahead`]).
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
        self.shared.drop_slot(name)
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

    #[test]
    fn members_expected_from_a_handover_are_named_by_their_directories_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("p"), crate::store::StoreOptions::default());
        let primary = Primary::start(store.unwrap(), PrimaryOptions::default()).unwrap();
        let member = |name: &str, store_id, joining| HandedMember {
            name: name.into(),
            store_id,
            joining,
        };
        primary.expect(&[member("b", 0xb, false), member("old", 0, true)], 7);
        // Heartbeats name b's directory before b reconnects; "old" said none.
        let ids = lock(&primary.shared.links).machine.member_ids();
        assert_eq!(ids, [("b".to_owned(), 0xb)]);
        // "old" was still joining: it counts once every member has recorded it.
        assert_eq!(lock(&primary.shared.links).machine.quorum_view().joining, 1);
        // Told again (a switchover back to a primary whose slots file is older), the
        // newer directory is taken; an unknown one changes nothing.
        primary.expect(&[member("b", 0xb2, false), member("old", 0, true)], 7);
        let ids = lock(&primary.shared.links).machine.member_ids();
        assert_eq!(ids, [("b".to_owned(), 0xb2)]);
        let slots = primary.slots();
        let held: Vec<(&str, u64, u64, bool)> = slots
            .iter()
            .map(|s| (s.name.as_str(), s.acked_lsn, s.store_id, s.joining))
            .collect();
        assert_eq!(held, [("b", 7, 0xb2, false), ("old", 7, 0, true)]);
    }
}
