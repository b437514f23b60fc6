//! The messages between members and the links that carry them: FIFO per direction (as a
//! TCP connection is), each message delayed, maybe lost, and lost while its link is cut.

use super::member::{Entry, Ship, ShipReply};
use crate::replication::machine::promotion::Answer;
use crate::replication::machine::Micros;

/// What one member sends another.
#[derive(Debug, Clone)]
pub(super) enum Msg {
    /// Candidate -> member: raise your epoch to `epoch` (a grant) or say what you saw.
    Raise { epoch: u64 },
    /// Member -> candidate: its answer to `Raise { epoch }`.
    Answer { epoch: u64, answer: Answer },
    /// Primary -> member: its stream.
    Ship(Ship),
    /// Member -> primary: its answer to a stream of `epoch`.
    Shipped { epoch: u64, reply: ShipReply },
    /// Candidate of `epoch` -> member: send your entries `from..=to`.
    Fetch { epoch: u64, from: u64, to: u64 },
    /// Member -> candidate of `epoch`: the entries asked for (those it holds).
    Fetched { epoch: u64, entries: Vec<Entry> },
}

/// Every directed link between `members` members.
#[derive(Debug)]
pub(super) struct Links {
    members: usize,
    /// When the last message sent on each link arrives: a later one never overtakes it.
    last_arrival: Vec<Micros>,
    /// Each link is cut until then.
    cut_until: Vec<Micros>,
}

impl Links {
    pub fn new(members: usize) -> Self {
        Self {
            members,
            last_arrival: vec![0; members * members],
            cut_until: vec![0; members * members],
        }
    }

    fn index(&self, from: usize, to: usize) -> usize {
        from * self.members + to
    }

    /// Whether the link `from -> to` is cut at `now`.
    pub fn cut(&self, from: usize, to: usize, now: Micros) -> bool {
        now < self.cut_until[self.index(from, to)]
    }

    /// Cuts both directions between `a` and `b` until `until`.
    pub fn cut_between(&mut self, a: usize, b: usize, until: Micros) {
        for (from, to) in [(a, b), (b, a)] {
            let index = self.index(from, to);
            self.cut_until[index] = self.cut_until[index].max(until);
        }
    }

    /// When a message sent now on `from -> to` with `delay` arrives.
    pub fn arrival(&mut self, from: usize, to: usize, now: Micros, delay: Micros) -> Micros {
        let index = self.index(from, to);
        let at = self.last_arrival[index].max(now + delay);
        self.last_arrival[index] = at;
        at
    }
}
