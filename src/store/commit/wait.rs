//! Waiting for an entry: a waiter leads the pending batch, or syncs what is flushed, while
//! no one else does.

use super::{Closed, Lead, Pipeline, Refused, State, Until};

impl Pipeline {
    /// Waits until `lsn` is visible, leading batches and syncs while no one else does.
    pub(crate) fn wait_visible(&self, lsn: u64, lead: &dyn Lead) -> Result<(), Refused> {
        self.wait(lsn, Until::Visible, lead)
    }

    /// Waits until `lsn` is `until`, leading batches (and syncs, for `Visible`) while no
    /// one else does. An LSN given back (see [`crate::store::dropped`]) and not handed out
    /// again is reached: the entry does not exist.
    pub(crate) fn wait(&self, lsn: u64, until: Until, lead: &dyn Lead) -> Result<(), Refused> {
        self.wait_for(lsn, until, lead, false)
    }

    /// Waits until the caller's own entry `lsn` (from [`Pipeline::enqueue`], or the last
    /// of a call's [`Pipeline::enqueue_replicated`]) is `until`, like [`Pipeline::wait`];
    /// if the log had no room for it, refuses it.
    pub(crate) fn wait_own(&self, lsn: u64, until: Until, lead: &dyn Lead) -> Result<(), Refused> {
        self.wait_for(lsn, until, lead, true)
    }

    fn wait_for(&self, lsn: u64, until: Until, lead: &dyn Lead, own: bool) -> Result<(), Refused> {
        let mut state = self.lock();
        loop {
            if let Some(refused) = Self::given_back(&mut state, lsn, own) {
                return refused;
            }
            let reached = match until {
                Until::Readable => state.readable_lsn,
                Until::Visible => state.visible_lsn,
                Until::Synced => state.held.synced_lsn,
                Until::Written => state.held.written_lsn,
            };
            if reached >= lsn {
                return Ok(());
            }
            if let Some(Closed::Failed(failure)) = &state.closed {
                return Err(Refused::Failed(failure.clone()));
            }
            let may_lead = state
                .reserved
                .is_none_or(|owner| owner == std::thread::current().id());
            let work = !state.pending.is_empty() || state.held.releasable();
            if !state.leading && work && may_lead {
                let gather = if state.pending.is_empty() {
                    None
                } else {
                    Self::gather_until(&mut state)
                };
                if let Some(until) = gather {
                    // Everything is looked at again after the wait: the pipeline may have
                    // closed meanwhile, and the wait is over for good (see `stop`).
                    state = self.gather(state, until);
                    continue;
                }
                let visible_before = state.visible_lsn;
                state = self.lead(state, lead);
                // The listeners hear of a batch made visible once, from its leader, with
                // no lock held.
                if state.visible_lsn > visible_before {
                    let visible_lsn = state.visible_lsn;
                    // Readable is at least visible: either wait is over.
                    let done = visible_lsn >= lsn;
                    drop(state);
                    self.announce(visible_lsn);
                    if done {
                        return Ok(());
                    }
                    state = self.lock();
                }
            } else if state.held.written_lsn >= lsn
                && state.held.synced_lsn < lsn
                && until != Until::Readable
            {
                // Flushed, not synced yet: sync, or wait for the sync that runs.
                if state.syncing {
                    state = self
                        .synced
                        .wait(state)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                } else {
                    state = self.sync(state, lead);
                }
            } else if state.held.written_lsn >= lsn {
                // Held back from readers until released (and applied by whoever leads).
                if let Some(closed) = &state.closed {
                    return Err(Refused::Closed(closed.cause()));
                }
                state = self
                    .released
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            } else {
                let slot = if state.leading && lsn <= state.in_flight_last {
                    state.in_flight_slot
                } else {
                    1 - state.in_flight_slot
                };
                state.waiting[slot] += 1;
                state = self.batch_done[slot]
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                state.waiting[slot] -= 1;
            }
        }
    }

    /// What a wait for `lsn` ends with if that LSN was given back: the refusal for its own
    /// writer, the end of the wait for anyone else.
    fn given_back(state: &mut State, lsn: u64, own: bool) -> Option<Result<(), Refused>> {
        if own {
            let dropped = state.dropped.as_mut()?;
            let failure = dropped.hear(lsn)?;
            if dropped.all_heard() {
                state.dropped = None;
            }
            return Some(Err(Refused::NotWritten(failure)));
        }
        (state.next_lsn <= lsn && lsn <= state.given_back_to).then_some(Ok(()))
    }
}
