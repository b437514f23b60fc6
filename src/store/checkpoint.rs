//! The checkpointer: a thread per open store that moves the overlay into redb and makes
//! redb durable (a checkpoint), so that no writer pays for either.
//!
//! The commit leader only appends to the log, applies each batch to the overlay and tells
//! the checkpointer what it added ([`Checkpointer::note`]). The checkpointer moves the
//! overlay into redb once it is full (a commit without fsync), and makes a durable commit
//! that records `applied_lsn` after `entries` entries, `bytes` bytes of log or `interval`
//! since the last one, whichever comes first: that bounds what a reopen after a crash
//! replays. Writers wait for it only when it is far behind (see [`Overlay::wait_for_room`]).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::overlay::Overlay;
use super::tables::Tables;
use crate::error::{Result, StoreError};

/// When the checkpointer makes redb durable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckpointPolicy {
    /// After this many entries...
    pub entries: u64,
    /// ...or this many bytes of log records...
    pub bytes: u64,
    /// ...or this long after the last checkpoint, if anything was written since.
    pub interval: Duration,
    /// `false` (a store opened with `fsync=False`): moves only, never an fsync.
    pub fsync: bool,
}

/// Bytes of log after which a checkpoint is due, whatever the entry count: a bulk load
/// writes few, large entries, and replaying 4 MiB of them takes tens of milliseconds.
pub(crate) const CHECKPOINT_BYTES: u64 = 4 << 20;

struct Plan {
    /// Entries and bytes of log added since the last checkpoint began.
    entries: u64,
    bytes: u64,
    last: Instant,
    /// The overlay is full: move it even if no checkpoint is due.
    move_wanted: bool,
    stopping: bool,
    /// Why a move or checkpoint failed: the store closes itself with it.
    failure: Option<String>,
}

impl Plan {
    fn due(&self, policy: &CheckpointPolicy) -> bool {
        self.entries >= policy.entries
            || self.bytes >= policy.bytes
            || (self.entries > 0 && self.last.elapsed() >= policy.interval)
    }
}

struct Shared {
    plan: Mutex<Plan>,
    wake: Condvar,
    policy: CheckpointPolicy,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Plan> {
        // Nothing panics while the plan is locked (the work runs outside it).
        self.plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The checkpointer of one open store; dropping it stops its thread (after the move in
/// progress, if any).
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread; `due` asks for a checkpoint at once (after a replay).
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub(crate) fn start(
        tables: Arc<Tables>,
        overlay: Arc<Overlay>,
        policy: CheckpointPolicy,
        due: bool,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            plan: Mutex::new(Plan {
                entries: u64::from(due),
                bytes: if due { policy.bytes } else { 0 },
                last: Instant::now(),
                move_wanted: false,
                stopping: false,
                failure: None,
            }),
            wake: Condvar::new(),
            policy,
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("replikv-checkpoint".to_owned())
                .spawn(move || run(&shared, &tables, &overlay))
                .map_err(|source| StoreError::Io {
                    context: "cannot start the checkpoint thread",
                    path: std::path::PathBuf::new(),
                    source,
                })?
        };
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// The leader added `entries` entries of `bytes` bytes of log; `full`: the overlay
    /// should move into redb now. Wakes the thread only when there is work for it.
    pub(crate) fn note(&self, entries: u64, bytes: u64, full: bool) {
        let mut plan = self.shared.lock();
        plan.entries += entries;
        plan.bytes += bytes;
        plan.move_wanted |= full;
        if plan.move_wanted || plan.due(&self.shared.policy) {
            drop(plan);
            self.shared.wake.notify_one();
        }
    }

    /// Why the checkpointer stopped on a failure, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        self.shared.lock().failure.clone()
    }

    /// Stops the thread once its current move, if any, is done, and waits for it.
    pub(crate) fn stop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // The thread catches its panics (see `run`): joining cannot fail.
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(shared: &Shared, tables: &Tables, overlay: &Overlay) {
    let policy = &shared.policy;
    let mut plan = shared.lock();
    loop {
        if plan.stopping {
            return;
        }
        let due = plan.due(policy);
        if !due && !plan.move_wanted {
            let wait = policy.interval.saturating_sub(plan.last.elapsed());
            plan = shared
                .wake
                .wait_timeout(plan, wait.max(Duration::from_millis(1)))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
            continue;
        }
        // What is written from here on counts toward the next checkpoint.
        if due {
            plan.entries = 0;
            plan.bytes = 0;
            plan.last = Instant::now();
        }
        plan.move_wanted = false;
        drop(plan);
        let started = Instant::now();
        // A panic here must close the store, not leave writers waiting for room forever.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            overlay.move_to_tables(tables, due && policy.fsync)
        }))
        .unwrap_or_else(|_| {
            Err(StoreError::Corrupt {
                reason: "the checkpoint thread panicked".to_owned(),
            }
            .into())
        });
        if due {
            tracing::debug!(elapsed = ?started.elapsed(), "checkpoint");
        }
        plan = shared.lock();
        if let Err(err) = result {
            tracing::error!(error = %err, "checkpoint failed; the store closes itself");
            plan.failure = Some(err.to_string());
            return;
        }
    }
}
