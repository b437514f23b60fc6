//! The replica side: follows a primary over TCP, appending its entries to a follower store,
//! and reconnects with backoff after any failure.

mod connect;
mod diverge;
mod elect;
mod handover;
mod member;
mod members_file;
mod promote;
mod session;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::status::LinkState;
use crate::error::{ReplicationError, Result};
use crate::follow::{Divergence, LogConsumer};
use crate::net::client::Backoff;
use crate::net::runtime;
use crate::store::{Store, StoreOptions};
pub use diverge::{OnDiverge, Resynced};
pub use promote::{promote_stopped, Promotion};
use session::session;

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
    /// While stopped on a divergence: what only this replica holds.
    pub diverged: Option<Divergence>,
    /// Resyncs done so far, and the last one.
    pub resyncs: u64,
    /// The last resync: what it discarded, and the report that keeps it.
    pub last_resync: Option<Resynced>,
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
    consumer: Arc<dyn LogConsumer>,
    options: ReplicaOptions,
    /// The primary it follows: `options.primary` until re-pointed with `follow`.
    primary: Mutex<String>,
    /// Where divergence reports go: `diverged/` in the store's directory.
    report_dir: std::path::PathBuf,
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
    /// The replica's store (what `consumer` applies to).
    store: Store,
    /// The member server, while it listens.
    member: Mutex<Option<member::Server>>,
    /// The primary a switchover made of this replica, until its owner takes it.
    handed_over: Mutex<Option<crate::replication::primary::Primary>>,
}

impl Shared {
    /// The address of the primary it follows now.
    fn primary(&self) -> String {
        lock(&self.primary).clone()
    }

    /// Stops answering members and frees the member address.
    fn stop_member_server(&self) {
        if let Some(server) = lock(&self.member).take() {
            server.stop();
        }
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
            // The quorum and members stay as last heard until the new primary says
            // otherwise: a promotion may need them.
            state.primary_last_lsn = 0;
            state.heartbeat = None;
        }
        tracing::info!(replica = %self.options.name, primary = %address, "re-pointed");
        self.kick.notify_one();
    }
}

