//! The simulator's only sources of change: a seeded generator and a queue of events
//! ordered by `(time, sequence)`, so that a run is a pure function of its seed.

use std::collections::BTreeMap;

use crate::replication::machine::Micros;

/// splitmix64: small, fast, and good enough to spread faults over a run. Our own, so a
/// seed replays the same on every platform and every version of every dependency.
#[derive(Debug, Clone)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    /// A generator started from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..=high` (`low` if the range is empty).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        // The modulo bias is below 2^-40 for the ranges a simulation uses.
        low + self.next_u64() % (high - low + 1)
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.next_u64() % 1000 < per_mille
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.between(0, choices.len() as u64 - 1) as usize]
    }
}

/// A simulated clock and the events scheduled on it. Events at the same time run in the
/// order they were scheduled, which keeps FIFO links FIFO and every run reproducible.
#[derive(Debug)]
pub struct Timeline<E> {
    now: Micros,
    sequence: u64,
    queue: BTreeMap<(Micros, u64), E>,
}

impl<E> Timeline<E> {
    /// An empty timeline at time zero.
    #[must_use]
    pub fn new() -> Self {
        Self {
            now: 0,
            sequence: 0,
            queue: BTreeMap::new(),
        }
    }

    /// The simulated time, in microseconds.
    #[must_use]
    pub fn now(&self) -> Micros {
        self.now
    }

    /// Schedules `event` at `at` (never in the past).
    pub fn at(&mut self, at: Micros, event: E) {
        self.sequence += 1;
        self.queue.insert((at.max(self.now), self.sequence), event);
    }

    /// Schedules `event` `delay` microseconds from now.
    pub fn after(&mut self, delay: Micros, event: E) {
        self.at(self.now + delay, event);
    }

    /// The next event with its sequence number, the clock moved to its time.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        let ((at, sequence), event) = self.queue.pop_first()?;
        self.now = at;
        Some((sequence, event))
    }
}

impl<E> Default for Timeline<E> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_a_pure_function_of_its_seed() {
        let draws = |seed| {
            let mut rng = SimRng::new(seed);
            (0..5).map(|_| rng.between(3, 9)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        assert!(draws(7).iter().all(|d| (3..=9).contains(d)));
    }

    #[test]
    fn events_at_one_time_run_in_the_order_they_were_scheduled() {
        let mut timeline = Timeline::new();
        timeline.at(10, "b");
        timeline.at(5, "a");
        timeline.at(10, "c");
        let order: Vec<_> = std::iter::from_fn(|| timeline.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, vec!["a", "b", "c"]);
        assert_eq!(timeline.now(), 10);
    }
}
