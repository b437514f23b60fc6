//! Sending frames, and every fault the network and the peers suffer: cuts, partitions,
//! crashes, frames of old connections arriving late, and entry frames duplicated or
//! reordered within one connection (which no TCP does; the replica machine must refuse or
//! skip them rather than apply anything out of order).

use super::invariants::{Invariant, Violation};
use super::network::{Frame, Side};
use super::world::{Event, World};
use crate::replication::machine::{AckOutcome, LinkId};
use crate::replication::protocol::Message;
use crate::replication::status::LinkState;

impl World {
    /// Sends `frame` toward the `to` end of `generation`: lost if the connection is dead,
    /// otherwise FIFO after a random delay, unless a fault strikes it.
    pub(super) fn send(&mut self, generation: u64, to: Side, frame: Frame) {
        let Some(conn) = self.net.conn(generation).filter(|c| c.alive) else {
            return;
        };
        let (node, link) = (conn.node, conn.link.clone());
        let delay = self.delay();
        let now = self.sim.timeline.now();
        if !self.healed && self.sim.rng.chance(self.sim.params.stale_per_mille) {
            let late = delay + self.sim.rng.between(self.sim.params.max_delay, 200_000);
            let stale = Event::Stale {
                node,
                generation,
                to,
                link,
                frame: frame.clone(),
            };
            self.sim.timeline.after(late, stale);
        }
        // Entry frames, whole or in parts: every part names its entry's LSN, so a repeated
        // tail of an equal-size entry at the same offset is refused too (seed 88702 of a
        // version without the LSN glued one on).
        let entries = matches!(
            frame,
            Frame::Wire(Message::Entries { .. } | Message::EntryPart { .. })
        );
        let misorder =
            entries && !self.healed && self.sim.rng.chance(self.sim.params.misorder_per_mille);
        if misorder {
            self.report.faults.misordered += 1;
            if self.sim.rng.chance(500) {
                // A copy that arrives after frames sent later.
                let extra = self.sim.rng.between(1, 3 * self.sim.params.max_delay);
                let copy = Event::Deliver {
                    generation,
                    to,
                    frame: frame.clone(),
                };
                self.sim.timeline.after(delay + extra, copy);
            } else {
                // A frame that overtakes the ones sent before it.
                let overtaking = self.sim.rng.between(0, 20);
                let event = Event::Deliver {
                    generation,
                    to,
                    frame,
                };
                self.sim.timeline.after(overtaking, event);
                return;
            }
        }
        let at = self.net.arrival(generation, to, now, delay);
        let event = Event::Deliver {
            generation,
            to,
            frame,
        };
        self.sim.timeline.at(at, event);
    }

    /// A frame of connection `generation` arrives late. While that connection is still
    /// open at the receiving end it would be a duplicate, another fault: it is dropped.
    /// Otherwise a peer's transport reads only its current connection (it is discarded);
    /// the primary's machine is handed the ack with the old link's id and must ignore it.
    pub(super) fn stale(
        &mut self,
        node: usize,
        generation: u64,
        to: Side,
        link: Option<LinkId>,
        frame: Frame,
    ) -> Result<(), Violation> {
        let open = match to {
            Side::Primary => self.net.conn(generation).is_some_and(|c| c.primary_open),
            Side::Peer => self.nodes[node].conn == Some(generation),
        };
        if open {
            return Ok(());
        }
        self.report.faults.stale_frames += 1;
        if to == Side::Primary && (generation <= self.primary_born_at || !self.primary_up) {
            // Its process is gone (a power loss): no socket of it reads anything.
            return Ok(());
        }
        let (
            Side::Primary,
            Some(link),
            Frame::Wire(Message::Ack {
                flushed_lsn,
                applied_lsn,
                members_version,
            }),
        ) = (to, link, frame)
        else {
            return Ok(());
        };
        let acked = |world: &World| {
            world
                .primary
                .peers()
                .find(|p| p.id.name == link.name)
                .map(|p| (p.acked_lsn, p.applied_lsn))
        };
        self.report.faults.stale_acks += 1;
        let before = acked(self);
        let now = self.sim.timeline.now();
        let outcome = self
            .primary
            .ack(&link, flushed_lsn, applied_lsn, members_version, now);
        if outcome != AckOutcome::default() || acked(self) != before {
            return Err(Violation::new(
                Invariant::StaleFrameIgnored,
                format!(
                    "an ack of closed link {}#{} changed the primary: {outcome:?}",
                    link.name, link.generation
                ),
            ));
        }
        Ok(())
    }

    /// The `side` end of `generation` learns that the connection ended.
    pub(super) fn see_cut(&mut self, node: usize, generation: u64, side: Side) {
        match side {
            Side::Peer => self.peer_sees_cut(node, generation),
            Side::Primary => {
                let Some(conn) = self.net.conn_mut(generation).filter(|c| c.primary_open) else {
                    return;
                };
                conn.primary_open = false;
                if let Some(link) = conn.link.clone() {
                    self.primary.disconnect(&link);
                }
                self.net.sweep();
            }
        }
    }

    /// Strikes one random peer with a cut, a partition or a crash, or now and then the
    /// primary with a power loss.
    pub(super) fn fault(&mut self) {
        if self.healed {
            return;
        }
        let node = self.sim.rng.between(0, self.nodes.len() as u64 - 1) as usize;
        if self.sim.rng.chance(self.sim.params.primary_crash_per_mille) {
            self.primary_crash();
        } else {
            match self.sim.rng.between(0, 9) {
                0..=4 => self.cut(node),
                5..=7 => self.partition(node),
                _ => self.crash(node),
            }
        }
        let gap = self.sim.params.fault_gap;
        let next = self.sim.rng.between(gap / 2, gap * 3 / 2);
        self.sim.timeline.after(next, Event::Fault);
    }

    /// Cuts the peer's connection: what is in flight is lost, both ends notice later.
    fn cut(&mut self, node: usize) {
        let Some(generation) = self.nodes[node].conn else {
            return;
        };
        if self.net.cut(generation) {
            self.report.faults.cuts += 1;
            for side in [Side::Primary, Side::Peer] {
                self.tell_cut(node, generation, side);
            }
        }
    }

    /// Partitions the peer for a while: its connection goes silent (the peer's read
    /// times out; the primary notices only half the time, else its stall timeout must)
    /// and reconnections fail until the partition ends.
    fn partition(&mut self, node: usize) {
        self.report.faults.partitions += 1;
        let until = self.sim.timeline.now() + self.sim.rng.between(5_000, 100_000);
        self.nodes[node].partitioned_until = until;
        let Some(generation) = self.nodes[node].conn else {
            return;
        };
        if !self.net.cut(generation) {
            return;
        }
        let read_timeout = self.sim.rng.between(self.sim.params.max_delay, 60_000);
        let event = Event::SeeCut {
            node,
            generation,
            side: Side::Peer,
        };
        self.sim.timeline.after(read_timeout, event);
        if self.sim.rng.chance(500) {
            self.tell_cut(node, generation, Side::Primary);
        }
    }

    /// Faults and writes stop and partitions heal: from here every peer must catch up.
    pub(super) fn heal(&mut self) {
        self.healed = true;
        for node in &mut self.nodes {
            node.partitioned_until = 0;
        }
    }

    /// Where the primary's machine thinks the peer `name` stands (for the liveness report).
    pub(super) fn link_state(&self, name: &str) -> Option<LinkState> {
        self.primary
            .peers()
            .find(|p| p.id.name == name)
            .map(|p| p.state)
    }
}
