//! What both simulators hand back when a promise breaks: the invariant and what was seen
//! (a [`Violation`], inside a run), and the [`Failure`] made of it, with the seed, step
//! and trace that replay it.

use std::fmt;

use crate::replication::machine::Micros;

/// An invariant that failed, and what was seen.
#[derive(Debug)]
pub(crate) struct Violation<I> {
    pub invariant: I,
    pub detail: String,
}

impl<I> Violation<I> {
    pub fn new(invariant: I, detail: String) -> Self {
        Self { invariant, detail }
    }

    /// The failure of `seed`'s run at `step` (time `at`), its trace ending in `trace_tail`.
    pub fn failure(
        self,
        seed: u64,
        (step, at): (u64, Micros),
        trace_tail: Vec<String>,
        replay: String,
    ) -> Failure<I> {
        Failure {
            seed,
            step,
            at,
            invariant: self.invariant,
            detail: self.detail,
            trace_tail,
            replay,
        }
    }
}

/// A broken promise: the seed and step that replay it, and the last steps before it.
///
/// `I` is the simulator's own list of promises: [`sim::Invariant`](super::Invariant) or
/// [`promotion::Invariant`](super::promotion::Invariant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure<I> {
    /// The seed of the run.
    pub seed: u64,
    /// The step (1-based event count) after which the invariant failed.
    pub step: u64,
    /// Simulated time of that step.
    pub at: Micros,
    /// Which promise broke.
    pub invariant: I,
    /// What exactly was seen.
    pub detail: String,
    /// The last steps, oldest first.
    pub trace_tail: Vec<String>,
    /// The command that replays it.
    pub replay: String,
}

impl<I: fmt::Display> fmt::Display for Failure<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} broke `{}` at step {} (t={}us): {}",
            self.seed, self.invariant, self.step, self.at, self.detail
        )?;
        for line in &self.trace_tail {
            writeln!(f, "  {line}")?;
        }
        writeln!(f, "replay: {}", self.replay)
    }
}

impl<I: fmt::Debug + fmt::Display> std::error::Error for Failure<I> {}
