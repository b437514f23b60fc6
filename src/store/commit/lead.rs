//! The leader's work: gather the writers a batch waits for, flush it, sync; and what a
//! failed flush does (give the batch back, or close the pipeline).

use std::sync::atomic::Ordering;
use std::sync::{Condvar, MutexGuard};
use std::time::Instant;

use super::{Batch, Closed, Dropped, Failure, Flushed, Lead, Pending, Pipeline, State};

impl Pipeline {
    /// Syncs every batch flushed so far, then makes them visible and tells the listeners.
    pub(super) fn sync<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        lead: &dyn Lead,
    ) -> MutexGuard<'a, State> {
        state.syncing = true;
        let (target, resets) = (state.held.written_lsn, state.resets);
        drop(state);
        let result = crate::error::corrupt_on_panic("syncing the log", || lead.sync());
        let mut state = self.lock();
        state.syncing = false;
        let mut advanced = None;
        match result {
            Ok(()) if state.resets == resets => {
                state.held.synced_lsn = state.held.synced_lsn.max(target);
                advanced = state.make_visible();
            }
            Ok(()) => {}
            Err(err) => {
                self.fail(&mut state, &err, "syncing the log");
                self.batch_done.iter().for_each(Condvar::notify_all);
            }
        }
        self.synced.notify_all();
        if let Some(visible_lsn) = advanced {
            drop(state);
            self.announce(visible_lsn);
            state = self.lock();
        }
        state
    }

    /// Until when the leader of the pending entries should wait for the writer the last
    /// batch released (see [`crate::store::gather`]), if at all: never while a transaction or a
    /// streamed load holds the writer lock (the writer waited for could not enqueue).
    pub(super) fn gather_until(state: &mut State) -> Option<Instant> {
        if state.writer.is_some() || state.reserved.is_some() {
            return None;
        }
        let pending = state.pending.len();
        state
            .returning
            .start(pending, std::thread::current().id(), Instant::now())
    }

    /// Waits until `until` for the writer [`Pipeline::gather_until`] chose, as the leader:
    /// writers arriving meanwhile wait for this batch instead of leading their own.
    pub(super) fn gather<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        until: Instant,
    ) -> MutexGuard<'a, State> {
        state.leading = true;
        // No batch is in flight: whoever comes now waits for the next one, which this
        // thread leads.
        state.in_flight_last = 0;
        while !state.returning.all_back() && state.closed.is_none() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .arrived
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        state.returning.stop(Instant::now());
        state.leading = false;
        state
    }

    pub(super) fn lead<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        lead: &dyn Lead,
    ) -> MutexGuard<'a, State> {
        state.leading = true;
        state.reserved = None;
        let pending = std::mem::take(&mut state.pending);
        // Nothing pending: the batch only applies entries held back and now released.
        let first_written = pending.first().map(|e| e.lsn);
        let written = pending.last().map(|e| e.lsn);
        let releasing = !state.held.entries.is_empty();
        let entries = state.held.take_applicable(pending);
        let applied = entries.last().map(|e| e.lsn);
        let last = written.max(applied).unwrap_or(state.readable_lsn);
        // The writers of this batch were waiting as "next batch": they are in flight now.
        state.in_flight_last = last;
        state.in_flight_slot = 1 - state.in_flight_slot;
        let mut batch = Batch {
            records: std::mem::take(&mut state.records),
            last_lsn: written.unwrap_or(0),
            entries,
        };
        drop(state);
        let started = Instant::now();
        let result = crate::error::corrupt_on_panic("applying a commit", || lead.flush(&batch));
        let took = started.elapsed();
        let mut state = self.lock();
        state.leading = false;
        let quick = batch.entries.iter().filter_map(|e| e.quick);
        state.returning.released(quick, took, started + took);
        match result {
            Ok(flushed) => {
                if let Some(lsn) = written {
                    state.held.written_lsn = lsn;
                }
                if flushed == Flushed::Durable {
                    state.held.synced_lsn = state.held.written_lsn;
                }
                if let Some(lsn) = applied {
                    state.readable_lsn = lsn;
                }
                // What is synced and applied is visible (the caller announces it): the
                // whole batch of a primary, a follower's held entries once applied.
                state.make_visible();
            }
            // The log refused the batch's records before writing any: nothing of it was
            // applied either.
            Err(err) if err.is_not_written() && first_written.is_some() => {
                let from = first_written.unwrap_or(state.next_lsn);
                let entries = std::mem::take(&mut batch.entries);
                Self::give_back(&mut state, entries, from, &err);
            }
            Err(err) => self.fail(&mut state, &err, "commit"),
        }
        if releasing {
            self.released.notify_all();
        }
        // Reuse the record buffer's allocation for the next batch.
        if state.records.is_empty() {
            let mut records = batch.records;
            records.clear();
            state.records = records;
        }
        if state.closed.is_some() || state.dropped.is_some() {
            self.batch_done.iter().for_each(Condvar::notify_all);
        } else {
            let (carried, next) = (state.in_flight_slot, 1 - state.in_flight_slot);
            if state.waiting[carried] > 0 {
                self.batch_done[carried].notify_all();
            }
            if !state.pending.is_empty() && state.waiting[next] > 0 {
                self.batch_done[next].notify_one();
            }
        }
        state
    }

    /// Gives back the LSNs from `from` on, which the log refused before writing any of
    /// them, and of every write queued behind them (see [`crate::store::dropped`]):
    /// `entries` are those the refused batch would have applied, entries held back before
    /// it among them.
    fn give_back(state: &mut State, entries: Vec<Pending>, from: u64, err: &crate::Error) {
        let refused = state.held.put_back(entries, from);
        let all = || refused.iter().chain(&state.pending);
        // A follower's one follow loop waits for the last entry of each call it makes.
        let writers = if all().any(|e| e.replicated) {
            1
        } else {
            all().count()
        };
        tracing::warn!(target: super::LOG_TARGET, error = %err, lsn = from, writes = all().count(), "writes refused, nothing written");
        state.given_back_to = state.given_back_to.max(state.next_lsn - 1);
        state.next_lsn = from;
        state.pending.clear();
        state.records.clear();
        state.dropped = Some(Dropped::new(from, writers, Failure::of(err)));
    }

    /// Closes the pipeline after `what` failed: a failed fdatasync is never retried, the
    /// file's state is unknown.
    fn fail(&self, state: &mut State, err: &crate::Error, what: &str) {
        tracing::error!(target: super::LOG_TARGET, error = %err, "{what} failed; the store closes itself");
        state.closed = Some(Closed::Failed(Failure::of(err)));
        self.failed.store(true, Ordering::Release);
    }

    /// Closes the pipeline because `what` failed outside any batch (a bulk load given up
    /// could not clear what it wrote to the log): appending after it is not safe.
    pub(crate) fn fail_outside(&self, err: &crate::Error, what: &str) {
        let mut state = self.lock();
        if state.closed.is_none() {
            self.fail(&mut state, err, what);
        }
        drop(state);
        self.wake_all();
    }

    fn wake_all(&self) {
        self.batch_done.iter().for_each(Condvar::notify_all);
        self.synced.notify_all();
        self.released.notify_all();
        self.arrived.notify_all();
        self.writer_free.notify_all();
    }

    /// Refuses every later commit; returns false if it was already closed.
    pub(crate) fn mark_closed(&self) -> bool {
        let mut state = self.lock();
        if state.closed.is_some() {
            return false;
        }
        state.closed = Some(Closed::Requested);
        drop(state);
        self.wake_all();
        true
    }
}
