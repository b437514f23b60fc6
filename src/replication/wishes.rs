//! Which entries sync writers wait for, told to the links when those entries become
//! visible: once per sync write, from the thread that made it visible.
//!
//! A sync writer takes its LSN before any leader can make the entry visible. Telling the
//! links then woke them twice per sync write (once for the wish, once for the entry), and
//! the first wake-up came from the writer's enqueue, under the commit pipeline's lock: on a
//! two-core machine each wake-up of the network thread preempts a writer, and async writers
//! beside a sync writer lost a third of their rate (`benches/bench_sync.py`). A wish is now
//! kept until its entry is visible; the leader that makes it visible tells the links, which
//! ship it at once with everything visible before it.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

/// Wishes kept while their entries are not visible, at most: a newer one covers the one it
/// replaces (it ships everything before it).
const MAX_PENDING: usize = 1024;

#[derive(Debug, Default)]
struct State {
    /// LSNs sync writers wait for that are not visible yet, ascending.
    pending: VecDeque<u64>,
    /// The last visible LSN this was told of.
    visible: u64,
}

/// Sync writers' wishes, announced as their entries become visible.
#[derive(Debug)]
pub struct SyncWishes {
    state: Mutex<State>,
    /// The highest visible LSN a sync writer waits for, as it rises.
    announced: watch::Sender<u64>,
}

impl Default for SyncWishes {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
            announced: watch::Sender::new(0),
        }
    }
}

impl SyncWishes {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A sync writer waits for `lsn`: announced now if it is visible already, else when it
    /// becomes visible. Quick (a lock, no wake-up) unless it is visible already.
    pub fn wish(&self, lsn: u64) {
        let mut state = self.lock();
        if lsn <= state.visible {
            drop(state);
            self.announce(lsn, true);
            return;
        }
        if state.pending.back().is_none_or(|last| *last < lsn) {
            if state.pending.len() == MAX_PENDING {
                state.pending.pop_back();
            }
            state.pending.push_back(lsn);
        }
    }

    /// Entries up to `lsn` are visible: returns the highest wish they cover, for the caller
    /// to [`announce`](Self::announce).
    #[must_use]
    pub fn visible(&self, lsn: u64) -> Option<u64> {
        let mut state = self.lock();
        state.visible = state.visible.max(lsn);
        let mut covered = None;
        while let Some(wanted) = state.pending.front().copied() {
            if wanted > state.visible {
                break;
            }
            covered = Some(wanted);
            state.pending.pop_front();
        }
        covered
    }

    /// Announces that a sync writer waits for the visible `lsn`, waking the links waiting
    /// for such news if `wake` (a caller that served them already records it only).
    pub fn announce(&self, lsn: u64, wake: bool) {
        self.announced.send_if_modified(|announced| {
            let rises = lsn > *announced;
            *announced = (*announced).max(lsn);
            rises && wake
        });
    }

    /// The highest visible LSN a sync writer waits for, as it rises.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.announced.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the primary does when entries become visible and it serves no link itself.
    fn show(wishes: &SyncWishes, lsn: u64) {
        if let Some(wanted) = wishes.visible(lsn) {
            wishes.announce(wanted, true);
        }
    }

    #[test]
    fn a_wish_is_announced_only_once_its_entry_is_visible() {
        let wishes = SyncWishes::default();
        let announced = wishes.subscribe();
        show(&wishes, 4);
        wishes.wish(7);
        assert_eq!(*announced.borrow(), 0, "entry 7 is not visible yet");
        show(&wishes, 6);
        assert_eq!(*announced.borrow(), 0, "entry 7 is still not visible");
        show(&wishes, 9);
        assert_eq!(*announced.borrow(), 7);
    }

    #[test]
    fn a_wish_for_a_visible_entry_is_announced_at_once() {
        let wishes = SyncWishes::default();
        let announced = wishes.subscribe();
        show(&wishes, 10);
        wishes.wish(8);
        assert_eq!(*announced.borrow(), 8);
    }

    #[test]
    fn visibility_announces_the_highest_wish_it_covers_and_keeps_the_rest() {
        let wishes = SyncWishes::default();
        let mut announced = wishes.subscribe();
        for lsn in [3, 5, 9] {
            wishes.wish(lsn);
        }
        show(&wishes, 6);
        assert!(announced.has_changed().unwrap());
        assert_eq!(*announced.borrow_and_update(), 5);
        show(&wishes, 8);
        assert!(!announced.has_changed().unwrap(), "no wish between 6 and 8");
        show(&wishes, 9);
        assert_eq!(*announced.borrow_and_update(), 9);
    }

    #[test]
    fn a_full_queue_keeps_the_newest_wish() {
        let wishes = SyncWishes::default();
        let announced = wishes.subscribe();
        for lsn in 1..=(MAX_PENDING as u64 + 5) {
            wishes.wish(lsn);
        }
        show(&wishes, u64::MAX);
        assert_eq!(*announced.borrow(), MAX_PENDING as u64 + 5);
    }

    #[test]
    fn a_wish_announced_without_waking_is_read_by_the_next_link_that_looks() {
        let wishes = SyncWishes::default();
        let mut announced = wishes.subscribe();
        wishes.wish(3);
        let covered = wishes.visible(5);
        assert_eq!(covered, Some(3));
        wishes.announce(3, false);
        assert!(
            !announced.has_changed().unwrap(),
            "the links were served: none wakes"
        );
        assert_eq!(*announced.borrow_and_update(), 3);
    }
}
