//! The trace of a run, as both simulators keep it: its last lines, for a failure to
//! print, and a hash of every step, for a determinism test to compare.

use std::collections::VecDeque;

use super::disk::chain;
use crate::replication::machine::Micros;

/// The last `TAIL` lines of a run (of the simulator's own kind `L`), and a hash of every
/// step.
#[derive(Debug)]
pub(crate) struct Trace<L, const TAIL: usize> {
    tail: VecDeque<(u64, Micros, L)>,
    hash: u64,
}

impl<L, const TAIL: usize> Default for Trace<L, TAIL> {
    fn default() -> Self {
        Self {
            tail: VecDeque::with_capacity(TAIL),
            hash: 0,
        }
    }
}

impl<L, const TAIL: usize> Trace<L, TAIL> {
    /// Notes `line` at `step` (time `at`), forgetting the oldest beyond `TAIL`.
    pub fn push(&mut self, step: u64, at: Micros, line: L) {
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        // Described only if a failure prints it: formatting every step would cost more
        // than the step.
        self.tail.push_back((step, at, line));
    }

    /// Folds a step's time, sequence and outcome into the hash.
    pub fn fold(&mut self, at: Micros, sequence: u64, outcome: [u64; 3]) {
        let mut bytes = [0u8; 40];
        for (slot, value) in bytes
            .chunks_exact_mut(8)
            .zip([at, sequence].into_iter().chain(outcome))
        {
            slot.copy_from_slice(&value.to_le_bytes());
        }
        self.hash = chain(self.hash, &bytes);
    }

    /// The hash of every step so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The last lines, oldest first, each as `step N t=Tus ` and what `describe` says.
    pub fn tail(&self, describe: impl Fn(&L) -> String) -> Vec<String> {
        self.tail
            .iter()
            .map(|(step, at, line)| format!("step {step} t={at}us {}", describe(line)))
            .collect()
    }
}
