//! The checkpointer: a thread per open store that moves the overlay into redb and makes
//! redb durable (a checkpoint), so that no writer pays for either.
//!
//! The commit leader only appends to the log, applies each batch to the overlay and tells
//! the checkpointer what it added ([`Checkpointer::note`]). The checkpointer moves the
//! overlay into redb once it is full (a commit without fsync), and makes a durable commit
//! that records `applied_lsn` after `entries` entries, `bytes` bytes of log or `interval`
//! since the last one, whichever comes first: that bounds what a reopen after a crash
//! replays. Writers wait for it only when it is far behind (see [`Overlay::wait_for_room`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::overlay::Overlay;
use super::pace::Schedule;
use super::tables::Tables;
use crate::error::{Result, StoreError};

/// When the checkpointer makes redb durable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckpointPolicy {
    /// After this many entries...
    pub entries: u64,
    /// ...or this many bytes of log records...
    pub bytes: u64,
    /// ...or this long after the last checkpoint, if anything was written since. A store
    /// opened with `fsync=False` checkpoints too, syncing nothing (see `Tables::open`):
    /// without its checkpoints the log could never be dropped, and redb would free no
    /// page (it frees them only at durable commits).
    pub interval: Duration,
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
    /// Mirrors `Plan::failure.is_some()`, for the check on every read (no lock).
    failed: AtomicBool,
}

/// The writeback of a checkpoint keeps to the next one's progress: the furthest along of
/// entries, bytes of log and time since this one began. A store that begins to close, or
/// whose overlay is full (writers are about to wait for the move), has no time to spare.
impl Schedule for Shared {
    #[allow(clippy::cast_precision_loss)] // fractions of small counts
    fn progress(&self) -> f64 {
        let plan = self.lock();
        if plan.stopping || plan.move_wanted {
            return 1.0;
        }
        let policy = &self.policy;
        let by_entries = plan.entries as f64 / policy.entries.max(1) as f64;
        let by_bytes = plan.bytes as f64 / policy.bytes.max(1) as f64;
        let by_time = plan.last.elapsed().as_secs_f64() / policy.interval.as_secs_f64();
        by_entries.max(by_bytes).max(by_time)
    }
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
            failed: AtomicBool::new(false),
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
        if !self.shared.failed.load(Ordering::Acquire) {
            return None;
        }
        self.shared.lock().failure.clone()
    }

    /// Starts the thread again after [`Checkpointer::stop`], with the same policy and
    /// nothing due.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub(crate) fn restart(&mut self, tables: &Arc<Tables>, overlay: &Arc<Overlay>) -> Result<()> {
        let policy = self.shared.policy;
        *self = Self::start(Arc::clone(tables), Arc::clone(overlay), policy, false)?;
        Ok(())
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

