//! The peers' side of the world: each peer's machine, disk and connection, and what it
//! does with frames, fsyncs, crashes and restarts.

use super::disk::SimDisk;
use super::invariants::{Invariant, Violation};
use super::network::{Frame, Side};
use super::world::{Event, World, EPOCH};
use crate::codec::payload_lsn;
use crate::error::ReplicationError;
#[cfg(test)]
use crate::replication::machine::Planted;
use crate::replication::machine::{Micros, ReplicaAction, ReplicaMachine, MAX_AHEAD_ENTRIES};
use crate::replication::protocol::{Message, PeerKind};
use crate::replication::status::LinkState;

/// One replica or consumer.
#[derive(Debug, Clone)]
#[allow(clippy::struct_excessive_bools)] // independent facts about one peer
pub(super) struct Node {
    /// Its slot name.
    pub name: String,
    /// Its store's id, which survives its crashes (0 for a consumer, which has no store).
    pub store_id: u64,
    /// Replica or consumer.
    pub kind: PeerKind,
    /// Whether it fsyncs before it acks (else it acks its page cache).
    pub fsync: bool,
    /// Whether it holds entries back from its readers until the primary says they are
    /// durable there.
    pub holds_back: bool,
    /// Its store's durable mark that it was sent entries its primary had not confirmed:
    /// a restart then holds back its last entries (see `Store::expect_unconfirmed`).
    pub marked: bool,
    /// What its last restart hid that it had shown, durably: `(showed, shows)`.
    pub hid: Option<(u64, u64)>,
    pub machine: ReplicaMachine,
    pub disk: SimDisk,
    /// The highest LSN it showed its readers as far as its acks tell, in any incarnation.
    pub shown: u64,
    /// The member count of the last heartbeat it received, recorded durably (as the
    /// store glue does before the machine sees the heartbeat): what a promotion of it, or
    /// its grant to another, would count on.
    pub recorded_members: u64,
    /// Its end of its current connection, while it believes it is connected.
    pub conn: Option<u64>,
    /// False while crashed.
    pub up: bool,
    /// Connection attempts fail until then.
    pub partitioned_until: Micros,
    /// Bugs planted in every machine it starts.
    #[cfg(test)]
    pub planted: Planted,
}

impl Node {
    pub fn new(index: usize, kind: PeerKind, fsync: bool, holds_back: bool) -> Self {
        let machine = ReplicaMachine::new(0, 0, EPOCH, 0);
        let role = match (kind, fsync) {
            (PeerKind::Replica, true) => "replica",
            (PeerKind::Replica, false) => "lazy",
            _ => "consumer",
        };
        Self {
            name: format!("{role}-{index}"),
            store_id: if kind == PeerKind::Replica {
                index as u64 + 1
            } else {
                0
            },
            kind,
            fsync,
            holds_back,
            marked: false,
            hid: None,
            machine: if holds_back {
                machine.holding_back(0)
            } else {
                machine
            },
            disk: SimDisk::default(),
            shown: 0,
            recorded_members: 0,
            conn: None,
            up: true,
            partitioned_until: 0,
            #[cfg(test)]
            planted: Planted::default(),
        }
    }

    /// The highest LSN it showed its readers, now or in an earlier incarnation (a restart
    /// may hide its last entries again until its primary confirms them: they stay
    /// applied, durably, and readers see them again once confirmed).
    pub fn shown_ever(&self) -> u64 {
        self.shown.max(self.machine.applied_lsn())
    }

    /// Whether its acks count toward the quorum.
    pub fn counts(&self) -> bool {
        self.kind == PeerKind::Replica && self.fsync
    }

