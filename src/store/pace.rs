//! The schedule a checkpoint's writeback keeps (see [`super::paced`] for why): be done
//! when the next checkpoint is [`COMPLETION_TARGET`] of the way to being due, and hurry
//! whenever another thread waits to write the tables. Only the thread that installed the
//! schedule (the checkpointer, for its own durable move) is ever paced.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// The writeback aims to be done when the next checkpoint is this far toward being due.
const COMPLETION_TARGET: f64 = 0.5;

/// However the schedule goes, one sync's writeback is done within this long (a store
/// configured with an interval of hours must not spread one over hours). A durable redb
/// commit syncs twice, but its second sync has little left to write.
const LONGEST: Duration = Duration::from_millis(2500);

/// How long the writeback sleeps when ahead of its schedule before looking again.
const PAUSE: Duration = Duration::from_micros(500);

/// How far a store has gone toward its next checkpoint: 0 when one has just begun, 1 (or
/// more) when the next is due. The checkpointer provides it.
pub(super) trait Schedule: Send + Sync {
    fn progress(&self) -> f64;
}

/// A schedule and the one thread whose syncs keep it.
type Installed = Option<(ThreadId, Arc<dyn Schedule>)>;

/// The schedule one thread's syncs of the file keep, if any.
#[derive(Default)]
pub(super) struct Pace {
    schedule: Mutex<Installed>,
    /// Threads waiting to write the tables (a bulk load, a snapshot, a promotion): while
    /// any does, a writeback keeps no schedule, since it holds them up.
    waiting: AtomicUsize,
}

impl std::fmt::Debug for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pace")
            .field("paced", &self.lock().is_some())
            .finish()
    }
}

/// Keeps a schedule installed until dropped.
pub(super) struct Following<'a>(&'a Pace);

/// Counts a thread waiting to write the tables until dropped.
pub(super) struct Waiting<'a>(&'a Pace);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Following<'_> {
    fn drop(&mut self) {
        *self.0.lock() = None;
    }
}

impl Pace {
    fn lock(&self) -> MutexGuard<'_, Installed> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The schedule the calling thread keeps, if it installed one.
    fn current(&self) -> Option<Arc<dyn Schedule>> {
        let me = std::thread::current().id();
        self.lock()
            .as_ref()
            .filter(|(follower, _)| *follower == me)
            .map(|(_, schedule)| Arc::clone(schedule))
    }

    /// The calling thread's syncs of the file keep `schedule` until the returned guard is
    /// dropped; any other thread's go at full speed.
    pub(super) fn follow(&self, schedule: Arc<dyn Schedule>) -> Following<'_> {
        *self.lock() = Some((std::thread::current().id(), schedule));
        Following(self)
    }

    /// Marks the calling thread as waiting to write the tables (for the writer's lock of
    /// redb, or to move the overlay) until the guard is dropped.
    pub(super) fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(self)
    }

    /// Waits while a writeback that began at `started` and has done `done` (a fraction)
    /// of its work is ahead of its schedule, and nobody waits for it.
    pub(super) fn keep_to_schedule(&self, done: f64, started: Instant) {
        loop {
            let Some(schedule) = self.current() else {
                return;
            };
            if self.waiting.load(Ordering::Acquire) > 0 {
                return;
            }
            let by_time = started.elapsed().as_secs_f64() / LONGEST.as_secs_f64();
            if done <= (schedule.progress() / COMPLETION_TARGET).max(by_time) {
                return;
            }
            std::thread::sleep(PAUSE);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// A schedule the test moves by hand.
    #[derive(Default)]
    struct Manual(AtomicU64);

    impl Manual {
        fn set(&self, progress: f64) {
            self.0.store(progress.to_bits(), Ordering::Release);
        }
    }

    impl Schedule for Manual {
        fn progress(&self) -> f64 {
            f64::from_bits(self.0.load(Ordering::Acquire))
        }
    }

    /// Starts a writeback that has done everything on a thread that follows `schedule`
    /// (its time bound far off: only the schedule or a waiting writer lets it go).
    fn writeback_done(pace: &Arc<Pace>, schedule: &Arc<Manual>) -> std::thread::JoinHandle<()> {
        let pace = Arc::clone(pace);
        let schedule = Arc::clone(schedule) as Arc<dyn Schedule>;
        let started = Instant::now() + Duration::from_secs(3600);
        std::thread::spawn(move || {
            let _following = pace.follow(schedule);
            pace.keep_to_schedule(1.0, started);
        })
    }

    /// Waits (boundedly) for `waiter` to return; `false` if it does not.
    fn returns(waiter: &std::thread::JoinHandle<()>) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !waiter.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        waiter.is_finished()
    }

    #[test]
    fn a_writeback_ahead_of_its_schedule_waits_until_the_schedule_catches_up() {
        let pace = Arc::new(Pace::default());
        let schedule = Arc::new(Manual::default());
        let waiter = writeback_done(&pace, &schedule);
        // Done with everything when the next checkpoint has not begun to come due: waits...
        schedule.set(0.1);
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished());
        // ...until the next one is as far along as the target.
        schedule.set(COMPLETION_TARGET);
        assert!(returns(&waiter));
        assert!(pace.lock().is_none(), "the guard took the schedule away");
    }

    /// A writeback done with everything while its schedule stays at 0: it waits.
    fn held_back(pace: &Arc<Pace>) -> std::thread::JoinHandle<()> {
        let waiter = writeback_done(pace, &Arc::default());
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished());
        waiter
    }

    #[test]
    fn a_writeback_hurries_while_another_thread_waits_to_write() {
        let pace = Arc::new(Pace::default());
        let waiter = held_back(&pace);
        let writer = pace.waiting();
        assert!(returns(&waiter));
        drop(writer);
        assert_eq!(pace.waiting.load(Ordering::Acquire), 0);
    }

    /// A thread that gets the tables while the checkpointer's schedule is installed (a
    /// close, a snapshot) syncs at full speed.
    #[test]
    fn only_the_thread_that_follows_a_schedule_keeps_it() {
        let pace = Arc::new(Pace::default());
        let waiter = held_back(&pace);
        assert!(pace.lock().is_some());
        let other = {
            let pace = Arc::clone(&pace);
            std::thread::spawn(move || {
                pace.keep_to_schedule(1.0, Instant::now() + Duration::from_secs(3600));
            })
        };
        assert!(returns(&other));
        let _writer = pace.waiting();
        assert!(returns(&waiter));
    }
}
