//! The follower side: follows a primary over TCP and reconnects with backoff after any
//! failure. One follow loop serves two owners: a [`Replica`] appends the entries to a
//! follower store of its own (which can then answer promotions, be promoted and take over
//! in a switchover), and a [`Follower`] hands them to any [`LogConsumer`] that keeps no
//! store (a cache's invalidator).

mod connect;
mod diverge;
mod elect;
mod follower;
mod handover;
mod member;
mod promote;
mod remembered;
mod seed;
mod session;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::handover::Settings;
use super::primary::{Primary, MAX_HEARTBEAT};
use super::status::{replica_lag_seconds, LastHeard, LinkState};
use crate::error::{ReplicationError, Result};
use crate::follow::{Divergence, LogConsumer};
use crate::net::runtime;
use crate::store::{Store, StoreOptions};
pub use diverge::{OnDiverge, Resynced};
pub use follower::{Follower, FollowerOptions};
pub use promote::{promote_stopped, Promotion};

/// How long a link may stay silent before the replica drops it and reconnects.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// What it does when its history forks from the primary's.
    pub on_diverge: OnDiverge,
    /// Where it answers other members (`host:port`, port 0 picks one): a promotion
    /// elsewhere asks it there to raise its epoch, and a promotion of this replica serves
    /// there by default. `None`: it does not listen, and no promotion can count it.
    pub listen: Option<String>,
}

/// What a replica knows about its link and lag.
#[derive(Debug, Clone)]
pub struct ReplicaState {
    /// The link's state.
    pub state: LinkState,
    /// Where its store serves as the primary, once promoted (or handed over to).
    pub serving_at: Option<String>,
    /// The primary's last LSN, as last heard.
    pub primary_last_lsn: u64,
    /// The primary's epoch, as last heard.
    pub primary_epoch: u64,
    /// The primary's sync quorum and its registered replicas that count toward it, as
    /// last heard (0 before a heartbeat): what a promotion must reach.
    pub primary_quorum: u64,
    /// See `primary_quorum`.
    pub primary_members: u64,
    /// The primary's members that listen, `(name, address)`, as last heard: whom a
    /// promotion of this replica asks.
    pub primary_peers: Vec<(String, String)>,
    /// The store directory of each of the primary's counting members, `(name, store
    /// id)`, as last heard (kept on disk): a promotion counts a member only from it.
    pub primary_member_ids: Vec<(String, u64)>,
    /// The primary's settings, as last heard (kept on disk): what a promotion of this
    /// replica serves with unless told otherwise. `Err`: those kept on disk could not be
    /// read back (damaged), and no heartbeat told them since; a promotion then serves only
    /// with settings it is given, never with defaults that may be weaker than the old
    /// primary's.
    pub primary_settings: Result<Option<Settings>, String>,
    /// The primary's clock at the last heartbeat, and when it arrived here.
    heartbeat: Option<(u64, Instant)>,
    /// When this replica (or follower) started: it has not heard its primary since then
    /// at least, while no heartbeat came.
    started: Instant,
    /// Commit time (primary's clock) of the oldest entry missing here, as of the last
    /// heartbeat (0 when none was missing).
    pub oldest_missing_ms: u64,
    /// Why the link last failed.
    pub last_error: Option<String>,
    /// Successful handshakes so far.
    pub connections: u64,
    /// Whether the primary it follows now has checked its history (a handshake with it
    /// succeeded since it started, or since it was re-pointed): until then, what its store
    /// holds may be another history's, and no read of it counts as the primary's.
    pub matched: bool,
    /// While a snapshot is received: rows received and rows in all.
    pub snapshot: Option<(u64, u64)>,
    /// Snapshots installed so far.
    pub snapshots: u64,
    /// While stopped on a divergence: what only this replica holds.
    pub diverged: Option<Divergence>,
    /// Resyncs done so far, and the last one.
    pub resyncs: u64,
    /// The last resync: what it discarded, and the report that keeps it.
    pub last_resync: Option<Resynced>,
}

impl ReplicaState {
    /// Before the first connection: the primary's quorum, members, peers and settings as
    /// last heard (kept on disk by a replica; unknown to a new follower).
    fn connecting(
        primary_quorum: u64,
        primary_members: u64,
        primary_peers: Vec<(String, String)>,
        primary_settings: Result<Option<Settings>, String>,
    ) -> Self {
        if let Err(damage) = &primary_settings {
            tracing::warn!(
                %damage,
                "the primary's settings are unknown until a heartbeat tells them again: a \
                 promotion before then is refused unless given its quorum and table modes"
            );
        }
        Self {
            state: LinkState::Connecting,
            serving_at: None,
            primary_last_lsn: 0,
            primary_epoch: 0,
            primary_quorum,
            primary_members,
            primary_peers,
            primary_member_ids: Vec::new(),
            primary_settings,
            heartbeat: None,
            started: Instant::now(),
            oldest_missing_ms: 0,
            last_error: None,
            connections: 0,
            matched: false,
            snapshot: None,
            snapshots: 0,
            diverged: None,
            resyncs: 0,
            last_resync: None,
        }
    }