    /// A machine started from what the disk holds durably, as a restarted process.
    pub fn fresh_machine(&self) -> ReplicaMachine {
        let durable = self.disk.durable_lsn();
        #[allow(unused_mut)] // planted bugs exist in test builds only
        let mut machine = if self.holds_back {
            // If marked, its recovery holds back the last entries its primary may have
            // shipped ahead, not knowing which were confirmed.
            #[allow(unused_mut)] // planted bugs exist in test builds only
            let mut confirmed = if self.marked {
                durable.saturating_sub(MAX_AHEAD_ENTRIES)
            } else {
                durable
            };
            #[cfg(test)]
            if self.planted == Planted::ReplayHeld {
                confirmed = durable;
            }
            ReplicaMachine::new(durable, confirmed, EPOCH, EPOCH).holding_back(confirmed)
        } else {
            ReplicaMachine::new(durable, durable, EPOCH, EPOCH)
        };
        #[cfg(test)]
        {
            machine.planted = self.planted;
        }
        machine
    }

    /// Entries about to be appended: if its primary has not confirmed them all, its store
    /// marks so, durably, before they reach the log.
    fn expect_unconfirmed(&mut self) {
        #[cfg(test)]
        if self.planted == Planted::NeverMarkUnconfirmed {
            return;
        }
        if self.holds_back && self.machine.appended_lsn() > self.machine.confirmed_lsn() {
            self.marked = true;
        }
    }

    /// A new connection: a store that shows all its log holds clears the mark (its new
    /// primary may not ship ahead).
    fn forget_unconfirmed(&mut self) {
        #[cfg(test)]
        if self.planted == Planted::AlwaysMarkUnconfirmed {
            self.marked |= self.holds_back;
            return;
        }
        if self.machine.applied_lsn() >= self.disk.len() {
            self.marked = false;
        }
    }

    /// What its log holds, for a hello: each entry from its confirmed LSN to the end of
    /// its log if it holds back (durable or not: an entry it acknowledged after the hello
    /// is one of them), else its last durable entry.
    fn held(&self) -> Vec<(u64, (u64, u32))> {
        let flushed = self.machine.flushed_lsn();
        let (from, to) = if self.holds_back {
            (self.machine.confirmed_lsn().min(flushed), self.disk.len())
        } else {
            (flushed, flushed)
        };
        (from..=to)
            .map(|lsn| (lsn, self.disk.id(lsn).expect("the log holds them")))
            .collect()
    }

    /// What its store shows readers once entries up to `appended` are applied: all of
    /// them, unless it holds back (then what it was allowed to show).
    fn shown(&self, appended: u64) -> u64 {
        if self.holds_back {
            self.machine.applied_lsn()
        } else {
            appended
        }
    }

    /// The log's end as acks may claim it: what is fsynced, or for a peer that does not
    /// fsync, its page cache.
    fn flushed(&self) -> u64 {
        if self.fsync {
            self.disk.durable_lsn()
        } else {
            self.disk.len()
        }
    }
}

impl World {
    fn backoff(&mut self) -> Micros {
        self.sim.rng.between(1_000, 20_000)
    }

    pub(super) fn connect(&mut self, node: usize) {
        let now = self.sim.timeline.now();
        let peer = &self.nodes[node];
        if !peer.up || peer.conn.is_some() {
            return;
        }
        if now < peer.partitioned_until || !self.primary_up {
            let backoff = self.backoff();
            self.sim.timeline.after(backoff, Event::Connect { node });
            return;
        }
        self.nodes[node].forget_unconfirmed();
        let generation = self.net.open(node);
        let hello = Frame::Hello {
            held: self.nodes[node].held(),
            flushed_lsn: self.nodes[node].machine.flushed_lsn(),
            holds_back: self.nodes[node].holds_back,
        };
        self.nodes[node].conn = Some(generation);
        self.send(generation, Side::Primary, hello);
    }

    pub(super) fn peer_receives(&mut self, generation: u64, frame: Frame) -> Result<(), Violation> {
        let Some(node) = self.nodes.iter().position(|n| n.conn == Some(generation)) else {
            return Ok(());
        };
        if !self.net.alive(generation) {
            return Ok(());
        }
        let outcome = match frame {
            Frame::Welcome {
                last_lsn,
                resume_at,
            } => return self.welcomed(node, last_lsn, resume_at),
            Frame::Wire(message) => {
                if let Message::Heartbeat { members, .. } = &message {
                    self.nodes[node].recorded_members = *members;
                }
                self.nodes[node].machine.receive(message)
            }
            Frame::Hello { .. } => unreachable!("the primary never says hello"),
        };
        match outcome {
            Ok(actions) => self.perform(node, actions),
            Err(ReplicationError::Diverged { reason, .. }) => Err(Violation::new(
                Invariant::PrefixOfPrimaryLog,
                format!(
                    "{} was refused as diverged: {reason}",
                    self.nodes[node].name
                ),
            )),
            Err(_) => {
                self.report.faults.refused += 1;
                self.peer_drops(node);
                Ok(())
            }
        }
    }

