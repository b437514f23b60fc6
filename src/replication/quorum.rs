//! Quorum acknowledgement of sync writes: which LSN a quorum of replicas holds durably, and
//! the waiters that sync writers block on until it covers their LSN.
//!
//! Acks are cumulative: one ack that moves the quorum LSN releases every writer at or below
//! it at once (group commit), never one round trip per writer. Who counts (replicas that
//! fsync; never consumers) is the primary's machine's decision: the waiters only mirror
//! the [`QuorumView`] it publishes after each change.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::wishes::SyncWishes;
use crate::error::{ReplicationError, Result};
use crate::store::{Durability, OnTimeout, SyncReplication};

/// The highest LSN that at least `quorum` of the given flushed LSNs reach: the
/// `quorum`-th highest of them, or 0 when there are fewer than `quorum` (or `quorum` is 0).
#[must_use]
pub fn quorum_lsn(flushed: impl IntoIterator<Item = u64>, quorum: usize) -> u64 {
    let mut flushed: Vec<u64> = flushed.into_iter().collect();
    if quorum == 0 || flushed.len() < quorum {
        return 0;
    }
    let (_, kth, _) = flushed.select_nth_unstable_by(quorum - 1, |a, b| b.cmp(a));
    *kth
}

thread_local! {
    /// The sync write this thread is about to wait for: the address of the waiters it
    /// waits on, and its LSN (see [`SyncWaiters::waits_here`]).
    static ABOUT_TO_WAIT: Cell<(usize, u64)> = const { Cell::new((0, 0)) };
}

/// How a primary treats sync writes.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Replicas that must hold a sync write durably before it returns (at least 1).
    pub quorum: usize,
    /// How long a sync write waits for them.
    pub sync_timeout: Duration,
    /// What it does then.
    pub on_timeout: OnTimeout,
    /// Per-table default durability.
    pub table_modes: HashMap<String, Durability>,
    /// Durability of writes to the other tables.
    pub default_durability: Durability,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            quorum: 1,
            sync_timeout: Duration::from_secs(5),
            on_timeout: OnTimeout::Raise,
            table_modes: HashMap::new(),
            default_durability: Durability::Async,
        }
    }
}

/// The quorum as the primary's machine last computed it: the only input of the waiters,
/// so that the rules (who counts, what the quorum LSN is) live in one place, the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumView {
    /// The highest LSN that a quorum of counting replicas holds durably.
    pub quorum_lsn: u64,
    /// Every replica whose acks count (connected or not) and the LSN it acknowledged, by
    /// name.
    pub acked: Vec<(String, u64)>,
    /// Replicas that fsync and joined while this primary served, whose acks count once
    /// every member has recorded that they joined: registered, so a sync write waits for
    /// them rather than being refused.
    pub joining: usize,
}