    /// Records that its store is the primary's now (promoted, or handed over to), of
    /// `epoch`, served at `address`: every LSN it holds is that primary's own, and what it said of the old
    /// primary's history (a fork it stopped on, when forced) no longer holds.
    fn promoted(&mut self, epoch: u64, address: &str) {
        self.state = LinkState::Promoted;
        self.serving_at = Some(address.to_owned());
        self.primary_epoch = epoch;
        self.diverged = None;
        self.matched = true;
    }

    /// The primary's clock now, estimated from its last heartbeat.
    #[must_use]
    pub fn primary_now_ms(&self) -> Option<u64> {
        self.heartbeat.map(|(at, received)| {
            at + u64::try_from(received.elapsed().as_millis()).unwrap_or(u64::MAX)
        })
    }

    /// Its lag in seconds with `applied` LSNs applied (see [`replica_lag_seconds`]); while
    /// no heartbeat came since it started, it has not heard its primary for that long.
    #[must_use]
    pub fn lag_seconds(&self, applied: u64) -> f64 {
        let heard = LastHeard {
            lag_lsn: self.primary_last_lsn.saturating_sub(applied),
            oldest_missing_ms: self.oldest_missing_ms,
            primary_now_ms: self.primary_now_ms(),
            ago: Some(
                self.heartbeat
                    .map_or(self.started, |(_, received)| received)
                    .elapsed(),
            ),
            beat_every: match &self.primary_settings {
                Ok(Some(settings)) => Duration::from_millis(settings.heartbeat_interval_ms),
                _ => MAX_HEARTBEAT,
            },
        };
        replica_lag_seconds(self.state, heard)
    }
}

/// What the follow loop shares with its owner (a [`Replica`] or a [`Follower`]) and with
/// a replica's member server.
struct Shared {
    consumer: Arc<dyn LogConsumer>,
    options: FollowerOptions,
    /// What it does when its history forks from the primary's.
    on_diverge: OnDiverge,
    /// The primary it follows: `options.primary` until re-pointed with `follow`.
    primary: Mutex<String>,
    state: Mutex<ReplicaState>,
    /// The address it answers members at, once bound.
    listen: Option<std::net::SocketAddr>,
    /// The newest epoch a candidate was granted here. Held while a batch is appended, and
    /// while an epoch is granted: once granted, nothing more from an older primary is
    /// appended, so the log the candidate was told of is final.
    granted: Mutex<u64>,
    /// Ends the current link or backoff at once (a re-point, or a grant that deposed the
    /// primary): the follow loop connects again to [`Shared::primary`].
    kick: tokio::sync::Notify,
    /// A replica's store and what serves from it; `None` for a [`Follower`].
    store_side: Option<Arc<StoreSide>>,
}

/// What only a replica has: the store its consumer applies to, the member server that
/// answers from it, and the primary a switchover made of it.
struct StoreSide {
    store: Store,
    /// The member server, while it listens.
    member: Mutex<Option<member::Server>>,
    /// The primary a switchover made of this replica, until its owner takes it.
    handed_over: Mutex<Option<Primary>>,
}

impl StoreSide {
    /// Stops answering members and frees the member address.
    fn stop_member_server(&self) {
        if let Some(server) = lock(&self.member).take() {
            server.stop();
        }
    }
}

impl Shared {
    /// The state a follow loop starts from. An empty token is no token.
    fn new(
        consumer: Arc<dyn LogConsumer>,
        mut options: FollowerOptions,
        on_diverge: OnDiverge,
        state: ReplicaState,
        listen: Option<std::net::SocketAddr>,
        store_side: Option<Arc<StoreSide>>,
    ) -> Arc<Self> {
        options.token = options.token.filter(|token| !token.is_empty());
        Arc::new(Self {
            consumer,
            primary: Mutex::new(options.primary.clone()),
            options,
            on_diverge,
            state: Mutex::new(state),
            listen,
            granted: Mutex::new(0),
            kick: tokio::sync::Notify::new(),
            store_side,
        })
    }

    /// The address of the primary it follows now.
    fn primary(&self) -> String {
        lock(&self.primary).clone()
    }

    /// Its store became the primary of `epoch`, served at `address`: its status names
    /// that primary, no longer the one it followed.
    fn became_primary(&self, epoch: u64, address: &str) {
        lock(&self.state).promoted(epoch, address);
    }

    /// Follows `address` from now on: the current link (if any) ends, and the next one
    /// goes there.
    fn repoint(&self, address: &str) {
        address.clone_into(&mut lock(&self.primary));
        {
            let mut state = lock(&self.state);
            state.state = LinkState::Connecting;
            state.last_error = None;
            state.diverged = None;
            state.matched = false;
            // The quorum and members stay as last heard until the new primary says
            // otherwise: a promotion may need them.
            state.primary_last_lsn = 0;
            state.heartbeat = None;
        }
        tracing::info!(follower = %self.options.name, primary = %address, "re-pointed");
        self.kick.notify_one();
    }
}

