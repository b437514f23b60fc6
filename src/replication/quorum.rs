//! Quorum acknowledgement of sync writes: which LSN a quorum of replicas holds durably, and
//! the waiters that sync writers block on until it covers their LSN.
//!
//! Acks are cumulative: one ack that moves the quorum LSN releases every writer at or below
//! it at once (group commit), never one round trip per writer. Only replicas that fsync
//! count; consumers are never members, and a replica with `fsync=False` is a member that
//! does not count.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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

/// A registered replica, as the quorum sees it.
#[derive(Debug, Clone, Copy)]
struct Member {
    /// The last LSN it acknowledged as durable in its log.
    flushed_lsn: u64,
    /// Whether it fsyncs, so that its acks count toward the quorum.
    counts: bool,
}

#[derive(Default)]
struct Members {
    by_name: BTreeMap<String, Member>,
    /// `quorum_lsn` of the counting members, kept current on every change.
    quorum_lsn: u64,
}

impl Members {
    fn recompute(&mut self, quorum: usize) -> u64 {
        let counting = self.by_name.values().filter(|m| m.counts);
        self.quorum_lsn = quorum_lsn(counting.map(|m| m.flushed_lsn), quorum);
        self.quorum_lsn
    }

    fn acked_by(&self, lsn: u64) -> Vec<String> {
        self.by_name
            .iter()
            .filter(|(_, m)| m.counts && m.flushed_lsn >= lsn)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// The replicas' acks and the sync writers waiting on them; implements
/// [`SyncReplication`] for the store a primary serves.
pub struct SyncWaiters {
    options: SyncOptions,
    members: Mutex<Members>,
    /// Signalled whenever the quorum LSN or a counting member's flushed LSN moves.
    acked: Condvar,
}

impl SyncWaiters {
    /// No member yet.
    #[must_use]
    pub fn new(options: SyncOptions) -> Self {
        Self {
            options,
            members: Mutex::new(Members::default()),
            acked: Condvar::new(),
        }
    }

    /// The options it was made with.
    #[must_use]
    pub fn options(&self) -> &SyncOptions {
        &self.options
    }

    fn lock(&self) -> MutexGuard<'_, Members> {
        // Nothing panics while the lock is held; a poisoned lock is still consistent.
        self.members
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers (or re-registers, after a reconnection) the replica `name`, durable up to
    /// `flushed_lsn`; `counts` says whether it fsyncs.
    pub fn register(&self, name: &str, counts: bool, flushed_lsn: u64) {
        let mut members = self.lock();
        members.by_name.insert(
            name.to_owned(),
            Member {
                flushed_lsn,
                counts,
            },
        );
        members.recompute(self.options.quorum);
        drop(members);
        self.acked.notify_all();
    }

    /// Forgets a replica whose slot was dropped.
    pub fn forget(&self, name: &str) {
        let mut members = self.lock();
        if members.by_name.remove(name).is_some() {
            members.recompute(self.options.quorum);
        }
    }

    /// Records a cumulative ack of `name` and releases every waiter the quorum now covers.
    pub fn acknowledge(&self, name: &str, flushed_lsn: u64) {
        let mut members = self.lock();
        let Some(member) = members.by_name.get_mut(name) else {
            return;
        };
        if !member.counts || flushed_lsn <= member.flushed_lsn {
            return;
        }
        member.flushed_lsn = flushed_lsn;
        members.recompute(self.options.quorum);
        drop(members);
        // `wait_count` waiters care about single members too, not only the quorum LSN.
        self.acked.notify_all();
    }

    /// How many registered replicas fsync (and so can count toward the quorum).
    #[must_use]
    pub fn counting(&self) -> usize {
        self.lock().by_name.values().filter(|m| m.counts).count()
    }

    /// Waits up to `timeout` until `replicas` counting replicas acked `lsn`; returns how
    /// many have (like Redis `WAIT`).
    #[must_use]
    pub fn wait_count(&self, lsn: u64, replicas: usize, timeout: Duration) -> usize {
        let deadline = Instant::now().checked_add(timeout);
        let mut members = self.lock();
        loop {
            let acked = members.acked_by(lsn).len();
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if acked >= replicas || left.is_zero() {
                return acked;
            }
            members = self
                .acked
                .wait_timeout(members, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
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

    fn wait_quorum(&self, lsn: u64, patience: Duration) -> Option<Vec<String>> {
        let deadline = Instant::now().checked_add(patience);
        let mut members = self.lock();
        loop {
            if members.quorum_lsn >= lsn {
                return Some(members.acked_by(lsn));
            }
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return None;
            }
            members = self
                .acked
                .wait_timeout(members, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
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

    #[test]
    fn one_ack_that_completes_the_quorum_releases_every_waiter_at_or_below_it() {
        let waiters = waiters(2);
        for name in ["a", "b", "c"] {
            waiters.register(name, true, 0);
        }
        let sync_writers: Vec<_> = (1..=40u64)
            .map(|lsn| {
                let waiters = Arc::clone(&waiters);
                std::thread::spawn(move || waiters.wait_quorum(lsn, Duration::from_secs(30)))
            })
            .collect();
        waiters.acknowledge("a", 40);
        assert!(
            waiters.wait_quorum(1, Duration::ZERO).is_none(),
            "one ack of two is not a quorum"
        );
        waiters.acknowledge("c", 40);
        for writer in sync_writers {
            let acked_by = writer.join().expect("a waiter never panics");
            assert_eq!(acked_by, Some(vec!["a".to_owned(), "c".to_owned()]));
        }
    }

    #[test]
    fn a_waiter_past_the_quorum_lsn_keeps_waiting() {
        let waiters = waiters(1);
        waiters.register("a", true, 0);
        waiters.acknowledge("a", 5);
        assert_eq!(
            waiters.wait_quorum(5, Duration::ZERO),
            Some(vec!["a".to_owned()])
        );
        assert_eq!(waiters.wait_quorum(6, Duration::from_millis(1)), None);
    }

    #[test]
    fn replicas_that_do_not_fsync_never_count_and_sync_is_refused_without_enough() {
        let waiters = waiters(1);
        waiters.register("nofsync", false, 0);
        waiters.acknowledge("nofsync", 9);
        assert!(
            waiters.check_sync().is_err(),
            "no counting replica is registered"
        );
        assert_eq!(waiters.wait_count(9, 1, Duration::ZERO), 0);
        assert!(waiters.acked_by(1).is_empty());
        waiters.register("durable", true, 0);
        assert!(waiters.check_sync().is_ok());
        waiters.acknowledge("durable", 9);
        assert_eq!(waiters.wait_count(9, 1, Duration::ZERO), 1);
        waiters.forget("durable");
        assert!(
            waiters.check_sync().is_err(),
            "a dropped slot no longer counts"
        );
    }

    #[test]
    fn an_unregistered_peer_such_as_a_consumer_never_counts() {
        let waiters = waiters(1);
        waiters.acknowledge("cache-1 (Consumer)", 7);
        assert_eq!(waiters.wait_count(7, 1, Duration::ZERO), 0);
        assert!(waiters.wait_quorum(7, Duration::ZERO).is_none());
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
