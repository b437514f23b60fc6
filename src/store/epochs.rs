//! Epochs (DESIGN §1, guarantees 4 and 6): every store keeps a durable history of the
//! epochs its log went through, `[(epoch, start_lsn)]`, and the highest epoch it has seen.
//!
//! A store takes local writes only while it owns the newest epoch it knows of: once it
//! has seen a newer one (a replica was promoted elsewhere), it is deposed and refuses
//! writes with [`ReplicationError::Fenced`]. Two stores' histories show where their logs
//! fork: the first LSN at which they say different epochs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::Store;
use crate::error::{ReplicationError, Result};

/// The epochs a log went through: `(epoch, start_lsn)` pairs, both strictly increasing.
/// The first epoch starts at LSN 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochHistory(Vec<(u64, u64)>);

impl Default for EpochHistory {
    fn default() -> Self {
        Self(vec![(1, 1)])
    }
}

impl EpochHistory {
    /// A history from its pairs, checked: both columns strictly increasing, the first
    /// epoch starting at LSN 1.
    ///
    /// # Errors
    /// A reason, if the pairs do not form a history.
    pub fn new(pairs: Vec<(u64, u64)>) -> Result<Self, String> {
        if pairs.first().map(|&(_, start)| start) != Some(1) {
            return Err(format!("an epoch history starts at LSN 1: {pairs:?}"));
        }
        if pairs
            .windows(2)
            .any(|w| w[1].0 <= w[0].0 || w[1].1 <= w[0].1)
        {
            return Err(format!(
                "epochs and their start LSNs must increase: {pairs:?}"
            ));
        }
        Ok(Self(pairs))
    }

    /// The `(epoch, start_lsn)` pairs, oldest first.
    #[must_use]
    pub fn pairs(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// The newest epoch of the history: the one new entries of this log carry.
    #[must_use]
    pub fn last_epoch(&self) -> u64 {
        self.0.last().map_or(1, |&(epoch, _)| epoch)
    }

    /// The epoch the entry at `lsn` belongs to.
    #[must_use]
    pub fn epoch_at(&self, lsn: u64) -> u64 {
        self.0
            .iter()
            .take_while(|&&(_, start)| start <= lsn)
            .last()
            .map_or(0, |&(epoch, _)| epoch)
    }

    /// Records that `epoch` starts at `start`, forgetting whatever the history said from
    /// `start` on (entries there were never durable, or were cut by a resync); if the
    /// history was already in `epoch` before `start`, that epoch goes on. Returns whether
    /// anything changed.
    pub fn begin(&mut self, epoch: u64, start: u64) -> bool {
        if self.epoch_at(start) == epoch {
            return false;
        }
        self.0.retain(|&(e, s)| s < start && e <= epoch);
        match self.0.last() {
            Some(&(last, _)) if last == epoch => {}
            Some(_) => self.0.push((epoch, start.max(1))),
            None => self.0.push((epoch, 1)),
        }
        true
    }

    /// The history up to and including `lsn` (what a snapshot taken there carries).
    #[must_use]
    pub fn up_to(&self, lsn: u64) -> Self {
        let kept: Vec<_> = self
            .0
            .iter()
            .copied()
            .filter(|&(_, start)| start <= lsn.max(1))
            .collect();
        Self(kept)
    }
}

/// Where the log of a store (`theirs`, ending at `their_last`) first differs from ours
/// (ending at `our_last`): the first LSN it holds at which our histories disagree on the
/// epoch, or the first LSN it holds beyond our log. `None` if everything it holds is ours.
#[must_use]
pub fn fork_lsn(
    ours: &EpochHistory,
    our_last: u64,
    theirs: &EpochHistory,
    their_last: u64,
) -> Option<u64> {
    let common = our_last.min(their_last);
    let mut starts: Vec<u64> = ours
        .pairs()
        .iter()
        .chain(theirs.pairs())
        .map(|&(_, start)| start)
        .filter(|&start| start <= common)
        .collect();
    starts.sort_unstable();
    starts
        .into_iter()
        .find(|&lsn| ours.epoch_at(lsn) != theirs.epoch_at(lsn))
        .or((their_last > our_last).then_some(our_last + 1))
}

/// A store's epochs in memory, mirroring what its tables hold durably.
pub(super) struct Epochs {
    history: Mutex<EpochHistory>,
    /// The highest epoch seen: the last of the history, or newer once deposed.
    seen: AtomicU64,
    /// The last epoch of the history (the one local writes carry), read on every write.
    own: AtomicU64,
}

impl Epochs {
    pub(super) fn new(history: EpochHistory, seen: u64) -> Self {
        let own = history.last_epoch();
        Self {
            history: Mutex::new(history),
            seen: AtomicU64::new(seen.max(own)),
            own: AtomicU64::new(own),
        }
    }

