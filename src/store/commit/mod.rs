//! The commit pipeline of DESIGN §1: take an LSN and frame the record under one lock; one
//! leader writes and fdatasyncs the waiting batch, applies it to the in-memory overlay (the
//! checkpointer moves it into redb in the background), then advances `visible_lsn`, wakes
//! the writers it carried and tells the visibility listeners.
//!
//! A follower's leader writes and applies without the fdatasync (its entries are durable on
//! its primary already): the batch is readable at once (`readable_lsn`), and a sync that a
//! waiter for `visible_lsn` runs, apart from the leaders, makes it durable and visible to
//! the log's readers. Writes become readable before durable nowhere else. A follower that
//! holds back ([`Held`]) applies only what its primary confirmed: its visible LSN is the
//! lesser of what is synced and what is applied.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::ThreadId;
use std::time::{SystemTime, UNIX_EPOCH};

mod failure;
mod lead;
mod sequence;
mod wait;
mod writer;

use super::dropped::Dropped;
use super::gather::Returning;
use super::held::Held;
use crate::codec::Op;
pub(crate) use failure::{Closed, Failure, Refused};

/// The logger its submodules log under too (`replikv.store.commit` in Python).
const LOG_TARGET: &str = module_path!();

/// An entry whose LSN is taken but that is not yet durable and applied.
pub(crate) struct Pending {
    pub lsn: u64,
    pub ops: Vec<Op>,
    /// The writer's thread, if its call returns once the entry is visible (an async
    /// write: see [`super::gather`]).
    pub quick: Option<ThreadId>,
    /// Committed by a primary: a follower's follow loop appended it, and waits only for
    /// the last entry of each call (see [`super::dropped`]).
    pub replicated: bool,
}

/// What [`Pipeline::enqueue`] gave an entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Taken {
    pub lsn: u64,
    pub epoch: u64,
    pub timestamp_ms: u64,
}

/// A batch handed to the leader: records to write (none when it only applies entries
/// held back before), and entries to apply.
pub(crate) struct Batch {
    pub records: Vec<u8>,
    /// The LSN of the last record in `records`.
    pub last_lsn: u64,
    pub entries: Vec<Pending>,
}

/// How far a leader's flush took its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Durable (and applied): visible.
    Durable,
    /// Written and applied, not synced yet: readable, visible once a sync ends.
    Written,
}

/// The work of a thread that leads: flush a batch, or sync what was flushed.
pub(crate) trait Lead {
    /// Writes the batch to the log and applies it.
    fn flush(&self, batch: &Batch) -> crate::Result<Flushed>;
    /// Makes every batch flushed so far durable.
    fn sync(&self) -> crate::Result<()>;
}

impl<F, S> Lead for (F, S)
where
    F: Fn(&Batch) -> crate::Result<Flushed>,
    S: Fn() -> crate::Result<()>,
{
    fn flush(&self, batch: &Batch) -> crate::Result<Flushed> {
        (self.0)(batch)
    }

    fn sync(&self) -> crate::Result<()> {
        (self.1)()
    }
}

/// What a waiter waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// The entry is applied (readers of the tables see it).
    Readable,
    /// The entry is durable and visible.
    Visible,
    /// The entry is durable in the log (on a follower that holds back, maybe not applied).
    Synced,
    /// The entry is in the log, durable or not, applied unless held back.
    Written,
}

impl State {
    /// A follower's visible LSN: what is both synced and applied. Returns it if it rose.
    fn make_visible(&mut self) -> Option<u64> {
        let visible = self.held.synced_lsn.min(self.readable_lsn);
        (visible > self.visible_lsn).then(|| {
            self.visible_lsn = visible;
            visible
        })
    }
}

pub(crate) struct State {
    next_lsn: u64,
    epoch: u64,
    last_timestamp_ms: u64,
    records: Vec<u8>,
    pending: Vec<Pending>,
    leading: bool,
    visible_lsn: u64,
    /// At least `visible_lsn`; past it while a follower's flushed batches wait for a sync.
    readable_lsn: u64,
    /// What a follower wrote and synced, and what it holds back.
    held: Held,
    /// A sync runs (see [`Lead::sync`]).
    syncing: bool,
    /// Counts resets: a sync that began before one does not move `visible_lsn`.
    resets: u64,
    closed: Option<Closed>,
    /// The thread whose transaction holds the writer lock.
    writer: Option<ThreadId>,
    /// The last LSN of the batch being flushed, and which of `Pipeline::batch_done` its
    /// writers wait on (writers of the next batch wait on the other one).
    in_flight_last: u64,
    in_flight_slot: usize,
    /// Writers waiting on each of `Pipeline::batch_done`: a condvar with no waiter is not
    /// notified, as a notify costs a futex syscall even then (a lone writer leads its own
    /// batches, so nobody ever waits for it).
    waiting: [usize; 2],
    /// While set, user writes are refused with this reason (a switchover hands the log to
    /// another store): checked where the LSN is taken, so none slips in after.
    paused: Option<String>,
    /// The thread whose pending entry only it may lead: a streamed load's, whose rows are
    /// in its own redb transaction, which another leader's flush would not commit.
    reserved: Option<ThreadId>,
    /// The writers the last batch released, whom the next leader waits for a moment.
    returning: Returning,
    /// Writes given back for want of room in the log, until their writers heard.
    dropped: Option<Dropped>,
    /// The highest LSN ever given back: a wait for it (or an LSN before it) that is not
    /// handed out again is over, as that entry does not exist.
    given_back_to: u64,
}

