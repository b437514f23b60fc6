//! Following a primary with any [`LogConsumer`], and the follow loop that a [`Replica`]
//! runs too: connect, follow until the link fails, back off, connect again; a fork is
//! handled as the owner's [`OnDiverge`] says.
//!
//! [`Replica`]: super::Replica

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use super::session::session;
use super::{diverge, lock, OnDiverge, ReplicaState, Shared};
use crate::error::{NetError, ReplicationError, Result};
use crate::follow::{LogConsumer, Role};
use crate::fork::Owner;
use crate::net::client::Backoff;
use crate::replication::status::LinkState;

/// How a [`Follower`] follows its primary.
#[derive(Debug, Clone)]
pub struct FollowerOptions {
    /// The primary's address.
    pub primary: String,
    /// Shared token (must match the primary's).
    pub token: Option<String>,
    /// Its name, as the primary lists it.
    pub name: String,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
}

/// A running follower of a primary's log that feeds a [`LogConsumer`] keeping no store (a
/// cache's invalidator): it never counts toward a quorum and holds no slot. A fresh one,
/// or one whose position the primary's log no longer holds, starts at the primary's
/// current LSN; on a fork it calls [`LogConsumer::resync`] and follows again from scratch,
/// never stopping. [`Follower::close`] (or dropping it) stops it.
///
/// It follows on a thread of its own, whose runtime runs this link only: the entries it
/// receives are applied and synced on that thread, between two reads of the socket. On
/// the process's shared runtime each batch had to hand the worker to another thread
/// (`block_in_place`, about 15 us on two cores, on every sync write's path; a sync put to a
/// replica in another process cost 3.5-4.0x an async put before, 2.9-3.5x after, in three
/// interleaved pairs of `benches/bench_sync.py`). Frames that arrive meanwhile wait in the
/// socket's buffer and are applied together next.
pub struct Follower {
    pub(super) shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    /// The follow thread, or why none runs.
    thread: Mutex<Thread>,
    /// The process that started the thread: a forked child has no such thread to join.
    owner: Owner,
}

/// The follow thread of a [`Follower`].
enum Thread {
    Running(JoinHandle<()>),
    /// Stopped by a promotion, which may start it again.
    Paused,
    /// Stopped by [`Follower::close`]: it never starts again.
    Closed,
}

impl Follower {
    /// Starts following `options.primary` with `consumer`.
    ///
    /// # Errors
    /// [`ReplicationError::Refused`] for a consumer whose role is [`Role::Replica`]: one
    /// that keeps a copy of the data follows as a [`super::Replica`].
    pub fn start(consumer: Arc<dyn LogConsumer>, options: FollowerOptions) -> Result<Self> {
        if consumer.role() != Role::Consumer {
            return Err(ReplicationError::Refused {
                reason: format!(
                    "{:?} keeps a copy of the data: it follows as a Replica, with a store",
                    options.name
                ),
            }
            .into());
        }
        let state = ReplicaState::connecting(0, 0, Vec::new(), Ok(None));
        let shared = Shared::new(consumer, options, OnDiverge::Resync, state, None, None);
        Self::spawn(shared)
    }

