//! The trace of a run: its last lines, for a failure to print, and a hash of every step,
//! for a determinism test to compare.

use super::network::Msg;
use super::world::Event;
use super::CrashPoint;
use crate::replication::machine::Micros;

/// One line of the trace: a step, a crash at a named point, or an epoch begun.
#[derive(Debug, Clone)]
enum Line {
    Step(Event),
    Crash(usize, CrashPoint),
    Began(usize, u64),
}

/// Lines a failure shows.
const TAIL: usize = 60;

/// The last steps of a run, for a failure to print, and a hash of all of them.
#[derive(Debug, Default)]
pub(super) struct Trace(super::super::trace::Trace<Line, TAIL>);

impl Trace {
    /// Notes the step about to run.
    pub fn record(&mut self, step: u64, at: Micros, event: &Event) {
        self.0.push(step, at, Line::Step(event.clone()));
    }

    /// Notes that `member` crashed at `point`.
    pub fn note(&mut self, step: u64, at: Micros, member: usize, point: CrashPoint) {
        self.0.push(step, at, Line::Crash(member, point));
    }

    /// Notes that `member` began `epoch`.
    pub fn began(&mut self, step: u64, at: Micros, member: usize, epoch: u64) {
        self.0.push(step, at, Line::Began(member, epoch));
    }

    /// Folds a step's time, sequence and outcome into the hash.
    pub fn fold(&mut self, at: Micros, sequence: u64, outcome: [u64; 3]) {
        self.0.fold(at, sequence, outcome);
    }

    /// The hash of every step so far.
    pub fn hash(&self) -> u64 {
        self.0.hash()
    }

    /// The last lines, oldest first.
    pub fn tail(&self) -> Vec<String> {
        self.0.tail(|line| match line {
            Line::Step(event) => describe(event),
            Line::Crash(member, point) => format!("  m{member} crashes: {point:?}"),
            Line::Began(member, epoch) => format!("  m{member} begins epoch {epoch}"),
        })
    }
}

fn describe(event: &Event) -> String {
    let Event::Deliver { from, to, msg } = event else {
        return format!("{event:?}");
    };
    let what = match msg {
        Msg::Ship(ship) => {
            let lsns = ship.entries.first().zip(ship.entries.last());
            format!(
                "stream of epoch {} (log ends at {}, history {:?}), entries {:?}",
                ship.epoch,
                ship.last_lsn,
                ship.history.pairs(),
                lsns.map(|(a, b)| a.lsn..=b.lsn)
            )
        }
        Msg::Fetched { epoch, entries } => format!(
            "fetched for epoch {epoch}: {} entries from {:?}",
            entries.len(),
            entries.first().map(|e| e.lsn)
        ),
        Msg::Answer { epoch, answer } => format!("answer to epoch {epoch}: {answer:?}"),
        other => format!("{other:?}"),
    };
    format!("m{from} -> m{to}: {what}")
}
