//! The primary's end of every link: what `PrimaryMachine::poll` asks for (ship, heartbeat,
//! drop, wait), the hello and the acks it receives, and the links it closes.

use serde_bytes::ByteBuf;

use super::network::{Frame, Side};
use super::world::{Event, World, EPOCH};
use crate::replication::machine::{LinkAction, LinkId, Shipped};
use crate::replication::protocol::Message;

impl World {
    pub(super) fn drive_all(&mut self) {
        for generation in self.net.driven() {
            self.drive(generation);
        }
    }

    /// Does what the machine asks for the primary's end of `generation` until it waits.
    pub(super) fn drive(&mut self, generation: u64) {
        loop {
            let Some(link) = self
                .net
                .conn(generation)
                .filter(|c| c.primary_open)
                .and_then(|c| c.link.clone())
            else {
                return;
            };
            let now = self.sim.timeline.now();
            match self.primary.poll(&link, now) {
                LinkAction::Ship {
                    after_lsn,
                    up_to_lsn,
                } => self.ship(generation, &link, after_lsn, up_to_lsn),
                LinkAction::Heartbeat { last_lsn } => {
                    self.primary.heartbeat_sent(&link, now);
                    let beat = Message::Heartbeat {
                        last_lsn,
                        oldest_missing_ms: 0,
                        now_ms: now / 1_000,
                        epoch: EPOCH,
                        quorum: 0,
                        members: 0,
                        peers: Vec::new(),
                    };
                    self.send(generation, Side::Peer, Frame::Wire(beat));
                }
                LinkAction::Drop => {
                    self.report.faults.dropped += 1;
                    self.primary_closes(generation);
                    return;
                }
                LinkAction::WaitUntil(at) => {
                    let conn = self.net.conn_mut(generation).expect("checked above");
                    if conn.wake_at != Some(at) {
                        conn.wake_at = Some(at);
                        self.sim.timeline.at(at, Event::Poll { generation, at });
                    }
                    return;
                }
            }
        }
    }

    fn ship(&mut self, generation: u64, link: &LinkId, after_lsn: u64, up_to_lsn: u64) {
        let last = up_to_lsn.min(after_lsn + self.sim.params.batch);
        let lsns = after_lsn + 1..=last;
        let shipped: Vec<Shipped> = lsns
            .clone()
            .map(|lsn| Shipped {
                lsn,
                commit_ms: 0,
                bytes: self.log.entry(lsn).map_or(0, |e| e.len() as u64),
            })
            .collect();
        self.primary
            .shipping(link, &shipped, self.sim.timeline.now());
        let mut batch = Vec::new();
        for lsn in lsns {
            let payload = self.log.entry(lsn).expect("shipped entries are in the log");
            if !self.sim.rng.chance(self.sim.params.split_per_mille) {
                batch.push(ByteBuf::from(payload.to_vec()));
                continue;
            }
            // Too large for one frame, as the glue sends such entries: in parts.
            let payload = payload.to_vec();
            self.flush_batch(generation, &mut batch);
            let cut = self.sim.rng.between(1, payload.len() as u64 - 1) as usize;
            for (offset, data) in [(0, &payload[..cut]), (cut, &payload[cut..])] {
                let part = Message::EntryPart {
                    total: payload.len() as u64,
                    offset: offset as u64,
                    data: ByteBuf::from(data.to_vec()),
                    lsn,
                };
                self.send(generation, Side::Peer, Frame::Wire(part));
            }
        }
        self.flush_batch(generation, &mut batch);
    }

    fn flush_batch(&mut self, generation: u64, batch: &mut Vec<ByteBuf>) {
        if !batch.is_empty() {
            let payloads = std::mem::take(batch);
            self.send(
                generation,
                Side::Peer,
                Frame::Wire(Message::Entries {
                    payloads,
                    epoch: EPOCH,
                }),
            );
        }
    }

    pub(super) fn primary_receives(&mut self, generation: u64, frame: Frame) {
        let Some(conn) = self
            .net
            .conn(generation)
            .filter(|c| c.alive && c.primary_open)
        else {
            return;
        };
        let node = conn.node;
        let link = conn.link.clone();
        match (frame, link) {
            (Frame::Hello { flushed_lsn }, None) => self.accept(generation, node, flushed_lsn),
            (
                Frame::Wire(Message::Ack {
                    flushed_lsn,
                    applied_lsn,
                }),
                Some(link),
            ) => {
                let now = self.sim.timeline.now();
                let outcome = self.primary.ack(&link, flushed_lsn, applied_lsn, now);
                if outcome.quorum_lsn.is_some() {
                    self.release();
                }
                self.drive(generation);
            }
            (frame, _) => unreachable!("the simulated peer sent {frame:?} out of turn"),
        }
    }

    /// The hello: the machine takes the peer on (replacing an older link of the same
    /// name, which the primary then closes) and the welcome goes back; a peer whose name
    /// another store's link holds is refused (the connection closed), as at a real port.
    fn accept(&mut self, generation: u64, node: usize, flushed_lsn: u64) {
        let peer = &self.nodes[node];
        if self.primary.held_by_another(&peer.name, peer.store_id) {
            self.primary_closes(generation);
            return;
        }
        let (link, replaced) = self.primary.connect(
            &peer.name,
            peer.store_id,
            peer.kind,
            peer.fsync,
            flushed_lsn,
            self.sim.timeline.now(),
        );
        if let Some(old) = replaced.and_then(|old| self.net.by_link(&old)) {
            self.report.faults.dropped += 1;
            self.primary_closes(old);
        }
        self.net.conn_mut(generation).expect("delivered on it").link = Some(link);
        let last_lsn = self.primary.visible_lsn();
        self.send(generation, Side::Peer, Frame::Welcome { last_lsn });
        self.drive(generation);
    }

    /// The primary closes its end of `generation`; the peer notices a little later.
    fn primary_closes(&mut self, generation: u64) {
        let Some(conn) = self.net.conn_mut(generation) else {
            return;
        };
        conn.primary_open = false;
        let (node, link) = (conn.node, conn.link.clone());
        if let Some(link) = link {
            self.primary.disconnect(&link);
        }
        if self.net.cut(generation) {
            self.tell_cut(node, generation, Side::Peer);
        }
        self.net.sweep();
    }
}