    /// The welcome: the peer resumes at `resume_at`, its log cut back to it if it holds
    /// more (entries it held back, which the primary lost); then its log must be a prefix
    /// of the primary's.
    fn welcomed(&mut self, node: usize, last_lsn: u64, resume_at: u64) -> Result<(), Violation> {
        let peer = &mut self.nodes[node];
        if peer.machine.welcomed(EPOCH, last_lsn, false).is_err() {
            self.report.faults.refused += 1;
            self.peer_drops(node);
            return Ok(());
        }
        if let Some(cut) = peer.machine.resume_at(resume_at) {
            peer.disk.cut(cut);
            self.report.faults.held_cut += 1;
        }
        let peer = &self.nodes[node];
        let end = peer.disk.len();
        if peer.disk.checksum(end) != self.log.checksum(end) {
            return Err(Violation::new(
                Invariant::PrefixOfPrimaryLog,
                format!(
                    "{} resumes at {resume_at} with {end} entries in its log that differ                      from the primary's",
                    peer.name
                ),
            ));
        }
        if peer.fsync {
            // The cut ended a running fsync: what is left of the page cache needs another.
            self.start_peer_fsync(node);
        }
        Ok(())
    }

    fn perform(&mut self, node: usize, actions: Vec<ReplicaAction>) -> Result<(), Violation> {
        for action in actions {
            match action {
                ReplicaAction::Append(payloads) => {
                    self.nodes[node].expect_unconfirmed();
                    for payload in payloads {
                        self.check_append(node, &payload)?;
                        self.nodes[node].disk.append(payload);
                    }
                    // Applied (readable) at once, as the store does, unless held back;
                    // durable, and acked as such, once an fsync that starts later ends
                    // (without fsync the page cache is what it holds and acks).
                    let peer = &mut self.nodes[node];
                    let shown = peer.shown(peer.disk.len());
                    let ack = peer.machine.durable(peer.flushed(), shown);
                    let fsync = peer.fsync;
                    self.send_ack(node, &ack)?;
                    if fsync {
                        self.start_peer_fsync(node);
                    }
                }
                ReplicaAction::Release(lsn) => {
                    // Acked once shown, as the store's glue does.
                    let peer = &mut self.nodes[node];
                    let ack = peer.machine.durable(peer.flushed(), lsn);
                    self.send_ack(node, &ack)?;
                }
                ack @ ReplicaAction::Ack { .. } => self.send_ack(node, &ack)?,
            }
        }
        Ok(())
    }

    /// Promise 5, as it happens: an entry goes to a peer's log only whole, next in order,
    /// and equal to the primary's entry at that LSN.
    fn check_append(&self, node: usize, payload: &[u8]) -> Result<(), Violation> {
        let disk = &self.nodes[node].disk;
        let lsn = disk.len() + 1;
        if self.log.entry(lsn) == Some(payload) {
            return Ok(());
        }
        Err(Violation::new(
            Invariant::PrefixOfPrimaryLog,
            format!(
                "{} appended an entry claiming LSN {:?} as its entry {lsn}, which differs \
                 from the primary's",
                self.nodes[node].name,
                payload_lsn(payload)
            ),
        ))
    }