/// What [`Pipeline::enqueue`] does with the writer lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriterLock {
    /// The caller does not hold it: the entry waits until no transaction does.
    NotHeld,
    /// The caller's transaction holds it and ends with this entry.
    Release,
    /// The caller holds it and keeps it until the entry is visible (a streamed bulk load):
    /// only the caller's thread may lead the entry's batch, with its own flush.
    Keep,
}

/// Told the new visible LSN (see [`Pipeline::subscribe`]).
pub(crate) type Listener = Arc<dyn Fn(u64) + Send + Sync>;

pub(crate) struct Pipeline {
    state: Mutex<State>,
    /// Called once per batch made visible, by its leader with no lock held, and after a
    /// reset; each with the id that unsubscribes it.
    listeners: RwLock<Vec<(u64, Listener)>>,
    next_listener: AtomicU64,
    /// Writers wait here, split by batch so that a flush wakes only the writers it carried
    /// (and one writer of the next batch, to lead it): waking every writer each time
    /// costs a context switch per writer on every batch.
    batch_done: [Condvar; 2],
    /// Signalled when a transaction releases the writer lock.
    writer_free: Condvar,
    /// Signalled when a sync ends.
    synced: Condvar,
    /// Signalled when entries held back are applied.
    released: Condvar,
    /// Signalled when the writers a gathering leader waits for are back.
    arrived: Condvar,
    /// Set once a flush failed: readers check it without taking the state lock.
    failed: AtomicBool,
    /// Mirrors `State::writer.is_some()` for checks that must not take the state lock.
    writer_held: AtomicBool,
    /// Mirrors `State::paused.is_some()`, for the check before a write is encoded.
    paused: AtomicBool,
    /// Set while a streamed bulk load holds the writer lock.
    streaming: AtomicBool,
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Pipeline {
    /// A pipeline whose next entry takes `next_lsn` in `epoch`, and a commit time no older
    /// than `last_timestamp_ms` (the log's last entry's: a clock set back between two runs
    /// must not make the change feed go back in time).
    pub(crate) fn new(next_lsn: u64, epoch: u64, last_timestamp_ms: u64) -> Self {
        Self {
            state: Mutex::new(State {
                next_lsn,
                epoch,
                last_timestamp_ms,
                records: Vec::new(),
                pending: Vec::new(),
                leading: false,
                visible_lsn: next_lsn - 1,
                readable_lsn: next_lsn - 1,
                held: Held::new(next_lsn - 1),
                syncing: false,
                resets: 0,
                closed: None,
                writer: None,
                in_flight_last: 0,
                in_flight_slot: 0,
                waiting: [0; 2],
                paused: None,
                reserved: None,
                returning: Returning::default(),
                dropped: None,
                given_back_to: 0,
            }),
            listeners: RwLock::new(Vec::new()),
            next_listener: AtomicU64::new(0),
            batch_done: [Condvar::new(), Condvar::new()],
            writer_free: Condvar::new(),
            synced: Condvar::new(),
            released: Condvar::new(),
            arrived: Condvar::new(),
            failed: AtomicBool::new(false),
            writer_held: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            streaming: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic never happens while the state lock is held (all I/O runs outside it), so
        // a poisoned lock can only come from a bug; keep serving rather than abort.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn visible_lsn(&self) -> u64 {
        self.lock().visible_lsn
    }

    /// The last LSN applied (see [`Flushed::Written`]): `visible_lsn` but on a follower.
    pub(crate) fn readable_lsn(&self) -> u64 {
        self.lock().readable_lsn
    }

    /// Calls `listener` with the visible LSN each time it advances, until unsubscribed
    /// with the id returned. Calls may overlap and arrive out of order (two leaders in a
    /// row): a listener keeps the largest LSN it was told. It must be quick and must not
    /// subscribe or unsubscribe: it runs on a writer's thread.
    pub(crate) fn subscribe(&self, listener: Listener) -> u64 {
        let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        self.listeners_mut().push((id, listener));
        id
    }

    pub(crate) fn unsubscribe(&self, id: u64) {
        self.listeners_mut()
            .retain(|(listening, _)| *listening != id);
    }

    fn listeners_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<(u64, Listener)>> {
        // Listeners never run under the write lock, so it is never poisoned by one.
        self.listeners
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn announce(&self, visible_lsn: u64) {
        let listeners = self
            .listeners
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (_, listener) in listeners.iter() {
            listener(visible_lsn);
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// Whether a flush failed (cheap: no lock).
    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The failure that closed the pipeline, if one did.
    pub(crate) fn failure(&self) -> Option<String> {
        self.lock().closed.as_ref().and_then(Closed::cause)
    }
}

#[cfg(test)]
mod tests;