    fn history(&self) -> MutexGuard<'_, EpochHistory> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Store {
    /// The highest epoch this store has seen (raised by promotions).
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.inner.epochs.seen.load(Ordering::Acquire)
    }

    /// The epochs this store's log went through, `(epoch, start_lsn)`, oldest first.
    #[must_use]
    pub fn epoch_history(&self) -> EpochHistory {
        self.inner.epochs.history().clone()
    }

    /// The epoch this store's own entries carry: the last of its history.
    #[must_use]
    pub fn own_epoch(&self) -> u64 {
        self.inner.epochs.own.load(Ordering::Acquire)
    }

    /// Refuses a local write once this store has seen an epoch newer than the one its own
    /// writes carry: another store was promoted, and this one is deposed.
    ///
    /// # Errors
    /// [`ReplicationError::Fenced`] with the newer epoch.
    pub fn check_epoch(&self) -> Result<()> {
        let seen = self.epoch();
        let own = self.own_epoch();
        if seen > own {
            return Err(ReplicationError::Fenced {
                epoch: seen,
                reason: format!(
                    "this store was the primary of epoch {own}, and epoch {seen} has begun \
                     elsewhere: it takes no writes; make it follow the new primary"
                ),
            }
            .into());
        }
        Ok(())
    }

    /// Durably records that `epoch` exists (a promotion raised it, or a peer reported it).
    /// Lower or equal epochs change nothing: a store never goes back to an older epoch.
    /// Returns whether the epoch rose.
    ///
    /// # Errors
    /// A closed store or a storage failure (the epoch is then unchanged).
    pub fn raise_epoch(&self, epoch: u64) -> Result<bool> {
        if epoch <= self.epoch() {
            return Ok(false);
        }
        let mut exclusive = self.begin_exclusive()?;
        exclusive.ready_to_read()?;
        let risen = epoch > self.epoch();
        if risen {
            self.with_open(|open| open.tables.write_meta(&[("epoch", epoch)]))?;
            self.inner.epochs.seen.fetch_max(epoch, Ordering::AcqRel);
            tracing::info!(path = %self.inner.path.display(), epoch, "epoch raised");
        }
        drop(exclusive);
        Ok(risen)
    }

    /// Makes this store the primary of the new `epoch`: its next entry starts it, durably
    /// recorded in its history first (what a promotion does once it holds everything the
    /// reached members hold). Other stores that learn of the epoch are deposed.
    ///
    /// # Errors
    /// [`ReplicationError::Fenced`] if this store has seen a newer epoch, or its own writes
    /// carry `epoch` already; [`StoreError::ReadOnly`](crate::error::StoreError::ReadOnly) on a replica's
    /// store; a closed store or a storage failure (nothing changes then).
    pub fn begin_epoch(&self, epoch: u64) -> Result<()> {
        if let Some(why) = self.read_only_reason() {
            return Err(self.read_only(why));
        }
        let mut exclusive = self.begin_exclusive()?;
        exclusive.ready_to_read()?;
        let seen = self.epoch();
        // A promotion raises the epoch first (as its members do), so an epoch equal to
        // the one seen is this store's to begin, unless its own writes carry it already.
        if epoch < seen || epoch <= self.own_epoch() {
            return Err(ReplicationError::Fenced {
                epoch: seen,
                reason: format!("epoch {epoch} is not newer than epoch {seen}, already seen here"),
            }
            .into());
        }
        let mut history = self.epoch_history();
        history.begin(epoch, self.last_lsn() + 1);
        self.store_history(history, epoch)?;
        self.inner.pipeline.begin_epoch(epoch);
        drop(exclusive);
        tracing::info!(path = %self.inner.path.display(), epoch, from_lsn = self.last_lsn() + 1, "epoch begun");
        Ok(())
    }

    /// Durably records that the entries from `start` on belong to `epoch` (a follower
    /// about to append the first entry of a newer epoch), before they are appended.
    pub(super) fn begin_epoch_at(&self, epoch: u64, start: u64) -> Result<()> {
        let mut history = self.inner.epochs.history().clone();
        if !history.begin(epoch, start) {
            return Ok(());
        }
        let mut exclusive = self.begin_exclusive()?;
        exclusive.ready_to_read()?;
        let stored = self.store_history(history, epoch);
        drop(exclusive);
        stored
    }

