//! A primary's store handing its log over to another (a planned switchover): user writes
//! pause at an exact LSN, and the store then follows the new primary from there.

use std::sync::atomic::Ordering;

use super::Store;
use crate::error::{ReadOnlyReason, Result};

impl Store {
    /// Refuses user writes from now on with
    /// [`ReplicationError::Paused`](crate::error::ReplicationError::Paused) and `reason`,
    /// and returns the last LSN taken, once it is visible: no write can take an LSN after
    /// it until [`Store::resume_writes`].
    ///
    /// # Errors
    /// A closed store, or the failure that closed it (writes stay paused then).
    pub fn pause_writes(&self, reason: String) -> Result<u64> {
        let last = self.inner.pipeline.pause(reason);
        self.wait_visible(last)?;
        // Writes the log had no room for gave their LSNs back: the log ends before them.
        Ok(last.min(self.inner.pipeline.last_assigned()))
    }

    /// Takes user writes again after [`Store::pause_writes`].
    pub fn resume_writes(&self) {
        self.inner.pipeline.resume();
    }

    /// Makes this primary's store a follower at run time (the old primary of a
    /// switchover): it takes replicated entries and no user writes from now on, and is
    /// durably marked as a replica's with its first replicated entry.
    ///
    /// # Errors
    /// [`StoreError::ReadOnly`](crate::error::StoreError::ReadOnly) if it is a replica's
    /// store already; a closed store.
    pub fn start_following(&self) -> Result<()> {
        if let Some(why) = self.read_only_reason() {
            return Err(self.read_only(why));
        }
        let exclusive = self.begin_exclusive()?;
        *self
            .inner
            .read_only
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ReadOnlyReason::Replica);
        self.inner.marked_follower.store(false, Ordering::Release);
        drop(exclusive);
        self.resume_writes();
        Ok(())
    }
}
