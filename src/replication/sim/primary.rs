//! The primary's end of every link: what `PrimaryMachine::poll` asks for (ship, heartbeat,
//! drop, wait), the hello and the acks it receives, the links it closes, and its power
//! losses and restarts.

use serde_bytes::ByteBuf;

use super::invariants::Violation;
use super::network::{Frame, Side};
use super::world::{Event, World, EPOCH};
use crate::replication::handshake::{resume_holding, shown_of, LogView};
#[cfg(test)]
use crate::replication::machine::Planted;
use crate::replication::machine::{LinkAction, LinkId, PrimaryMachine, Shipped};
use crate::replication::protocol::{Message, PeerKind};

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
                    durable_lsn,
                } => self.ship(generation, &link, (after_lsn, up_to_lsn), durable_lsn),
                LinkAction::Heartbeat { last_lsn } => {
                    let (members, members_version) =
                        self.primary.heartbeat_sent(&link, last_lsn, now);
                    // A simulated peer records what a heartbeat says at once, and durably.
                    let beat = Message::Heartbeat {
                        last_lsn,
                        oldest_missing_ms: 0,
                        now_ms: now / 1_000,
                        epoch: EPOCH,
                        quorum: 0,
                        members,
                        peers: Vec::new(),
                        settings: None,
                        members_version,
                        member_ids: self.primary.member_ids(),
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

    fn ship(&mut self, generation: u64, link: &LinkId, range: (u64, u64), durable_lsn: u64) {
        let (after_lsn, up_to_lsn) = range;
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
            .shipping(link, &shipped, durable_lsn, self.sim.timeline.now());
        let mut batch = Vec::new();
        for lsn in lsns {
            let payload = self.log.entry(lsn).expect("shipped entries are in the log");
            if !self.sim.rng.chance(self.sim.params.split_per_mille) {
                batch.push(ByteBuf::from(payload.to_vec()));
                continue;
            }
            // Too large for one frame, as the glue sends such entries: in parts.
            let payload = payload.to_vec();
            self.flush_batch(generation, &mut batch, durable_lsn);
            let cut = self.sim.rng.between(1, payload.len() as u64 - 1) as usize;
            for (offset, data) in [(0, &payload[..cut]), (cut, &payload[cut..])] {
                let part = Message::EntryPart {
                    total: payload.len() as u64,
                    offset: offset as u64,
                    data: ByteBuf::from(data.to_vec()),
                    lsn,
                    durable_lsn,
                };
                self.send(generation, Side::Peer, Frame::Wire(part));
            }
        }
        self.flush_batch(generation, &mut batch, durable_lsn);
    }

    fn flush_batch(&mut self, generation: u64, batch: &mut Vec<ByteBuf>, durable_lsn: u64) {
        if !batch.is_empty() {
            let payloads = std::mem::take(batch);
            self.send(
                generation,
                Side::Peer,
                Frame::Wire(Message::Entries {
                    payloads,
                    epoch: EPOCH,
                    durable_lsn,
                }),
            );
        }
    }

    pub(super) fn primary_receives(
        &mut self,
        generation: u64,
        frame: Frame,
    ) -> Result<(), Violation> {
        let Some(conn) = self
            .net
            .conn(generation)
            .filter(|c| c.alive && c.primary_open)
        else {
            return Ok(());
        };
        let node = conn.node;
        let link = conn.link.clone();
        match (frame, link) {
            (
                Frame::Hello {
                    held,
                    flushed_lsn,
                    holds_back,
                },
                None,
            ) => {
                self.accept(generation, node, &held, (flushed_lsn, holds_back));
                Ok(())
            }
            (
                Frame::Wire(Message::Ack {
                    flushed_lsn,
                    applied_lsn,
                    members_version,
                }),
                Some(link),
            ) => {
                let now = self.sim.timeline.now();
                let outcome =
                    self.primary
                        .ack(&link, flushed_lsn, applied_lsn, members_version, now);
                if outcome.established {
                    for settled in self.primary.peers().filter(|p| p.established()) {
                        if let Some(slot) = self.slots.get_mut(&settled.id.name) {
                            slot.1 = false;
                        }
                    }
                }
                if outcome.quorum_lsn.is_some() {
                    self.release()?;
                }
                self.drive(generation);
                Ok(())
            }
            (frame, _) => unreachable!("the simulated peer sent {frame:?} out of turn"),
        }
    }

    /// The hello: the machine takes the peer on (replacing an older link of the same
    /// name, which the primary then closes) and the welcome goes back, with where the peer
    /// resumes (its log cut back to where it matches the primary's); a peer whose name
    /// another store's link holds is refused (the connection closed), as at a real port,
    /// and so is one whose history forked (a refusal sent first).
    fn accept(
        &mut self,
        generation: u64,
        node: usize,
        held: &[(u64, (u64, u32))],
        (flushed_lsn, holds_back): (u64, bool),
    ) {
        let peer = &self.nodes[node];
        if self.primary.held_by_another(&peer.name, peer.store_id) {
            self.primary_closes(generation);
            return;
        }
        let view = |lsn| LogView {
            oldest_lsn: 1,
            last_lsn: self.log.len(),
            id_at_resume: self.log.id(lsn),
            fork_lsn: None,
        };
        let matched = match resume_holding(held, view) {
            #[cfg(test)]
            Ok(_) if self.primary.planted == Planted::TrustHeld => held.last().map_or(0, |h| h.0),
            Ok(lsn) => lsn,
            Err(denied) => {
                let refusal = Message::Refused {
                    reason: denied.reason,
                    code: denied.code,
                    epoch: EPOCH,
                    fork_lsn: denied.fork_lsn,
                };
                // Written before the close, so it arrives before the peer sees the end (the
                // peer closes the connection then).
                self.send(generation, Side::Peer, Frame::Wire(refusal));
                if let Some(conn) = self.net.conn_mut(generation) {
                    conn.primary_open = false;
                }
                return;
            }
        };
        if peer.kind == PeerKind::Replica {
            // On disk before the welcome, as the store glue's slot.
            let joins = self
                .primary
                .would_join(&peer.name, peer.store_id, peer.kind, peer.fsync);
            let slot = self.slots.entry(peer.name.clone()).or_default();
            *slot = (peer.fsync, slot.1 || joins);
        }
        let (link, replaced) = self.primary.connect(
            &peer.name,
            peer.store_id,
            peer.kind,
            peer.fsync,
            matched.min(flushed_lsn),
            self.sim.timeline.now(),
        );
        if peer.counts() && !self.join_rank.contains_key(&peer.name) {
            let rank = self.join_rank.len() as u64 + 1;
            self.join_rank.insert(peer.name.clone(), rank);
        }
        self.primary
            .showing(&link, shown_of(held).min(matched.min(flushed_lsn)));
        if holds_back && self.sim.params.ship_ahead {
            self.primary.hold_back(&link);
        }
        if let Some(old) = replaced.and_then(|old| self.net.by_link(&old)) {
            self.report.faults.dropped += 1;
            self.primary_closes(old);
        }
        self.net.conn_mut(generation).expect("delivered on it").link = Some(link);
        let last_lsn = self.primary.visible_lsn();
        let welcome = Frame::Welcome {
            last_lsn,
            resume_at: matched,
        };
        self.send(generation, Side::Peer, welcome);
        self.drive(generation);
    }

    /// Power loss on the primary: what it had not fsynced is gone, its writers waiting for
    /// a quorum get errors, and every connection dies with the process (the peers notice
    /// a little later). It restarts after a while from its durable log.
    pub(super) fn primary_crash(&mut self) {
        if !self.primary_up {
            return;
        }
        self.report.faults.primary_crashes += 1;
        self.primary_up = false;
        self.log.crash();
        self.sync_waiting.clear();
        for generation in self.net.all() {
            let conn = self.net.conn_mut(generation).expect("listed");
            conn.primary_open = false;
            let node = conn.node;
            if self.net.cut(generation) {
                self.tell_cut(node, generation, Side::Peer);
            }
        }
        self.net.sweep();
        self.primary_born_at = self.net.newest();
        let downtime = self.sim.rng.between(1_000, 30_000);
        self.sim.timeline.after(downtime, Event::PrimaryRestart);
    }

    /// The primary starts again: a new machine over its durable log, knowing its peers
    /// from its slots.
    pub(super) fn primary_restart(&mut self) {
        let config = self.primary.config().clone();
        #[cfg(test)]
        let planted = self.primary.planted;
        self.primary = PrimaryMachine::new(config, self.log.durable_lsn());
        #[cfg(test)]
        {
            self.primary.planted = planted;
        }
        let now = self.sim.timeline.now();
        for (name, &(fsync, joining)) in &self.slots {
            #[cfg(test)]
            let joining = joining && self.sim.config.planted != Planted::ForgetJoining;
            self.primary.remember(name, fsync, joining, 0, now);
        }
        self.primary_up = true;
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