/// A running replica.
pub struct Replica {
    side: Arc<StoreSide>,
    follower: Follower,
    /// Set once promoted: the store then belongs to the new primary, and closing the
    /// replica leaves it open.
    promoted: std::sync::atomic::AtomicBool,
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
    /// [`crate::error::NetError::Address`] for a primary's or `listen` address that is not
    /// `host:port`; the store cannot be opened.
    pub fn start(path: impl AsRef<std::path::Path>, options: ReplicaOptions) -> Result<Self> {
        // Before the store is opened (and marked a follower's) for nothing.
        crate::net::client::check_address(&options.primary)?;
        if let Some(listen) = &options.listen {
            crate::net::client::check_listen_address(listen)?;
        }
        let store_options = StoreOptions {
            follower: true,
            ..options.store.clone()
        };
        let store = Store::open(path, store_options)?;
        Self::attach(store, options)
    }

    /// Follows with `store`, already open and following (see [`Store::start_following`]):
    /// the old primary of a switchover becomes a replica this way.
    ///
    /// # Errors
    /// The store cannot be read, or the member address cannot be bound.
    pub fn attach(store: Store, options: ReplicaOptions) -> Result<Self> {
        crate::net::client::check_address(&options.primary)?;
        let (primary_quorum, primary_members) = store.primary_quorum()?;
        let mut state = ReplicaState::connecting(
            primary_quorum,
            primary_members,
            remembered::members(store.path()),
            remembered::settings(store.path()),
        );
        state.primary_member_ids = remembered::member_ids(store.path());
        let listener = match &options.listen {
            Some(address) => Some(runtime().block_on(crate::net::server::bind(address))?),
            None => None,
        };
        let side = Arc::new(StoreSide {
            store: store.clone(),
            member: Mutex::new(None),
            handed_over: Mutex::new(None),
        });
        let follow = FollowerOptions {
            primary: options.primary,
            token: options.token,
            name: options.name,
            max_backoff: options.max_backoff,
        };
        let shared = Shared::new(
            Arc::new(store.clone()),
            follow,
            options.on_diverge,
            state,
            listener.as_ref().map(|(_, bound)| *bound),
            Some(Arc::clone(&side)),
        );
        if let Some((listener, _)) = listener {
            let server = member::Server::start(Arc::clone(&shared), store, listener);
            *lock(&side.member) = Some(server);
        }
        Ok(Self {
            side,
            follower: Follower::spawn(shared)?,
            promoted: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The replica's store (read-only for users).
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.side.store
    }

    /// Its name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.follower.name()
    }

    /// The address of the primary it follows.
    #[must_use]
    pub fn primary(&self) -> String {
        self.follower.primary()
    }

    /// The token it proves to its primary, if any.
    #[must_use]
    pub fn token(&self) -> Option<&str> {
        self.shared().options.token.as_deref()
    }

    /// The address it answers other members at, if it listens.
    #[must_use]
    pub fn listen_address(&self) -> Option<std::net::SocketAddr> {
        self.shared().listen
    }

    /// Follows the primary at `address` from now on (after a promotion elsewhere, say),
    /// continuing from its own position when its history matches the new primary's (a
    /// fork is handled as `on_diverge` says). Nothing changes if it is already following
    /// `address`.
    ///
    /// # Errors
    /// [`ReplicationError::Refused`] once this replica was promoted (its store is a
    /// primary's now).
    pub fn follow(&self, address: &str) -> Result<()> {
        if self.promoted.load(std::sync::atomic::Ordering::Acquire) {
            return Err(ReplicationError::Refused {
                reason: format!("{:?} was promoted: it follows nobody", self.name()),
            }
            .into());
        }
        crate::net::client::check_address(address)?;
        self.follower.follow(address);
        Ok(())
    }

    /// A copy of its link state.
    #[must_use]
    pub fn state(&self) -> ReplicaState {
        self.follower.state()
    }

    /// Stops following and closes the store (unless it was promoted: its store is then
    /// the new primary's).
    ///
    /// # Errors
    /// Closing the store failed.
    pub fn close(&self) -> Result<()> {
        // Stopped and waited for first, so that no append races the store's close.
        self.follower.close();
        self.side.stop_member_server();
        // A switchover made it a primary that nobody took: it closes with the replica.
        if let Some(primary) = lock(&self.side.handed_over).take() {
            primary.close();
        }
        if self.promoted.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        self.side.store.close()
    }

    /// The primary a planned switchover made of this replica, once (its caller owns it
    /// from then on; closing the replica leaves its store open).
    #[must_use]
    pub fn take_handed_over(&self) -> Option<Primary> {
        let primary = lock(&self.side.handed_over).take();
        if primary.is_some() {
            self.promoted
                .store(true, std::sync::atomic::Ordering::Release);
        }
        primary
    }

    /// What its follow loop shares.
    fn shared(&self) -> &Arc<Shared> {
        &self.follower.shared
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