    /// Sends an ack, after checking that a peer that fsyncs acks only what it fsynced.
    fn send_ack(&mut self, node: usize, ack: &ReplicaAction) -> Result<(), Violation> {
        let ReplicaAction::Ack {
            flushed_lsn,
            applied_lsn,
            members_version,
        } = *ack
        else {
            unreachable!("only acks are sent")
        };
        let peer = &self.nodes[node];
        if peer.fsync && flushed_lsn > peer.disk.durable_lsn() {
            return Err(Violation::new(
                Invariant::AckOnlyFsynced,
                format!(
                    "{} acked flushed_lsn {flushed_lsn} with its disk durable up to {}",
                    peer.name,
                    peer.disk.durable_lsn()
                ),
            ));
        }
        let peer = &mut self.nodes[node];
        peer.shown = peer.shown.max(applied_lsn);
        // Not while its hello waits for the welcome: the store's glue sends nothing then
        // (the handshake runs before the stream, and may cut the log it would ack).
        let streaming = matches!(
            peer.machine.state(),
            LinkState::CatchingUp | LinkState::Streaming
        );
        if let Some(generation) = peer.conn.filter(|_| streaming) {
            let ack = Message::Ack {
                flushed_lsn,
                applied_lsn,
                members_version,
            };
            self.send(generation, Side::Primary, Frame::Wire(ack));
        }
        Ok(())
    }

    fn start_peer_fsync(&mut self, node: usize) {
        if let Some((lsn, incarnation)) = self.nodes[node].disk.start_fsync() {
            let latency = self.sim.rng.between(20, self.sim.params.max_fsync);
            self.sim.timeline.after(
                latency,
                Event::PeerFsynced {
                    node,
                    lsn,
                    incarnation,
                },
            );
        }
    }

    pub(super) fn peer_fsynced(
        &mut self,
        node: usize,
        lsn: u64,
        incarnation: u64,
    ) -> Result<(), Violation> {
        let peer = &mut self.nodes[node];
        if !peer.disk.fsynced(lsn, incarnation) {
            return Ok(());
        }
        let shown = peer.shown(lsn);
        let ack = peer.machine.durable(lsn, shown);
        self.send_ack(node, &ack)?;
        self.start_peer_fsync(node);
        Ok(())
    }

    /// The peer closes its connection (a refused frame); it reconnects after a backoff.
    fn peer_drops(&mut self, node: usize) {
        let Some(generation) = self.nodes[node].conn.take() else {
            return;
        };
        self.nodes[node].machine.disconnected();
        if self.net.cut(generation) {
            self.tell_cut(node, generation, Side::Primary);
        }
        let backoff = self.backoff();
        self.sim.timeline.after(backoff, Event::Connect { node });
    }

    /// The peer's end notices its connection ended; it reconnects after a backoff.
    pub(super) fn peer_sees_cut(&mut self, node: usize, generation: u64) {
        if self.nodes[node].conn == Some(generation) {
            self.nodes[node].conn = None;
            self.nodes[node].machine.disconnected();
            let backoff = self.backoff();
            self.sim.timeline.after(backoff, Event::Connect { node });
        }
    }

    /// Power loss on a peer: its connection dies (the primary may never hear of it and
    /// must time the link out), its page cache is gone, and it restarts later from its
    /// durable log, either as a new process or with the machine told it `restarted`.
    pub(super) fn crash(&mut self, node: usize) {
        if !self.nodes[node].up {
            return;
        }
        self.report.faults.crashes += 1;
        self.nodes[node].up = false;
        if let Some(generation) = self.nodes[node].conn.take() {
            if self.net.cut(generation) && self.sim.rng.chance(500) {
                self.tell_cut(node, generation, Side::Primary);
            }
        }
        let as_process = self.sim.rng.chance(500);
        let peer = &mut self.nodes[node];
        let showed = peer.machine.applied_lsn();
        peer.disk.crash();
        if peer.fsync && !as_process {
            peer.machine.restarted();
        } else {
            peer.machine = peer.fresh_machine();
            let (showed, shows) = (
                showed.min(peer.disk.durable_lsn()),
                peer.machine.applied_lsn(),
            );
            peer.hid = (shows < showed).then_some((showed, shows));
        }
        let downtime = self.sim.rng.between(1_000, 50_000);
        self.sim.timeline.after(downtime, Event::Restart { node });
    }

    pub(super) fn restart(&mut self, node: usize) {
        self.nodes[node].up = true;
        self.connect(node);
    }
}