/// A running replica.
pub struct Replica {
    store: Store,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
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
    /// The store cannot be opened.
    pub fn start(path: impl AsRef<std::path::Path>, options: ReplicaOptions) -> Result<Self> {
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
    pub fn attach(store: Store, mut options: ReplicaOptions) -> Result<Self> {
        options.token = options.token.filter(|token| !token.is_empty());
        let (primary_quorum, primary_members) = store.primary_quorum()?;
        let listener = match &options.listen {
            Some(address) => Some(runtime().block_on(crate::net::server::bind(address))?),
            None => None,
        };
        let shared = Arc::new(Shared {
            consumer: Arc::new(store.clone()),
            primary: Mutex::new(options.primary.clone()),
            options,
            report_dir: store.path().join("diverged"),
            state: Mutex::new(ReplicaState {
                state: LinkState::Connecting,
                primary_last_lsn: 0,
                primary_epoch: 0,
                primary_quorum,
                primary_members,
                primary_peers: members_file::load(store.path()),
                heartbeat: None,
                oldest_missing_ms: 0,
                last_error: None,
                connections: 0,
                snapshot: None,
                snapshots: 0,
                diverged: None,
                resyncs: 0,
                last_resync: None,
            }),
            listen: listener.as_ref().map(|(_, bound)| *bound),
            granted: Mutex::new(0),
            kick: tokio::sync::Notify::new(),
            store: store.clone(),
            member: Mutex::new(None),
            handed_over: Mutex::new(None),
        });
        if let Some((listener, _)) = listener {
            let server = member::Server::start(Arc::clone(&shared), listener);
            *lock(&shared.member) = Some(server);
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = runtime().spawn(follow(Arc::clone(&shared), shutdown_rx));
        Ok(Self {
            store,
            shared,
            shutdown,
            task: Mutex::new(Some(task)),
            promoted: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The replica's store (read-only for users).
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Its name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.options.name
    }

    /// The address of the primary it follows.
    #[must_use]
    pub fn primary(&self) -> String {
        self.shared.primary()
    }

    /// The token it proves to its primary, if any.
    #[must_use]
    pub fn token(&self) -> Option<&str> {
        self.shared.options.token.as_deref()
    }

    /// The address it answers other members at, if it listens.
    #[must_use]
    pub fn listen_address(&self) -> Option<std::net::SocketAddr> {
        self.shared.listen
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
        if self.primary() == address {
            return Ok(());
        }
        self.shared.repoint(address);
        Ok(())
    }

    /// A copy of its link state.
    #[must_use]
    pub fn state(&self) -> ReplicaState {
        lock(&self.shared.state).clone()
    }

    /// Stops following and closes the store (unless it was promoted: its store is then
    /// the new primary's).
    ///
    /// # Errors
    /// Closing the store failed.
    pub fn close(&self) -> Result<()> {
        self.stop_task();
        self.stop_member_server();
        // A switchover made it a primary that nobody took: it closes with the replica.
        if let Some(primary) = lock(&self.shared.handed_over).take() {
            primary.close();
        }
        if self.promoted.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        self.store.close()
    }

    /// Stops the follow task and waits for it to end, so that no append races what comes
    /// next. Only a thread outside the runtime can wait (a store's close drains appends
    /// anyway).
    fn stop_task(&self) {
        self.shutdown.send_replace(true);
        let task = lock(&self.task).take();
        if let (Some(task), Err(_)) = (task, tokio::runtime::Handle::try_current()) {
            let _ = runtime().block_on(task);
        }
    }
}

impl Replica {
    /// Starts following again (after a promotion that did not win): to the same primary,
    /// which a raised epoch may now refuse until a promotion's lead re-points it.
    fn start_task(&self) {
        self.shutdown.send_replace(false);
        let task = runtime().spawn(follow(Arc::clone(&self.shared), self.shutdown.subscribe()));
        *lock(&self.task) = Some(task);
    }

    /// Stops answering members and frees the member address (a promotion may serve there).
    fn stop_member_server(&self) {
        self.shared.stop_member_server();
    }

    /// The primary a planned switchover made of this replica, once (its caller owns it
    /// from then on; closing the replica leaves its store open).
    #[must_use]
    pub fn take_handed_over(&self) -> Option<crate::replication::primary::Primary> {
        let primary = lock(&self.shared.handed_over).take();
        if primary.is_some() {
            self.promoted
                .store(true, std::sync::atomic::Ordering::Release);
        }
        primary
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
            | ReplicationError::Diverged { .. }
            | ReplicationError::NeedsSnapshot(_)
            | ReplicationError::Fenced { .. }
            | ReplicationError::Version { .. }
    )
}

async fn follow(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(Duration::from_millis(50), shared.options.max_backoff);
    loop {
        if *shutdown.borrow() {
            return;
        }
        lock(&shared.state).state = LinkState::Connecting;
        let mut connected = false;
        let mut stop = shutdown.clone();
        // A close must not wait on a stalled primary: the session is dropped mid-await; a
        // kick ends it too, and the loop connects again (to a new address, maybe).
        let mut result = tokio::select! {
            result = session(&shared, &mut shutdown, &mut connected) => result,
            _ = stop.changed() => Ok(()),
            () = shared.kick.notified() => continue,
        };
        if let Err(ReplicationError::Diverged { fork_lsn, reason }) = result {
            result = match diverge::handle(&shared, fork_lsn, reason).await {
                // Resynced: an empty store follows again at once.
                Ok(()) => continue,
                Err(err) => Err(err),
            };
        }
        let stopped = {
            let mut state = lock(&shared.state);
            match result {
                Ok(()) => return,
                Err(err) => {
                    let stopped = is_final(&err);
                    if stopped {
                        tracing::error!(primary = %shared.primary(), error = %err, "replication stopped");
                    } else {
                        tracing::info!(primary = %shared.primary(), error = %err, "replication link lost; retrying");
                    }
                    state.state = if stopped {
                        LinkState::Failed
                    } else {
                        LinkState::Disconnected
                    };
                    state.last_error = Some(err.to_string());
                    stopped
                }
            }
        };
        if stopped {
            // Until re-pointed (a promotion elsewhere tells it where) or closed.
            tokio::select! {
                () = shared.kick.notified() => continue,
                _ = shutdown.changed() => return,
            }
        }
        if connected {
            backoff.reset();
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shared.kick.notified() => backoff.reset(),
            _ = shutdown.changed() => return,
        }
    }
}