impl QuorumView {
    fn acked_by(&self, lsn: u64) -> Vec<String> {
        self.acked
            .iter()
            .filter(|(_, acked)| *acked >= lsn)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// The sync writers waiting on acks; implements [`SyncReplication`] for the store a
/// primary serves.
pub struct SyncWaiters {
    options: SyncOptions,
    view: Mutex<QuorumView>,
    /// Signalled whenever the view changes: what `wait_for` callers wait on.
    changed: Condvar,
    /// Signalled only when the quorum LSN rises: what sync writers wait on. With more
    /// replicas than the quorum, most acks change the view without releasing anyone (the
    /// slower replicas'); waking every sync writer for each of them cost a context switch
    /// per ack on the writers' cores.
    released: Condvar,
    /// The LSNs sync writers wait for: shipping watches them become visible, so that a
    /// sync write never waits for the ship interval.
    wishes: SyncWishes,
    /// The newer epoch this primary learned of (0 while it is not deposed): every sync
    /// write not acknowledged yet fails with [`ReplicationError::Deposed`].
    fenced: AtomicU64,
    /// Set once the primary stopped: no acknowledgement can come any more, so every sync
    /// writer still waiting fails at once rather than at its timeout.
    stopped: AtomicBool,
    /// Callers asleep on a condition variable: a test waits for its caller to be asleep
    /// before it publishes, so the wake-up is what it exercises.
    #[cfg(test)]
    asleep: std::sync::atomic::AtomicUsize,
}

impl SyncWaiters {
    /// No replica yet.
    #[must_use]
    pub fn new(options: SyncOptions) -> Self {
        Self {
            options,
            view: Mutex::new(QuorumView::default()),
            changed: Condvar::new(),
            released: Condvar::new(),
            wishes: SyncWishes::default(),
            fenced: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            #[cfg(test)]
            asleep: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The options it was made with.
    #[must_use]
    pub fn options(&self) -> &SyncOptions {
        &self.options
    }

    fn lock(&self) -> MutexGuard<'_, QuorumView> {
        // Nothing panics while the lock is held; a poisoned lock is still consistent.
        self.view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the machine's latest view and wakes every waiter it may release.
    pub fn publish(&self, view: QuorumView) {
        let mut current = self.lock();
        if *current == view {
            return;
        }
        let rises = view.quorum_lsn > current.quorum_lsn;
        *current = view;
        drop(current);
        self.changed.notify_all();
        if rises {
            self.released.notify_all();
        }
    }

    fn wake_all(&self) {
        self.changed.notify_all();
        self.released.notify_all();
    }

    /// The primary learned of the newer `epoch`: it is deposed, and every sync writer
    /// still waiting fails (no quorum can form for it any more).
    pub fn fence(&self, epoch: u64) {
        let view = self.lock();
        self.fenced.fetch_max(epoch, Ordering::AcqRel);
        drop(view);
        self.wake_all();
    }

    /// The primary stopped: every sync writer still waiting fails now (its write is
    /// committed here; whether a replica holds it is unknown).
    pub fn stop(&self) {
        let view = self.lock();
        self.stopped.store(true, Ordering::Release);
        drop(view);
        self.wake_all();
    }

    /// Whether this primary learned it is deposed (see [`Self::fence`]).
    #[must_use]
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire) > 0
    }

    fn fenced_error(&self) -> Option<ReplicationError> {
        let epoch = self.fenced.load(Ordering::Acquire);
        (epoch > 0).then(|| ReplicationError::Fenced {
            epoch,
            reason: format!(
                "this primary was deposed (epoch {epoch} began elsewhere): it takes no sync \
                 write, and nothing of this one was committed"
            ),
        })
    }

    /// The highest visible LSN a sync writer waits for, as it rises.
    #[must_use]
    pub fn wanted(&self) -> watch::Receiver<u64> {
        self.wishes.subscribe()
    }

    /// Entries up to `lsn` are visible: returns the highest LSN among them a sync writer
    /// waits for and the links have not heard of yet (see [`SyncWaiters::announce`]).
    #[must_use]
    pub fn visible(&self, lsn: u64) -> Option<u64> {
        self.wishes.visible(lsn)
    }

    /// Entries up to `lsn` may be shipped: the links hear of the sync writes among them.
    pub fn shippable(&self, lsn: u64) {
        if let Some(wanted) = self.visible(lsn) {
            self.announce(wanted, true);
        }
    }

    /// Whether this thread is a sync writer about to wait here for an entry up to `lsn`
    /// (it took its LSN, and has not waited yet): the thread that may ship it itself.
    /// Answers `true` once per sync write (the mark is taken).
    #[must_use]
    pub fn waits_here(&self, lsn: u64) -> bool {
        let (waiters, wanted) = ABOUT_TO_WAIT.get();
        let here = waiters == std::ptr::from_ref(self).addr() && (1..=lsn).contains(&wanted);
        if here {
            ABOUT_TO_WAIT.set((0, 0));
        }
        here
    }

    /// Ships `lsn` as soon as it is visible, as for a sync writer's entry, for a caller
    /// that is not one (it does not wait on this thread).
    pub fn ship_at_once(&self, lsn: u64) {
        self.wishes.wish(lsn);
    }

    /// Tells the links a sync writer waits for `lsn`, waking those waiting for such news
    /// if `wake` (not when they were served already).
    pub fn announce(&self, lsn: u64, wake: bool) {
        self.wishes.announce(lsn, wake);
    }

    /// How many replicas that fsync are known (and so can count toward the quorum), the
    /// ones still joining included.
    #[must_use]
    pub fn counting(&self) -> usize {
        let view = self.lock();
        view.acked.len() + view.joining
    }

    /// Waits on `signal` until `done` holds for the view or `timeout` passes; returns the
    /// last view.
    fn wait_until(
        &self,
        signal: &Condvar,
        timeout: Duration,
        done: impl Fn(&QuorumView) -> bool,
    ) -> QuorumView {
        let deadline = Instant::now().checked_add(timeout);
        let mut view = self.lock();
        loop {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if done(&view)
                || left.is_zero()
                || self.fenced.load(Ordering::Acquire) > 0
                || self.stopped.load(Ordering::Acquire)
            {
                return view.clone();
            }
            // Counted under the lock: a publisher that sees the count waits on that lock
            // until this caller is asleep.
            #[cfg(test)]
            self.asleep.fetch_add(1, Ordering::SeqCst);
            view = signal
                .wait_timeout(view, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
            #[cfg(test)]
            self.asleep.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits up to `timeout` until `replicas` counting replicas acked `lsn`; returns how
    /// many have (like Redis `WAIT`).
    #[must_use]
    pub fn wait_count(&self, lsn: u64, replicas: usize, timeout: Duration) -> usize {
        let view = self.wait_until(&self.changed, timeout, |v| {
            v.acked_by(lsn).len() >= replicas
        });
        view.acked_by(lsn).len()
    }
}

impl SyncReplication for SyncWaiters {
    fn default_for(&self, table: &str) -> Durability {
        self.options
            .table_modes
            .get(table)
            .copied()
            .unwrap_or(self.options.default_durability)
    }

    fn check_sync(&self) -> Result<()> {
        if let Some(fenced) = self.fenced_error() {
            return Err(fenced.into());
        }
        let counting = self.counting();
        let quorum = self.options.quorum;
        if counting < quorum {
            return Err(ReplicationError::SyncUnavailable(format!(
                "the quorum is {quorum} but only {counting} replica(s) that fsync are \
                 registered (replicas with fsync=False and consumers never count): connect \
                 more replicas, or lower quorum="
            ))
            .into());
        }
        Ok(())
    }

    fn will_wait(&self, lsn: u64) {
        ABOUT_TO_WAIT.set((std::ptr::from_ref(self).addr(), lsn));
        self.wishes.wish(lsn);
    }

    fn wait_quorum(&self, lsn: u64, patience: Duration) -> Result<Option<Vec<String>>> {
        ABOUT_TO_WAIT.set((0, 0));
        let view = self.wait_until(&self.released, patience, |v| v.quorum_lsn >= lsn);
        if view.quorum_lsn >= lsn {
            // Acknowledged by a quorum before or after a deposition, the write is on
            // enough replicas for any promotion to find it.
            return Ok(Some(view.acked_by(lsn)));
        }
        let epoch = self.fenced.load(Ordering::Acquire);
        if epoch > 0 {
            return Err(ReplicationError::Deposed {
                epoch,
                lsn,
                acked_by: view.acked_by(lsn),
            }
            .into());
        }
        if self.stopped.load(Ordering::Acquire) {
            return Err(ReplicationError::Stopped {
                lsn,
                acked_by: view.acked_by(lsn),
            }
            .into());
        }
        Ok(None)
    }

    fn acked_by(&self, lsn: u64) -> Vec<String> {
        self.lock().acked_by(lsn)
    }

    fn sync_timeout(&self) -> Duration {
        self.options.sync_timeout
    }

    fn on_timeout(&self) -> OnTimeout {
        self.options.on_timeout
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    /// The model: the largest LSN that at least `quorum` acks reach, found by trying each.
    fn model(flushed: &[u64], quorum: usize) -> u64 {
        if quorum == 0 {
            return 0;
        }
        flushed
            .iter()
            .copied()
            .filter(|&candidate| flushed.iter().filter(|&&f| f >= candidate).count() >= quorum)
            .max()
            .unwrap_or(0)
    }

    proptest! {
        #[test]
        fn quorum_lsn_is_the_highest_lsn_that_a_quorum_of_acks_reach(
            flushed in proptest::collection::vec(0u64..50, 0..8),
            quorum in 0usize..10,
        ) {
            prop_assert_eq!(quorum_lsn(flushed.iter().copied(), quorum), model(&flushed, quorum));
        }
    }

    fn waiters(quorum: usize) -> Arc<SyncWaiters> {
        Arc::new(SyncWaiters::new(SyncOptions {
            quorum,
            ..SyncOptions::default()
        }))
    }

    fn view(quorum: usize, acked: &[(&str, u64)]) -> QuorumView {
        QuorumView {
            quorum_lsn: quorum_lsn(acked.iter().map(|(_, lsn)| *lsn), quorum),
            acked: acked
                .iter()
                .map(|(n, lsn)| ((*n).to_owned(), *lsn))
                .collect(),
            joining: 0,
        }
    }

    #[test]
    fn one_ack_that_completes_the_quorum_releases_every_waiter_at_or_below_it() {
        let waiters = waiters(2);
        waiters.publish(view(2, &[("a", 0), ("b", 0), ("c", 0)]));
        let sync_writers: Vec<_> = (1..=40u64)
            .map(|lsn| {
                let waiters = Arc::clone(&waiters);
                std::thread::spawn(move || {
                    waiters.wait_quorum(lsn, Duration::from_secs(30)).unwrap()
                })
            })
            .collect();
        waiters.publish(view(2, &[("a", 40), ("b", 0), ("c", 0)]));
        assert!(
            waiters.wait_quorum(1, Duration::ZERO).unwrap().is_none(),
            "one ack of two is not a quorum"
        );
        waiters.publish(view(2, &[("a", 40), ("b", 0), ("c", 40)]));
        for writer in sync_writers {
            let acked_by = writer.join().expect("a waiter never panics");
            assert_eq!(acked_by, Some(vec!["a".to_owned(), "c".to_owned()]));
        }
    }

    /// Waits (bounded) until one caller sleeps on a condition variable of `waiters`.
    fn until_asleep(waiters: &SyncWaiters) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while waiters.asleep.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the caller never went to sleep");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// An ack that leaves the quorum LSN where it was releases no sync writer, but it
    /// still reaches a `wait_for` caller counting the replicas that hold an LSN.
    #[test]
    fn an_ack_that_moves_no_quorum_still_reaches_a_wait_for_caller() {
        let waiters = waiters(1);
        waiters.publish(view(1, &[("a", 10), ("b", 0)]));
        let (counted, count) = std::sync::mpsc::channel();
        let waiting = {
            let waiters = Arc::clone(&waiters);
            std::thread::spawn(move || {
                let _ = counted.send(waiters.wait_count(10, 2, Duration::from_secs(3600)));
            })
        };
        until_asleep(&waiters);
        waiters.publish(view(1, &[("a", 10), ("b", 10)]));
        assert_eq!(
            count.recv_timeout(Duration::from_secs(60)),
            Ok(2),
            "the wait_for caller was never woken by the second replica's ack"
        );
        waiting.join().expect("a waiter never panics");
    }

    #[test]
    fn a_waiter_past_the_quorum_lsn_keeps_waiting() {
        let waiters = waiters(1);
        waiters.publish(view(1, &[("a", 5)]));
        assert_eq!(
            waiters.wait_quorum(5, Duration::ZERO).unwrap(),
            Some(vec!["a".to_owned()])
        );
        assert_eq!(
            waiters.wait_quorum(6, Duration::from_millis(1)).unwrap(),
            None
        );
    }

    #[test]
    fn a_deposed_primary_fails_its_waiting_sync_writers_but_keeps_what_a_quorum_holds() {
        let waiters = Arc::new(waiters(1));
        waiters.publish(view(1, &[("a", 5)]));
        let waiting = {
            let waiters = Arc::clone(&waiters);
            std::thread::spawn(move || waiters.wait_quorum(9, Duration::from_secs(30)))
        };
        // Once the writer is blocked, depose the primary: it fails at once, not at 30 s.
        until_asleep(&waiters);
        waiters.fence(4);
        let outcome = waiting.join().expect("a waiter never panics");
        assert!(
            matches!(
                &outcome,
                Err(crate::Error::Replication(ReplicationError::Deposed {
                    epoch: 4,
                    lsn: 9,
                    acked_by,
                })) if acked_by.is_empty()
            ),
            "{outcome:?}"
        );
        assert_eq!(
            waiters.wait_quorum(5, Duration::ZERO).unwrap(),
            Some(vec!["a".to_owned()]),
            "a write a quorum holds stays acknowledged"
        );
        assert!(matches!(
            waiters.check_sync(),
            Err(crate::Error::Replication(ReplicationError::Fenced { .. }))
        ));
    }

    #[test]
    fn sync_is_refused_without_enough_counting_replicas() {
        let waiters = waiters(1);
        assert!(
            waiters.check_sync().is_err(),
            "no counting replica is known"
        );
        assert_eq!(waiters.wait_count(9, 1, Duration::ZERO), 0);
        waiters.publish(view(1, &[("durable", 9)]));
        assert!(waiters.check_sync().is_ok());
        assert_eq!(waiters.wait_count(9, 1, Duration::ZERO), 1);
        waiters.publish(view(1, &[]));
        assert!(
            waiters.check_sync().is_err(),
            "a dropped slot no longer counts"
        );
    }

    #[test]
    fn table_modes_override_the_default_durability() {
        let waiters = SyncWaiters::new(SyncOptions {
            table_modes: HashMap::from([("consent".to_owned(), Durability::Sync)]),
            ..SyncOptions::default()
        });
        assert_eq!(waiters.default_for("consent"), Durability::Sync);
        assert_eq!(waiters.default_for("events"), Durability::Async);
    }
}
