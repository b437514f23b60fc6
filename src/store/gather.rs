//! Group commit that waits a moment for the writers the last batch released.
//!
//! A writer whose call returns as soon as its entry is visible (an async write) usually
//! writes again within microseconds. When another writer's entry is pending as a batch
//! ends, the next leader used to flush that entry alone at once; the returning writer's
//! entry then waited for that whole flush, and for its own after it. Two writers
//! alternated instead of sharing each flush: an async writer beside a sync writer lost
//! one flush per sync write (`benches/bench_sync.py`). So the next leader waits for
//! the async writers the last batch released to enqueue again, as `commit_delay` in
//! Postgres waits for its siblings, but no longer than the last flush took: past that,
//! the writers already pending would lose more than the returning ones gain.
//!
//! Only writers that usually come back that soon are waited for: each async writer's
//! habit (how soon it enqueued again after its batch ended, smoothed) is kept per thread.
//! A writer that thinks between writes is not waited for, nor is a lone writer (it is the
//! one returning), nor a sync writer (it waits for its replicas before it writes again).

use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// The longest a leader waits, whatever the last flush took.
const MAX_PATIENCE: Duration = Duration::from_millis(1);
/// Writers whose habits are kept; past it, the longest known is forgotten first.
const MAX_HABITS: usize = 64;

/// Who the last batch released, and who came back since.
#[derive(Debug, Default)]
pub(super) struct Returning {
    /// When the last batch ended, and how long its flush took.
    released_at: Option<Instant>,
    last_flush: Duration,
    /// The async writers of the last batch that did not enqueue again yet.
    gone: Vec<ThreadId>,
    /// Those of them a leader waits for (they usually come back within a flush).
    awaited: Vec<ThreadId>,
    /// How soon each recent async writer enqueued again after its batch ended.
    habits: Vec<(ThreadId, Duration)>,
    /// A leader waits for arrivals: the arrival that completes them wakes it.
    gathering: bool,
}

impl Returning {
    /// A batch ended at `now`; its flush took `flush`, and `quick` are its async writers.
    pub(super) fn released(
        &mut self,
        quick: impl Iterator<Item = ThreadId>,
        flush: Duration,
        now: Instant,
    ) {
        self.released_at = Some(now);
        self.last_flush = flush;
        self.gone.clear();
        self.gone.extend(quick);
        let patience = self.patience();
        let habits = &self.habits;
        self.awaited.clear();
        self.awaited
            .extend(self.gone.iter().copied().filter(|writer| {
                habits
                    .iter()
                    .find(|(known, _)| known == writer)
                    .is_none_or(|(_, gap)| *gap <= patience)
            }));
    }

    /// `writer`, an async writer, enqueued an entry at `now`; true if the leader waiting
    /// for it should wake now.
    pub(super) fn arrive(&mut self, writer: ThreadId, now: Instant) -> bool {
        let Some(index) = self.gone.iter().position(|w| *w == writer) else {
            return false;
        };
        self.gone.swap_remove(index);
        let gap = self
            .released_at
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        self.learn(writer, gap);
        let Some(index) = self.awaited.iter().position(|w| *w == writer) else {
            return false;
        };
        self.awaited.swap_remove(index);
        self.gathering && self.all_back()
    }

    fn learn(&mut self, writer: ThreadId, gap: Duration) {
        if let Some((_, habit)) = self.habits.iter_mut().find(|(w, _)| *w == writer) {
            // Smoothed over about four returns: one long pause does not undo a habit.
            *habit = (*habit * 3 + gap) / 4;
            return;
        }
        if self.habits.len() == MAX_HABITS {
            if let Some(slowest) = (0..self.habits.len()).max_by_key(|i| self.habits[*i].1) {
                self.habits.swap_remove(slowest);
            }
        }
        self.habits.push((writer, gap));
    }

    fn patience(&self) -> Duration {
        self.last_flush.min(MAX_PATIENCE)
    }

    /// Whether every awaited writer enqueued again.
    pub(super) fn all_back(&self) -> bool {
        self.awaited.is_empty()
    }

    /// How long the next leader should wait for the others, if at all; it waits from now
    /// (an arrival wakes it) until [`Returning::stop`].
    pub(super) fn start(&mut self) -> Option<Duration> {
        if self.all_back() {
            return None;
        }
        self.gathering = true;
        Some(self.patience())
    }

    /// The leader stopped waiting.
    pub(super) fn stop(&mut self) {
        self.gathering = false;
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;

    const FLUSH: Duration = Duration::from_micros(80);

    /// Two distinct thread ids.
    fn two_writers() -> (ThreadId, ThreadId) {
        let other = thread::spawn(|| thread::current().id()).join().unwrap();
        (thread::current().id(), other)
    }

    #[test]
    fn a_lone_writer_never_waits_for_itself() {
        let (a, _) = two_writers();
        let mut returning = Returning::default();
        let t0 = Instant::now();
        returning.released([a].into_iter(), FLUSH, t0);
        assert!(!returning.arrive(a, t0), "nobody gathers");
        assert_eq!(returning.start(), None);
    }

    #[test]
    fn the_next_leader_waits_for_the_released_async_writers_for_one_flush_at_most() {
        let (a, b) = two_writers();
        let mut returning = Returning::default();
        let t0 = Instant::now();
        returning.released([a, b].into_iter(), FLUSH, t0);
        assert!(!returning.arrive(a, t0), "nobody gathers yet");
        assert_eq!(returning.start(), Some(FLUSH), "b is not back");
        assert!(returning.arrive(b, t0 + FLUSH / 4), "b wakes the leader");
        returning.stop();
        returning.released([a, b].into_iter(), Duration::from_secs(1), t0 + FLUSH);
        assert_eq!(returning.start(), Some(MAX_PATIENCE));
    }

    #[test]
    fn a_writer_that_pauses_between_writes_is_not_waited_for() {
        let (a, b) = two_writers();
        let mut returning = Returning::default();
        let mut now = Instant::now();
        for _ in 0..4 {
            returning.released([a, b].into_iter(), FLUSH, now);
            returning.arrive(a, now + FLUSH / 8);
            returning.arrive(b, now + FLUSH * 4);
            now += FLUSH * 5;
        }
        returning.released([a, b].into_iter(), FLUSH, now);
        returning.arrive(a, now + FLUSH / 8);
        assert_eq!(
            returning.start(),
            None,
            "b usually takes four flushes to come back"
        );
    }

    #[test]
    fn a_batch_of_sync_writers_only_is_not_waited_for() {
        let mut returning = Returning::default();
        returning.released(std::iter::empty(), FLUSH, Instant::now());
        assert_eq!(returning.start(), None);
    }
}
