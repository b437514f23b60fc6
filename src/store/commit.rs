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

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::ThreadId;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::dropped::Dropped;
use super::gather::Returning;
use super::held::Held;
use crate::codec::{frame_payload, frame_record, Op};

/// An entry whose LSN is taken but that is not yet durable and applied.
pub(crate) struct Pending {
    pub lsn: u64,
    pub ops: Vec<Op>,
    /// The writer's thread, if its call returns once the entry is visible (an async
    /// write: see [`super::gather`]).
    pub quick: Option<ThreadId>,
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

/// Why the pipeline stopped taking commits.
#[derive(Debug, Clone)]
pub(crate) enum Closed {
    Requested,
    Failed(Failure),
}

/// The failure that closed the pipeline.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// What failed, and why.
    pub cause: String,
    /// The operating system's error behind it, if one was: its kind and errno.
    pub os: Option<(io::ErrorKind, Option<i32>)>,
    /// What damage it found in the tables, if that is what failed (the writers it failed
    /// get a corruption error).
    pub corrupt: Option<String>,
}

impl Failure {
    fn of(err: &crate::Error) -> Self {
        Self {
            // A store that closed itself already (its checkpointer failed) names that cause:
            // the store's error says it is closed once.
            cause: match err {
                crate::Error::Store(crate::error::StoreError::Closed {
                    cause: Some(cause),
                    ..
                }) => cause.clone(),
                _ => err.to_string(),
            },
            os: err.io_source().map(|io| (io.kind(), io.raw_os_error())),
            corrupt: match err {
                crate::Error::Store(crate::error::StoreError::Corrupt { reason }) => {
                    Some(reason.clone())
                }
                _ => None,
            },
        }
    }

    /// The operating system's error again (an `io::Error` cannot be cloned): the same
    /// errno, else the same kind.
    pub fn os_error(&self) -> Option<io::Error> {
        self.os.map(|(kind, errno)| match errno {
            Some(errno) => io::Error::from_raw_os_error(errno),
            None => io::Error::new(kind, self.cause.clone()),
        })
    }
}

impl Closed {
    fn cause(&self) -> Option<String> {
        match self {
            Closed::Requested => None,
            Closed::Failed(failure) => Some(failure.cause.clone()),
        }
    }
}

