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
//! Only the leader of a lone entry waits, for one writer, while at most two async writers
//! write: the pattern above. With more writers, entries keep coming, and a leader that
//! waited would hold them all back and leave the disk idle meanwhile.
//!
//! Only writers that usually come back that soon are waited for: each async writer's
//! habit (how soon it enqueued again after its batch ended, smoothed) is kept per thread.
//! A writer that thinks between writes is not waited for, nor is a lone writer (it is the
//! one returning), nor a sync writer (it waits for its replicas before it writes again).

use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// The longest a leader waits, whatever the last flush took.
const MAX_PATIENCE: Duration = Duration::from_millis(1);
/// Writers whose habits are kept; past it, the one seen least recently is forgotten.
const MAX_HABITS: usize = 64;
/// A writer seen this recently is writing now.
const ACTIVE: Duration = Duration::from_millis(2);
/// A leader waits only while at most this many async writers are writing (one beside
/// another writer); with more, entries keep coming without waiting for any.
const MAX_ACTIVE: usize = 2;

/// One async writer's habit.
#[derive(Debug)]
struct Habit {
    writer: ThreadId,
    /// How soon it enqueued again after its batch ended, smoothed (`None` before it was
    /// in a batch and came back).
    gap: Option<Duration>,
    /// When it last enqueued.
    seen: Instant,
}

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
    /// The recent async writers' habits.
    habits: Vec<Habit>,
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
        self.awaited.clear();
        self.gone.extend(quick);
        if self.gone.len() > MAX_ACTIVE {
            // Nobody waits with this many writers (see `start`): no need to know who.
            self.gone.clear();
            return;
        }
        let patience = self.patience();
        let habits = &self.habits;
        self.awaited
            .extend(self.gone.iter().copied().filter(|writer| {
                habits
                    .iter()
                    .find(|habit| habit.writer == *writer)
                    .and_then(|habit| habit.gap)
                    .is_none_or(|gap| gap <= patience)
            }));
    }

    /// `writer` enqueued an entry at `now` (an async write or any other); true if the
    /// leader waiting for it should wake now.
    pub(super) fn arrive(&mut self, writer: ThreadId, now: Instant) -> bool {
        let returned = self.gone.iter().position(|w| *w == writer).map(|index| {
            self.gone.swap_remove(index);
            self.released_at
                .map_or(Duration::ZERO, |at| now.saturating_duration_since(at))
        });
        self.learn(writer, returned, now);
        let Some(index) = self.awaited.iter().position(|w| *w == writer) else {
            return false;
        };
        self.awaited.swap_remove(index);
        self.gathering && self.all_back()
    }

    /// Notes that `writer` enqueued at `now`, `gap` after its batch ended if it was in
    /// the last one.
    fn learn(&mut self, writer: ThreadId, gap: Option<Duration>, now: Instant) {
        // Each return counts at most as a short wait missed: one long pause does not
        // undo a habit for long.
        let gap = gap.map(|gap| gap.min(2 * MAX_PATIENCE));
        if let Some(habit) = self.habits.iter_mut().find(|h| h.writer == writer) {
            if let Some(gap) = gap {
                // Smoothed over about four returns.
                habit.gap = Some(habit.gap.map_or(gap, |habit| (habit * 3 + gap) / 4));
            }
            habit.seen = now;
            return;
        }
        if self.habits.len() == MAX_HABITS {
            if let Some(oldest) = (0..self.habits.len()).min_by_key(|i| self.habits[*i].seen) {
                self.habits.swap_remove(oldest);
            }
        }
        self.habits.push(Habit {
            writer,
            gap,
            seen: now,
        });
    }

    fn patience(&self) -> Duration {
        self.last_flush.min(MAX_PATIENCE)
    }

    /// Whether every awaited writer enqueued again.
    pub(super) fn all_back(&self) -> bool {
        self.awaited.is_empty()
    }

    /// Until when `leader`, about to flush `pending` entries at `now`, should wait (one
    /// flush at most), if at all; it waits (an arrival wakes it) until [`Returning::stop`]. Only a lone entry
    /// waits, for one other writer, while at most two async writers are writing: the
    /// wait holds back every pending entry and idles the disk, to save the one writer a
    /// flush. With more of any, entries keep coming anyway, and the late ones join the
    /// next flush (16 writers lost a fifth of their rate to waits).
    pub(super) fn start(
        &mut self,
        pending: usize,
        leader: ThreadId,
        now: Instant,
    ) -> Option<Instant> {
        if pending != 1 || self.awaited.len() != 1 || self.awaited.contains(&leader) {
            return None;
        }
        let active = self
            .habits
            .iter()
            .filter(|h| now.saturating_duration_since(h.seen) <= ACTIVE)
            .count();
        if active > MAX_ACTIVE {
            return None;
        }
        self.gathering = true;
        Some(now + self.patience())
    }

    /// The leader stopped waiting at `now`. A writer it waited for in vain counts as one
    /// that came back two flushes late: a writer that often does is not waited for until
    /// it shows it comes back sooner again (a new writer, at once).
    pub(super) fn stop(&mut self, now: Instant) {
        self.gathering = false;
        let late = 2 * self.patience();
        for writer in std::mem::take(&mut self.awaited) {
            self.learn(writer, Some(late), now);
            self.gone.retain(|w| *w != writer);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;

    const FLUSH: Duration = Duration::from_micros(80);

    /// `n` distinct thread ids.
    fn writers(n: usize) -> Vec<ThreadId> {
        (0..n)
            .map(|_| thread::spawn(|| thread::current().id()).join().unwrap())
            .collect()
    }

    #[test]
    fn a_lone_writer_never_waits_for_itself() {
        let [a, b] = writers(2)[..] else { panic!() };
        let mut returning = Returning::default();
        let t0 = Instant::now();
        returning.released([a].into_iter(), FLUSH, t0);
        assert_eq!(
            returning.start(1, a, t0),
            None,
            "a leads its own sync write"
        );
        assert!(!returning.arrive(a, t0), "nobody gathers");
        assert_eq!(returning.start(1, b, t0), None, "a is back");
    }

    #[test]
    fn the_leader_of_a_lone_entry_waits_for_the_other_writer_for_one_flush_at_most() {
        let [a, b, s] = writers(3)[..] else { panic!() };
        let mut returning = Returning::default();
        let t0 = Instant::now();
        returning.released([a, b].into_iter(), FLUSH, t0);
        assert_eq!(
            returning.start(1, s, t0),
            None,
            "two are out: entries keep coming"
        );
        assert!(!returning.arrive(a, t0), "nobody gathers yet");
        assert_eq!(
            returning.start(2, s, t0),
            None,
            "the wait would hold back two entries"
        );
        assert_eq!(
            returning.start(1, s, t0),
            Some(t0 + FLUSH),
            "b alone is out: one flush at most"
        );
        assert!(returning.arrive(b, t0 + FLUSH / 4), "b wakes the leader");
        returning.stop(t0 + FLUSH / 4);
        let t1 = t0 + FLUSH;
        returning.released([a, b].into_iter(), Duration::from_secs(1), t1);
        returning.arrive(a, t1);
        assert_eq!(returning.start(1, s, t1), Some(t1 + MAX_PATIENCE));
    }

    #[test]
    fn a_writer_waited_for_in_vain_is_not_waited_for_again_until_it_comes_back_soon() {
        let [a, s] = writers(2)[..] else { panic!() };
        let mut returning = Returning::default();
        let mut now = Instant::now();
        returning.released([a].into_iter(), FLUSH, now);
        assert!(
            returning.start(1, s, now).is_some(),
            "a is new: it may be quick"
        );
        now += FLUSH;
        returning.stop(now);
        returning.released(std::iter::empty(), FLUSH, now);
        returning.arrive(a, now + FLUSH * 10);
        now += FLUSH * 10;
        returning.released([a].into_iter(), FLUSH, now);
        assert_eq!(returning.start(1, s, now), None, "a came back late");
        // Quick returns bring it back within a few batches.
        let mut waited = false;
        for _ in 0..12 {
            returning.arrive(a, now + FLUSH / 8);
            now += FLUSH;
            returning.released([a].into_iter(), FLUSH, now);
            waited = returning.start(1, s, now).is_some();
            returning.stop(now);
            if waited {
                break;
            }
            returning.released([a].into_iter(), FLUSH, now);
        }
        assert!(
            waited,
            "a writer that comes back quickly again is waited for again"
        );
    }

    #[test]
    fn a_writer_that_pauses_between_writes_is_not_waited_for() {
        let [a, b, s] = writers(3)[..] else { panic!() };
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
            returning.start(1, s, now + FLUSH / 8),
            None,
            "b usually takes four flushes to come back"
        );
    }

    #[test]
    fn nobody_waits_while_many_writers_write() {
        let many = writers(4);
        let leader = many[3];
        let mut returning = Returning::default();
        let t0 = Instant::now();
        for writer in &many[..3] {
            returning.arrive(*writer, t0);
        }
        returning.released(many[..2].iter().copied(), FLUSH, t0);
        returning.arrive(many[0], t0 + FLUSH / 8);
        assert_eq!(
            returning.start(1, leader, t0 + FLUSH / 8),
            None,
            "a third writer wrote just now"
        );
        let later = t0 + ACTIVE * 2;
        returning.released(many[..2].iter().copied(), FLUSH, later);
        returning.arrive(many[0], later);
        returning.arrive(many[1], later);
        returning.released(many[..2].iter().copied(), FLUSH, later);
        returning.arrive(many[0], later);
        assert_eq!(
            returning.start(1, leader, later),
            Some(later + FLUSH),
            "the third writer stopped writing"
        );
    }

    #[test]
    fn a_batch_of_sync_writers_only_is_not_waited_for() {
        let [s] = writers(1)[..] else { panic!() };
        let mut returning = Returning::default();
        let t0 = Instant::now();
        returning.released(std::iter::empty(), FLUSH, t0);
        assert_eq!(returning.start(1, s, t0), None);
    }
}
