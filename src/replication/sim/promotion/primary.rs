//! A primary of one epoch: takes writes, ships its log to every member, counts durable
//! acks toward the quorum to acknowledge sync writes, and steps down once a member says
//! it has seen a newer epoch.

use std::collections::VecDeque;

use super::invariants::Violation;
use super::member::{Entry, Role, Ship, ShipReply};
use super::network::Msg;
use super::world::{Event, World};

/// What a member leading an epoch keeps (lost in a crash).
#[derive(Debug, Clone)]
pub(super) struct Leading {
    pub epoch: u64,
    /// The next LSN to ship to each member.
    next: Vec<u64>,
    /// The last LSN each member acked holding durably, in this epoch.
    matched: Vec<u64>,
    /// Members that reported a fork: nothing more is shipped to them.
    diverged: Vec<bool>,
    /// Sync writes waiting for the quorum: `(lsn, write)`, in LSN order.
    waiting: VecDeque<(u64, u64)>,
}

impl Leading {
    /// Leading `epoch` among `members`, its own log ending at `last_lsn`.
    pub fn new(epoch: u64, members: usize, last_lsn: u64) -> Self {
        Self {
            epoch,
            next: vec![last_lsn + 1; members],
            matched: vec![0; members],
            diverged: vec![false; members],
            waiting: VecDeque::new(),
        }
    }
}

impl World {
    fn leading(&mut self, member: usize, epoch: u64) -> Option<&mut Leading> {
        match self.role_in(member, epoch)? {
            Role::Primary(leading) => Some(leading),
            _ => None,
        }
    }

    /// A writer writes to one of the members that believe they are primary (more than
    /// one in a split brain).
    pub(super) fn write(&mut self, sync: bool) -> Result<(), Violation> {
        let gap = self.sim.rng.between(1, 2 * self.sim.params.write_gap);
        let sync_next = self.sim.rng.chance(self.sim.params.sync_per_mille);
        self.sim
            .timeline
            .after(gap, Event::Write { sync: sync_next });
        let primaries: Vec<(usize, u64)> = (0..self.members.len())
            .filter(|&m| self.members[m].up)
            .filter_map(|m| self.members[m].leads().map(|epoch| (m, epoch)))
            .collect();
        if primaries.is_empty() {
            return Ok(());
        }
        let (member, epoch) = self.sim.rng.pick(&primaries);
        self.writes += 1;
        self.report.writes += 1;
        let entry = Entry::after(self.members[member].log.last(), epoch, self.writes);
        self.members[member].log.push(entry);
        if sync {
            let write = self.writes;
            if let Some(leading) = self.leading(member, epoch) {
                leading.waiting.push_back((entry.lsn, write));
            }
        }
        self.release(member, epoch)
    }

    /// Primary `member` ships what each member lacks (an empty stream still fences and
    /// checks for forks), then schedules its next round.
    pub(super) fn ship_all(&mut self, member: usize, epoch: u64) {
        if !self.members[member].up || self.members[member].leads() != Some(epoch) {
            return;
        }
        let batch = self.sim.params.batch;
        for other in 0..self.members.len() {
            let Some(leading) = self.leading(member, epoch) else {
                return;
            };
            if other == member || leading.diverged[other] {
                continue;
            }
            let from = leading.next[other];
            let own = &self.members[member];
            let end = own.last_lsn().min(from + batch - 1);
            let entries = own
                .log
                .get(from as usize - 1..end as usize)
                .unwrap_or_default()
                .to_vec();
            let ship = Ship {
                epoch,
                history: own.history.clone(),
                last_lsn: own.last_lsn(),
                entries,
            };
            self.send(member, other, Msg::Ship(ship));
        }
        self.tick_soon(member, epoch);
    }

    /// Primary `member` of `epoch` hears `from`'s answer to its stream.
    pub(super) fn shipped(
        &mut self,
        member: usize,
        from: usize,
        epoch: u64,
        reply: ShipReply,
    ) -> Result<(), Violation> {
        let Some(leading) = self.leading(member, epoch) else {
            return Ok(());
        };
        match reply {
            ShipReply::Fenced { seen } => {
                if self.members[member].hear(seen) {
                    self.report.deposed += 1;
                }
                Ok(())
            }
            ShipReply::Diverged { .. } => {
                leading.diverged[from] = true;
                Ok(())
            }
            ShipReply::Ack { flushed_lsn } => {
                leading.matched[from] = leading.matched[from].max(flushed_lsn);
                leading.next[from] = flushed_lsn + 1;
                self.release(member, epoch)
            }
        }
    }

    /// Acknowledges the sync writes that `quorum` members (the primary included) now
    /// hold durably.
    fn release(&mut self, member: usize, epoch: u64) -> Result<(), Violation> {
        let quorum = self.sim.config.quorum;
        let own = self.members[member].last_lsn();
        let Some(leading) = self.leading(member, epoch) else {
            return Ok(());
        };
        let mut held: Vec<u64> = leading.matched.clone();
        held[member] = own;
        held.sort_unstable_by(|a, b| b.cmp(a));
        let covered = held[quorum - 1];
        let mut acked = Vec::new();
        while let Some(&(lsn, write)) = leading.waiting.front().filter(|(l, _)| *l <= covered) {
            leading.waiting.pop_front();
            acked.push((lsn, write));
        }
        for (lsn, write) in acked {
            self.sync_acked(member, epoch, lsn, write)?;
        }
        Ok(())
    }

    /// Counts what a stream did to member `to`.
    pub(super) fn note_follow(&mut self, to: usize, was_primary: bool, reply: ShipReply) {
        match reply {
            ShipReply::Fenced { .. } => self.report.fenced += 1,
            ShipReply::Diverged { .. } => self.report.diverged += 1,
            ShipReply::Ack { .. } => {}
        }
        if was_primary && self.members[to].leads().is_none() {
            self.report.deposed += 1;
        }
    }
}