/// Why a commit did not become visible.
pub(crate) enum Refused {
    Closed(Option<String>),
    /// A flush or sync failed while the commit waited, and the pipeline closed; the commit
    /// may or may not have reached the log durably.
    Failed(Failure),
    WouldDeadlock,
    /// A replicated entry whose LSN is not the next one.
    OutOfOrder {
        expected: u64,
        got: u64,
    },
    /// The writer lock was still held when the caller's patience ran out.
    Busy,
    /// User writes are paused, for this reason.
    Paused(String),
    /// The log had no room for the write (or for one before it in its batch): nothing of it
    /// was written, and the store stays open.
    NotWritten(Failure),
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Pipeline {
    pub(crate) fn new(next_lsn: u64, epoch: u64) -> Self {
        Self {
            state: Mutex::new(State {
                next_lsn,
                epoch,
                last_timestamp_ms: 0,
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

    /// Waits until no transaction holds the writer lock (refusing if this thread holds it),
    /// or until `deadline` ([`Refused::Busy`]).
    fn wait_writer_free<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> Result<MutexGuard<'a, State>, Refused> {
        let me = std::thread::current().id();
        loop {
            if let Some(closed) = &state.closed {
                return Err(Refused::Closed(closed.cause()));
            }
            match state.writer {
                None => return Ok(state),
                Some(owner) if owner == me => return Err(Refused::WouldDeadlock),
                Some(_) => {
                    state = match deadline {
                        None => self
                            .writer_free
                            .wait(state)
                            .unwrap_or_else(std::sync::PoisonError::into_inner),
                        Some(deadline) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                return Err(Refused::Busy);
                            }
                            self.writer_free
                                .wait_timeout(state, left)
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .0
                        }
                    };
                }
            }
        }
    }

    /// Takes the writer lock for a transaction on this thread, waiting until `deadline`.
    pub(crate) fn acquire_writer(&self, deadline: Option<Instant>) -> Result<(), Refused> {
        let mut state = self.wait_writer_free(self.lock(), deadline)?;
        state.writer = Some(std::thread::current().id());
        self.writer_held.store(true, Ordering::Release);
        Ok(())
    }

    /// Waits until no transaction holds the writer lock, or `deadline` passes (`Busy`).
    pub(crate) fn writer_free_by(&self, deadline: Instant) -> Result<(), Refused> {
        self.wait_writer_free(self.lock(), Some(deadline)).map(drop)
    }

    /// Releases the writer lock (transaction aborted or read-only).
    pub(crate) fn release_writer(&self) {
        self.lock().writer = None;
        self.writer_held.store(false, Ordering::Release);
        self.writer_free.notify_all();
    }

    /// Whether a transaction may hold the writer lock, without taking any lock: a `false`
    /// lets a blind write skip the interruptible wait.
    pub(crate) fn writer_maybe_held(&self) -> bool {
        self.writer_held.load(Ordering::Acquire)
    }

    /// Enqueues one entry and returns what it was given: its LSN, epoch and commit time.
    /// `body` is the encoded entry with its CRC, framed into the batch's records; `None`
    /// for a record its caller writes to the log itself (a streamed bulk load, which leads
    /// its own batch: `writer` is [`WriterLock::Keep`]). `writer` says whether the caller
    /// holds the writer lock, and whether it is released in the same critical section.
    /// `taken` hears the LSN before any leader can take the entry (so before it is visible).
    pub(crate) fn enqueue(
        &self,
        body: Option<(&[u8], u32)>,
        ops: Vec<Op>,
        writer: WriterLock,
        quick: bool,
        taken: impl FnOnce(u64),
    ) -> Result<Taken, Refused> {
        let holds_writer = writer != WriterLock::NotHeld;
        let mut state = if holds_writer {
            let state = self.lock();
            if let Some(closed) = &state.closed {
                return Err(Refused::Closed(closed.cause()));
            }
            state
        } else {
            self.wait_writer_free(self.lock(), None)?
        };
        let refused = match (&state.paused, &state.dropped) {
            (Some(reason), _) => Some(Refused::Paused(reason.clone())),
            (None, Some(dropped)) => Some(Refused::NotWritten(dropped.failure().clone())),
            (None, None) => None,
        };
        if let Some(refused) = refused {
            if writer == WriterLock::Release {
                state.writer = None;
                self.writer_held.store(false, Ordering::Release);
                drop(state);
                self.writer_free.notify_all();
            }
            return Err(refused);
        }
        let lsn = state.next_lsn;
        state.next_lsn += 1;
        let timestamp_ms = now_ms().max(state.last_timestamp_ms);
        state.last_timestamp_ms = timestamp_ms;
        let epoch = state.epoch;
        if let Some((body, crc)) = body {
            frame_record(&mut state.records, lsn, epoch, timestamp_ms, body, crc);
        }
        let thread = std::thread::current().id();
        state.pending.push(Pending {
            lsn,
            ops,
            quick: quick.then_some(thread),
        });
        // Any write of the writer a leader waits for ends the wait, async or not.
        if state.returning.arrive(thread, Instant::now()) {
            self.arrived.notify_one();
        }
        if writer == WriterLock::Keep {
            state.reserved = Some(thread);
        }
        taken(lsn);
        if writer == WriterLock::Release {
            state.writer = None;
            self.writer_held.store(false, Ordering::Release);
            drop(state);
            self.writer_free.notify_all();
        }
        Ok(Taken {
            lsn,
            epoch,
            timestamp_ms,
        })
    }

    /// Marks whether a streamed bulk load holds the writer lock (see
    /// [`Pipeline::streaming_here`]).
    pub(crate) fn set_streaming(&self, streaming: bool) {
        self.streaming.store(streaming, Ordering::Release);
    }

    /// Whether a streamed bulk load holds the writer lock on this thread: closing the store
    /// here would wait for the load's own applying thread, which waits for this one.
    pub(crate) fn streaming_here(&self) -> bool {
        self.streaming.load(Ordering::Acquire)
            && self.lock().writer == Some(std::thread::current().id())
    }

    /// Refuses user writes from now on with `reason` (replicated entries still go in);
    /// returns the last LSN taken, which becomes visible as usual.
    pub(crate) fn pause(&self, reason: String) -> u64 {
        let mut state = self.lock();
        state.paused = Some(reason);
        self.paused.store(true, Ordering::Release);
        state.next_lsn - 1
    }

    /// Takes user writes again.
    pub(crate) fn resume(&self) {
        self.lock().paused = None;
        self.paused.store(false, Ordering::Release);
    }

    /// Why user writes are paused, if they are (cheap when they are not). A write that
    /// passes this check is still refused where its LSN would be taken.
    pub(crate) fn paused(&self) -> Option<String> {
        if !self.paused.load(Ordering::Acquire) {
            return None;
        }
        self.lock().paused.clone()
    }

    /// Enqueues an entry committed elsewhere (a primary's), keeping its LSN, epoch and
    /// timestamp: `payload` is stored byte for byte. Like a user write it waits while the
    /// writer lock is held, so that exclusive work (snapshots, scrub, dropping segments) is
    /// the only one touching the overlay on a follower too.
    pub(crate) fn enqueue_replicated(
        &self,
        payload: &[u8],
        lsn: u64,
        epoch: u64,
        timestamp_ms: u64,
        ops: Vec<Op>,
    ) -> Result<(), Refused> {
        let mut state = self.wait_writer_free(self.lock(), None)?;
        if lsn != state.next_lsn {
            return Err(Refused::OutOfOrder {
                expected: state.next_lsn,
                got: lsn,
            });
        }
        state.next_lsn += 1;
        state.epoch = state.epoch.max(epoch);
        state.last_timestamp_ms = state.last_timestamp_ms.max(timestamp_ms);
        frame_payload(&mut state.records, payload);
        state.pending.push(Pending {
            lsn,
            ops,
            quick: None,
        });
        Ok(())
    }

    /// Local commits from now on carry `epoch` (nothing may be pending).
    pub(crate) fn begin_epoch(&self, epoch: u64) {
        self.lock().epoch = epoch;
    }

    /// Restarts the sequence after a snapshot was swapped in (nothing may be pending).
    /// The listeners hear of it from [`Pipeline::announce_reset`], once the caller holds
    /// no lock of the store.
    pub(crate) fn reset(&self, next_lsn: u64, epoch: u64) {
        let mut state = self.lock();
        debug_assert!(
            state.pending.is_empty() && !state.leading,
            "a swap happens between appends"
        );
        state.next_lsn = next_lsn;
        state.visible_lsn = next_lsn - 1;
        state.readable_lsn = next_lsn - 1;
        let release_lsn = state.held.release_lsn.max(next_lsn - 1);
        state.held = Held::new(next_lsn - 1);
        state.held.release_lsn = release_lsn;
        state.resets += 1;
        state.epoch = epoch;
        state.in_flight_last = 0;
        state.returning = Returning::default();
        state.given_back_to = 0;
    }

    /// Tells the listeners the visible LSN a [`Pipeline::reset`] set (or any later one).
    pub(crate) fn announce_reset(&self) {
        let visible_lsn = self.lock().visible_lsn;
        self.announce(visible_lsn);
    }

    /// The last LSN handed out (visible or not).
    pub(crate) fn last_assigned(&self) -> u64 {
        self.lock().next_lsn - 1
    }

    /// The last LSN handed out that is not held back: what draining waits for.
    pub(crate) fn last_releasable(&self) -> u64 {
        let state = self.lock();
        (state.next_lsn - 1).min(state.held.release_lsn)
    }

    /// The last LSN durable in the log (applied or not).
    pub(crate) fn synced_lsn(&self) -> u64 {
        self.lock().held.synced_lsn
    }

    /// From now on, entries past those applied are held back from readers until
    /// released. `entries`, the last of the log and not applied (a recovery's), are held.
    pub(crate) fn hold(&self, entries: Vec<Pending>) {
        let mut state = self.lock();
        if let Some(first) = entries.first() {
            state.readable_lsn = first.lsn - 1;
            state.visible_lsn = first.lsn - 1;
        }
        state.held.release_lsn = state.readable_lsn;
        state.held.entries.extend(entries);
    }

    /// Entries up to `lsn` may be applied; returns whether some wait to be (then a
    /// [`Pipeline::wait`] for them applies them).
    pub(crate) fn release(&self, lsn: u64) -> bool {
        let mut state = self.lock();
        state.held.release_lsn = state.held.release_lsn.max(lsn);
        state.held.releasable()
    }

    /// Forgets the held entries after `lsn` (their records were cut from the log): the
    /// next entry appended takes LSN `lsn + 1`. Only entries never applied are cut.
    pub(crate) fn cut_held(&self, lsn: u64) -> Result<(), Refused> {
        let mut state = self.lock();
        if lsn < state.readable_lsn || state.leading || !state.pending.is_empty() {
            return Err(Refused::OutOfOrder {
                expected: state.readable_lsn,
                got: lsn,
            });
        }
        state.held.entries.retain(|e| e.lsn <= lsn);
        state.next_lsn = state.next_lsn.min(lsn + 1);
        state.held.written_lsn = state.held.written_lsn.min(lsn);
        state.held.synced_lsn = state.held.synced_lsn.min(lsn);
        Ok(())
    }

    /// Waits until `lsn` is visible, leading batches and syncs while no one else does.
    pub(crate) fn wait_visible(&self, lsn: u64, lead: &dyn Lead) -> Result<(), Refused> {
        self.wait(lsn, Until::Visible, lead)
    }

    /// Waits until `lsn` is `until`, leading batches (and syncs, for `Visible`) while no
    /// one else does. An LSN given back (see [`super::dropped`]) and not handed out again
    /// is reached: the entry does not exist.
    pub(crate) fn wait(&self, lsn: u64, until: Until, lead: &dyn Lead) -> Result<(), Refused> {
        self.wait_for(lsn, until, lead, false)
    }

    /// Waits until the caller's own entry `lsn` (from [`Pipeline::enqueue`]) is visible,
    /// like [`Pipeline::wait`]; if the log had no room for it, refuses it.
    pub(crate) fn wait_own(&self, lsn: u64, lead: &dyn Lead) -> Result<(), Refused> {
        self.wait_for(lsn, Until::Visible, lead, true)
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

    /// Syncs every batch flushed so far, then makes them visible and tells the listeners.
    fn sync<'a>(
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
    /// batch released (see [`super::gather`]), if at all: never while a transaction or a
    /// streamed load holds the writer lock (the writer waited for could not enqueue).
    fn gather_until(state: &mut State) -> Option<Instant> {
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
    fn gather<'a>(
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

    fn lead<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        lead: &dyn Lead,
    ) -> MutexGuard<'a, State> {
        state.leading = true;
        state.reserved = None;
        let pending = std::mem::take(&mut state.pending);
        // Nothing pending: the batch only applies entries held back and now released.
        let written = pending.last().map(|e| e.lsn);
        let releasing = !state.held.entries.is_empty();
        let entries = state.held.take_applicable(pending);
        let applied = entries.last().map(|e| e.lsn);
        let last = written.max(applied).unwrap_or(state.readable_lsn);
        // The writers of this batch were waiting as "next batch": they are in flight now.
        state.in_flight_last = last;
        state.in_flight_slot = 1 - state.in_flight_slot;
        let batch = Batch {
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
            // Only a batch of the writers' own entries is given back (a follower's flush
            // makes no room fatal: its entries keep their primary's LSNs).
            Err(err) if err.is_not_written() && !releasing && !batch.entries.is_empty() => {
                Self::give_back(&mut state, &batch, &err);
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

    /// Gives back the LSNs of `batch`, which the log refused before writing any of it, and
    /// of every write queued behind it (see [`super::dropped`]).
    fn give_back(state: &mut State, batch: &Batch, err: &crate::Error) {
        let from = batch
            .entries
            .first()
            .map_or(state.next_lsn, |entry| entry.lsn);
        let writers = batch.entries.len() + state.pending.len();
        tracing::warn!(error = %err, lsn = from, writes = writers, "writes refused, nothing written");
        state.given_back_to = state.given_back_to.max(state.next_lsn - 1);
        state.next_lsn = from;
        state.pending.clear();
        state.records.clear();
        state.dropped = Some(Dropped::new(from, writers, Failure::of(err)));
    }

    /// Closes the pipeline after `what` failed: a failed fdatasync is never retried, the
    /// file's state is unknown.
    fn fail(&self, state: &mut State, err: &crate::Error, what: &str) {
        tracing::error!(error = %err, "{what} failed; the store closes itself");
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

#[cfg(test)]
#[path = "commit_tests.rs"]
mod tests;