    /// Starts the follow loop of `shared` on its thread.
    ///
    /// # Errors
    /// [`NetError::Io`] if the operating system refuses to start a thread.
    pub(super) fn spawn(shared: Arc<Shared>) -> Result<Self> {
        let (shutdown, stop) = watch::channel(false);
        let thread = start_thread(Arc::clone(&shared), stop)?;
        Ok(Self {
            shared,
            shutdown,
            thread: Mutex::new(Thread::Running(thread)),
            owner: Owner::current(),
        })
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

    /// A copy of its link state.
    #[must_use]
    pub fn state(&self) -> ReplicaState {
        lock(&self.shared.state).clone()
    }

    /// Follows the primary at `address` from now on: the current link ends, and the next
    /// one resumes from the consumer's position there. Nothing changes if it already
    /// follows `address`.
    pub fn follow(&self, address: &str) {
        if self.shared.primary() != address {
            self.shared.repoint(address);
        }
    }

    /// Stops following and waits for the follow thread to end, so that nothing is applied
    /// after it returns; its state says [`LinkState::Closed`] from then on. Only a thread
    /// outside any runtime waits (the follow thread itself is inside its own); in one, the
    /// follow loop stops at its next await. Closing twice does nothing more.
    pub fn close(&self) {
        self.stop(Thread::Closed);
        lock(&self.shared.state).state = LinkState::Closed;
    }

    /// Stops following until [`Follower::restart`], as [`Follower::close`] does (a
    /// promotion, which follows again if it does not win).
    pub(super) fn pause(&self) {
        self.stop(Thread::Paused);
    }

    fn stop(&self, then: Thread) {
        let thread = {
            let mut thread = lock(&self.thread);
            self.shutdown.send_replace(true);
            // Once closed it stays closed, whatever stops it again.
            if matches!(*thread, Thread::Closed) {
                None
            } else if let Thread::Running(handle) = std::mem::replace(&mut *thread, then) {
                Some(handle)
            } else {
                None
            }
        };
        let outside = tokio::runtime::Handle::try_current().is_err();
        if let (Some(thread), true, false) = (thread, outside, self.owner.inherited()) {
            let _ = thread.join();
        }
    }

    /// Follows again after [`Follower::pause`] (a promotion that did not win): to the same
    /// primary. Nothing happens once closed, or while it runs. A thread that cannot start
    /// leaves the link failed, with the cause.
    pub(super) fn restart(&self) {
        let mut thread = lock(&self.thread);
        if !matches!(*thread, Thread::Paused) {
            return;
        }
        self.shutdown.send_replace(false);
        match start_thread(Arc::clone(&self.shared), self.shutdown.subscribe()) {
            Ok(handle) => *thread = Thread::Running(handle),
            Err(err) => {
                tracing::error!(error = %err, "cannot follow the primary again");
                let mut state = lock(&self.shared.state);
                state.state = LinkState::Failed;
                state.last_error = Some(err.to_string());
            }
        }
    }
}

/// Runs the follow loop of `shared` on a new thread, in a runtime of its own.
fn start_thread(
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> std::result::Result<JoinHandle<()>, NetError> {
    let failed = |source| NetError::Io {
        context: "cannot start the thread that follows the primary".into(),
        source,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(failed)?;
    // The loop runs as a task, not as the root future: after a yield the scheduler polls
    // the root future again before any task the driver woke, so the session's reader
    // would not get to drain the socket (see `session`).
    let run = move || {
        runtime.block_on(async move {
            if let Err(err) = tokio::spawn(follow(shared, shutdown)).await {
                tracing::error!(error = %err, "the follow loop panicked");
            }
        });
    };
    std::thread::Builder::new()
        .name("replikv-follow".into())
        .spawn(run)
        .map_err(failed)
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.close();
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

/// Makes durable what a session that failed applied: it syncs beside its appends, and
/// what it applied after its last sync began would wait for the next session's first sync,
/// which a primary that died never gives (the replica's flushed LSN stayed behind its
/// applied one).
async fn settle(shared: &Arc<Shared>) {
    let consumer = Arc::clone(&shared.consumer);
    match tokio::task::spawn_blocking(move || consumer.sync()).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "cannot sync what the lost link applied"),
        Err(err) => tracing::warn!(error = %err, "the sync of what the lost link applied stopped"),
    }
}

/// Follows until `shutdown`: each session runs until its link fails; a failure that
/// retrying cannot mend waits for a re-point.
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
        let result = tokio::select! {
            result = session(&shared, &mut shutdown, &mut connected) => result,
            _ = stop.changed() => Ok(()),
            () = shared.kick.notified() => continue,
        };
        if result.is_err() {
            settle(&shared).await;
        }
        let failure = match result {
            Ok(()) => return,
            // Resynced: it follows again from scratch, after the backoff like any other
            // attempt, so that a primary that keeps refusing it is not asked in a hot loop.
            Err(ReplicationError::Diverged { fork_lsn, reason }) => {
                diverge::handle(&shared, fork_lsn, reason).await.err()
            }
            Err(err) => Some(err),
        };
        // A disk with no room is asked again after a wait that grows, not at once.
        let no_room = matches!(failure, Some(ReplicationError::NoRoom(_)));
        if let Some(err) = failure {
            let stopped = is_final(&err);
            if stopped {
                tracing::error!(primary = %shared.primary(), error = %err, "replication stopped");
            } else if no_room {
                tracing::warn!(primary = %shared.primary(), error = %err, "replication paused");
            } else {
                tracing::info!(primary = %shared.primary(), error = %err, "replication link lost; retrying");
            }
            {
                let mut state = lock(&shared.state);
                state.state = if stopped {
                    LinkState::Failed
                } else {
                    LinkState::Disconnected
                };
                state.last_error = Some(err.to_string());
            }
            if stopped {
                // Until re-pointed (a promotion elsewhere tells it where) or closed.
                tokio::select! {
                    () = shared.kick.notified() => continue,
                    _ = shutdown.changed() => return,
                }
            }
        }
        if connected && !no_room {
            backoff.reset();
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shared.kick.notified() => backoff.reset(),
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    /// A follower of a port where nothing listens (it retries, as a replica of a dead
    /// primary does), on a follower store.
    fn follower(dir: &std::path::Path) -> Follower {
        let options = StoreOptions {
            follower: true,
            ..StoreOptions::default()
        };
        let store = Store::open(dir.join("replica"), options).expect("the store opens");
        let options = FollowerOptions {
            primary: "127.0.0.1:1".into(),
            token: None,
            name: "r1".into(),
            max_backoff: Duration::from_millis(20),
        };
        let state = ReplicaState::connecting(0, 0, Vec::new(), Ok(None));
        let shared = Shared::new(Arc::new(store), options, OnDiverge::Stop, state, None, None);
        Follower::spawn(shared).expect("the thread starts")
    }

    fn running(follower: &Follower) -> bool {
        matches!(*lock(&follower.thread), Thread::Running(_))
    }

    #[test]
    fn a_paused_follower_restarts_and_a_closed_one_never_does() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let follower = follower(dir.path());
        follower.pause();
        assert!(!running(&follower));
        follower.restart();
        assert!(running(&follower), "a promotion that lost follows again");
        follower.restart();
        assert!(
            running(&follower),
            "a restart of a running follower changes nothing"
        );
        // A close while a promotion has it paused: the promotion's restart must not start
        // a thread on a store that is being closed.
        follower.pause();
        follower.close();
        follower.restart();
        assert!(!running(&follower));
        follower.pause();
        follower.restart();
        assert!(!running(&follower), "closed for good");
    }
}
