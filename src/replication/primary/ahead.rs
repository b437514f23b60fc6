//! Shipping ahead: while replicas that hold back are connected, the store tells this
//! primary of each batch written to its log before its fdatasync, and their links ship it
//! at once (a sync writer's entry then reaches a replica while it is synced here). Other
//! links, and a primary with no such replica, ship what is visible only.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{lock, Shared};
use crate::store::WrittenSubscription;

/// The links to replicas that hold back, and the store's listener while there are any.
#[derive(Default)]
pub(super) struct Ahead {
    links: usize,
    subscription: Option<WrittenSubscription>,
}

impl Shared {
    /// A link to a replica that holds back started (the machine knows it from
    /// [`Shared::connect`]): while there is one, what is written is shipped.
    pub(super) fn hold_back_link(self: &Arc<Self>) {
        let mut ahead = lock(&self.ahead);
        ahead.links += 1;
        if ahead.subscription.is_none() {
            // Weak: the store holds the listener, and `Shared` holds the store.
            let shared = Arc::downgrade(self);
            ahead.subscription = Some(self.store.on_written(move |lsn| {
                if let Some(shared) = shared.upgrade() {
                    shared.entries_written(lsn);
                }
            }));
        }
    }

    /// A link to a replica that holds back ended; the last one removes the listener (a
    /// commit is one write and fdatasync again).
    pub(super) fn release_link(&self) {
        let mut ahead = lock(&self.ahead);
        ahead.links = ahead.links.saturating_sub(1);
        if ahead.links == 0 {
            ahead.subscription = None;
        }
    }

    /// Entries up to `lsn` are written to the log, not durable yet: the links hear of
    /// them, then of the sync writers among them (which wakes the idle ones that hold
    /// back: entries no sync writer waits for ship as they become visible).
    fn entries_written(&self, lsn: u64) {
        self.written.fetch_max(lsn, Ordering::Release);
        self.sync.shippable(lsn);
    }
}

#[cfg(test)]
#[path = "ahead_tests.rs"]
mod tests;