    /// Takes on the epochs of a store just swapped in (a snapshot).
    pub(super) fn reset_epochs(&self, history: EpochHistory, seen: u64) {
        let epochs = &self.inner.epochs;
        epochs.own.store(history.last_epoch(), Ordering::Release);
        epochs
            .seen
            .store(seen.max(history.last_epoch()), Ordering::Release);
        *epochs.history() = history;
    }

    /// Replaces the history (a snapshot was installed, or an entry began an epoch), durably
    /// and then in memory; `seen` rises to `epoch` if it is newer. The caller holds the
    /// writer lock with nothing in flight.
    pub(super) fn store_history(&self, history: EpochHistory, epoch: u64) -> Result<()> {
        let seen = self.epoch().max(epoch).max(history.last_epoch());
        self.with_open(|open| open.tables.set_epochs(history.pairs(), seen))?;
        self.inner
            .epochs
            .own
            .store(history.last_epoch(), Ordering::Release);
        *self.inner.epochs.history() = history;
        self.inner.epochs.seen.fetch_max(seen, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(pairs: &[(u64, u64)]) -> EpochHistory {
        EpochHistory::new(pairs.to_vec()).unwrap()
    }

    #[test]
    fn a_history_must_start_at_one_and_increase() {
        assert!(EpochHistory::new(vec![]).is_err());
        assert!(EpochHistory::new(vec![(1, 2)]).is_err());
        assert!(EpochHistory::new(vec![(1, 1), (1, 5)]).is_err());
        assert!(EpochHistory::new(vec![(1, 1), (2, 1)]).is_err());
        assert!(EpochHistory::new(vec![(1, 1), (3, 10)]).is_ok());
    }

    #[test]
    fn epoch_at_follows_the_starts() {
        let h = history(&[(1, 1), (2, 11), (5, 30)]);
        assert_eq!(
            [0, 1, 10, 11, 29, 30, 1000].map(|l| h.epoch_at(l)),
            [0, 1, 1, 2, 2, 5, 5]
        );
        assert_eq!(h.last_epoch(), 5);
        assert_eq!(h.up_to(29), history(&[(1, 1), (2, 11)]));
        assert_eq!(h.up_to(0), history(&[(1, 1)]));
    }

    #[test]
    fn beginning_an_epoch_forgets_what_the_history_said_after_it() {
        let mut h = history(&[(1, 1), (2, 11), (3, 20)]);
        assert!(!h.begin(2, 15), "15 is already in epoch 2");
        assert!(h.begin(4, 15));
        assert_eq!(h, history(&[(1, 1), (2, 11), (4, 15)]));
        assert!(h.begin(5, 100));
        assert_eq!(h.pairs().last(), Some(&(5, 100)));
    }

    #[test]
    fn beginning_an_epoch_the_history_was_in_before_start_forgets_only_what_came_after() {
        // A primary began epoch 2 at 20 and wrote nothing in it; the log goes on in
        // epoch 1 from 20 (the promotion simulator's history became [(1, 20)], which
        // starts past LSN 1 and says entries 1..=19 have no epoch).
        let mut h = history(&[(1, 1), (2, 20)]);
        assert!(h.begin(1, 20));
        assert_eq!(h, history(&[(1, 1)]));
        let mut h = history(&[(1, 1), (2, 10), (3, 20)]);
        assert!(h.begin(2, 20));
        assert_eq!(h, history(&[(1, 1), (2, 10)]), "10..=19 stay in epoch 2");
    }

    #[test]
    fn the_fork_is_the_first_lsn_whose_epochs_differ() {
        // The old primary wrote 1..=100 in epoch 1; a replica at 90 was promoted (epoch
        // 2 from 91) and wrote up to 120.
        let old = history(&[(1, 1)]);
        let new = history(&[(1, 1), (2, 91)]);
        assert_eq!(fork_lsn(&new, 120, &old, 100), Some(91));
        // Before the new primary wrote anything, the old one's extra entries still fork.
        assert_eq!(fork_lsn(&new, 90, &old, 100), Some(91));
        // A replica behind the promotion point follows without a fork.
        assert_eq!(fork_lsn(&new, 120, &old, 80), None);
        // A replica that already follows the new primary.
        assert_eq!(fork_lsn(&new, 120, &new, 110), None);
        // A replica ahead in the same history: it holds entries the primary never had.
        assert_eq!(fork_lsn(&old, 50, &old, 60), Some(51));
        // Two promotions apart: the first disagreement wins.
        let other = history(&[(1, 1), (3, 70)]);
        assert_eq!(fork_lsn(&new, 120, &other, 95), Some(70));
    }
}