fn run(shared: &Arc<Shared>, tables: &Tables, overlay: &Overlay) {
    let policy = &shared.policy;
    let mut plan = shared.lock();
    loop {
        if plan.stopping {
            return;
        }
        let due = plan.due(policy);
        if !due && !plan.move_wanted {
            // With nothing written, `note` wakes the thread when a checkpoint becomes due;
            // otherwise the interval may run out first.
            plan = if plan.entries == 0 {
                shared
                    .wake
                    .wait(plan)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            } else {
                let wait = policy.interval.saturating_sub(plan.last.elapsed());
                shared
                    .wake
                    .wait_timeout(plan, wait.max(Duration::from_millis(1)))
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0
            };
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
        // Its writeback keeps to the schedule (see `super::paced`); nobody waits for it.
        let paced = due.then(|| {
            tables
                .pace()
                .follow(Arc::clone(shared) as Arc<dyn Schedule>)
        });
        // A panic in it is an error (see `move_to_tables`): the store closes, and writers
        // never wait for room forever.
        let result = overlay.move_to_tables(tables, due);
        drop(paced);
        if due {
            tracing::debug!(elapsed = ?started.elapsed(), "checkpoint");
        }
        if due && result.is_ok() {
            // What the move freed (the overlay, evicted pages) leaves the process.
            super::trim::release_free_memory();
        }
        plan = shared.lock();
        if let Err(err) = result {
            tracing::error!(error = %err, "checkpoint failed; the store closes itself");
            plan.failure = Some(failure_cause(&err));
            shared.failed.store(true, Ordering::Release);
            return;
        }
    }
}

/// What a failed move or checkpoint tells the store's users: on a full disk, also what to
/// do about it (the tables' engine stops at its first failed write; the log has every
/// write that was acknowledged).
fn failure_cause(err: &crate::Error) -> String {
    let full = err
        .io_source()
        .and_then(std::io::Error::raw_os_error)
        .is_some_and(|errno| errno == libc::ENOSPC || errno == libc::EDQUOT);
    if full {
        format!(
            "{err}: the disk is full (every acknowledged write is in the log; free space, \
             then open the store again)"
        )
    } else {
        err.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::ops::Bound;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use proptest::prelude::*;

    use super::super::{Store, StoreOptions};
    use crate::codec::Op;
    use crate::log::memfs::MemFs;
    use crate::log::{Log, LogOptions};

    /// Checkpoints and moves as often as possible: after every other entry.
    fn busy_checkpoints() -> StoreOptions {
        StoreOptions {
            checkpoint_entries: 2,
            checkpoint_interval: Duration::from_millis(1),
            ..StoreOptions::default()
        }
    }

    fn put(table: &str, key: String, value: u64) -> Op {
        Op {
            table: table.to_owned(),
            key: key.into_bytes(),
            value: Some(value.to_le_bytes().to_vec()),
        }
    }

    fn delete(table: &str, key: String) -> Op {
        Op {
            table: table.to_owned(),
            key: key.into_bytes(),
            value: None,
        }
    }

    fn rows(store: &Store, table: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        store
            .scan(table, Bound::Unbounded, Bound::Unbounded, false, usize::MAX)
            .unwrap()
    }

    /// The keys of every entry a power loss would keep: what is durable in the log now.
    fn durable_keys(fs: &MemFs) -> BTreeSet<Vec<u8>> {
        let mut keys = BTreeSet::new();
        drop(
            Log::open(
                Box::new(fs.power_loss_image()),
                LogOptions::default(),
                0,
                |entry| {
                    keys.extend(entry.into_entry()?.ops.into_iter().map(|op| op.key));
                    Ok(())
                },
            )
            .unwrap(),
        );
        keys
    }

    /// While the checkpointer moves the overlay into redb and checkpoints after every
    /// other entry, readers scanning the tables see whole transactions only (pairs written
    /// together, bulk batches of 4096 rows), and every row they see was durable in the log.
    #[test]
    fn readers_never_see_a_write_before_it_is_durable_nor_half_a_transaction() {
        const BULK: usize = 4096;
        let dir = tempfile::tempdir().unwrap();
        let fs = MemFs::default();
        let log_fs = fs.clone();
        let store = Store::open_with(&dir.path().join("db"), busy_checkpoints(), |_| {
            Ok(Box::new(log_fs))
        })
        .unwrap();
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 0..120u64 {
                    let mut ops = vec![
                        put("pairs", format!("a{i}"), i),
                        put("pairs", format!("b{i}"), i),
                    ];
                    if i >= 3 {
                        ops.push(delete("pairs", format!("a{}", i - 3)));
                        ops.push(delete("pairs", format!("b{}", i - 3)));
                    }
                    store.commit(ops, None).unwrap();
                    if i % 40 == 0 {
                        let bulk = (0..BULK)
                            .map(|j| put("bulk", format!("{i}-{j}"), i))
                            .collect();
                        store.commit(bulk, None).unwrap();
                    }
                }
                done.store(true, Ordering::Release);
            });
            for _ in 0..2 {
                scope.spawn(|| {
                    let mut scans = 0u64;
                    while !done.load(Ordering::Acquire) {
                        let pairs = rows(&store, "pairs");
                        let mut by_index: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
                        for (key, value) in &pairs {
                            let index = String::from_utf8_lossy(&key[1..]).parse().unwrap();
                            let other = by_index.entry(index).or_insert_with(|| value.clone());
                            assert_eq!(other, value, "pair {index} holds two values");
                        }
                        let halves = pairs.len();
                        assert_eq!(halves % 2, 0, "half a transaction is visible: {pairs:?}");
                        let bulk = rows(&store, "bulk").len();
                        assert_eq!(
                            bulk % BULK,
                            0,
                            "part of a bulk batch is visible: {bulk} rows"
                        );
                        scans += 1;
                        if scans.is_multiple_of(8) {
                            let durable = durable_keys(&fs);
                            for (key, _) in &pairs {
                                assert!(durable.contains(key), "visible before durable: {key:?}");
                            }
                        }
                    }
                });
            }
        });
        store.close().unwrap();
    }

    /// The schedule a checkpoint's writeback keeps is the next one's progress: the
    /// furthest along of entries, bytes and time, and all the way when writers are about
    /// to wait or the store closes.
    #[test]
    fn the_schedule_is_the_furthest_along_of_entries_bytes_and_time() {
        use super::super::pace::Schedule;
        use super::{CheckpointPolicy, Plan, Shared};
        use std::sync::{Condvar, Mutex};
        use std::time::Instant;
        let shared = Shared {
            plan: Mutex::new(Plan {
                entries: 0,
                bytes: 0,
                last: Instant::now(),
                move_wanted: false,
                stopping: false,
                failure: None,
            }),
            wake: Condvar::new(),
            policy: CheckpointPolicy {
                entries: 100,
                bytes: 1000,
                interval: Duration::from_secs(3600),
            },
            failed: AtomicBool::new(false),
        };
        assert!(shared.progress() < 0.01);
        shared.lock().entries = 25;
        assert!((shared.progress() - 0.25).abs() < 0.01);
        shared.lock().bytes = 600;
        assert!((shared.progress() - 0.6).abs() < 0.01);
        shared.lock().move_wanted = true;
        assert!(shared.progress() >= 1.0);
        let mut plan = shared.lock();
        plan.move_wanted = false;
        plan.stopping = true;
        drop(plan);
        assert!(shared.progress() >= 1.0);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

        /// Under background checkpoints, every read after a commit equals a `BTreeMap`
        /// model, and so does the store reopened after a close or a drop (a crash of the
        /// process: the log is replayed over the last checkpoint).
        #[test]
        fn reads_match_a_model_while_checkpoints_run(
            writes in proptest::collection::vec((0u8..24, proptest::option::of(any::<u64>()), 0usize..3), 1..20),
            close_cleanly: bool,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db");
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let store = Store::open(&path, busy_checkpoints()).unwrap();
            for (key, value, copies) in &writes {
                // `copies` repeats the key in other rows of the same transaction; a large one
                // goes to redb directly, as a bulk load does.
                let mut ops = Vec::new();
                for copy in 0..[1, 2, 4096][*copies] {
                    let key = format!("{key:03}-{copy:05}");
                    ops.push(match value {
                        Some(value) => put("t", key, *value),
                        None => delete("t", key),
                    });
                }
                for op in &ops {
                    match &op.value {
                        Some(value) => model.insert(op.key.clone(), value.clone()),
                        None => model.remove(&op.key),
                    };
                }
                store.commit(ops, None).unwrap();
                let probe = format!("{key:03}-00000").into_bytes();
                let got = store.get_with("t", &probe, |v| v.map(<[u8]>::to_vec)).unwrap();
                prop_assert_eq!(got.as_ref(), model.get(&probe));
            }
            let expected: Vec<_> = model.into_iter().collect();
            prop_assert_eq!(rows(&store, "t"), expected.clone());
            if close_cleanly {
                store.close().unwrap();
            } else {
                drop(store);
            }
            let reopened = Store::open(&path, busy_checkpoints()).unwrap();
            prop_assert_eq!(rows(&reopened, "t"), expected);
            reopened.close().unwrap();
        }
    }
}
