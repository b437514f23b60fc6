//! The primary's protocol decisions as a pure state machine: which peer gets which entries
//! and when, heartbeats, stalled links, cumulative acks and the quorum LSN that releases
//! synchronous writers. No sockets, no clock reads, no threads: the caller passes the time
//! in and carries out the [`LinkAction`]s; `net/` glue does it over TCP, the simulator over
//! a fake network.

use std::collections::{BTreeMap, VecDeque};

#[cfg(test)]
use super::Planted;
use crate::replication::protocol::PeerKind;
use crate::replication::quorum::{quorum_lsn, QuorumView};
use crate::replication::status::LinkState;

/// Time as the machine sees it: microseconds on the caller's monotonic clock.
pub type Micros = u64;

/// Sync writers' LSNs kept while not visible yet. Each writer waits for one at a time, so
/// this many concurrent sync writers are told apart; past it, the newest stands for the
/// one it replaces, which then ships with it.
const MAX_PENDING_WANTS: usize = 1024;

/// The most entries a peer that holds back is shipped past the primary's durable LSN.
/// Its unconfirmed entries are then always among the last this many of its log, which is
/// what its store holds back from readers when it restarts, not knowing which were
/// confirmed ([`crate::store::MAX_HELD_ENTRIES`]).
pub const MAX_AHEAD_ENTRIES: u64 = crate::store::MAX_HELD_ENTRIES;

/// The timing and quorum rules of a primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryConfig {
    /// Replicas (that fsync) which must hold an entry before a sync write of it returns.
    pub quorum: usize,
    /// Entries ship in batches at most this often while a peer keeps up (0: eagerly).
    pub ship_interval: Micros,
    /// How often a peer gets a heartbeat (its clock sample and the primary's last LSN),
    /// whether or not entries flow.
    pub heartbeat_interval: Micros,
    /// A peer that acked nothing for this long is dropped.
    pub stall_timeout: Micros,
    /// A peer behind by this many entries or more is caught up without pacing.
    pub catch_up_entries: u64,
}

/// Identifies one connection of a peer: a newer connection under the same name replaces
/// it, and every event of the older one is ignored from then on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId {
    /// The peer's name (a replica's slot name).
    pub name: String,
    /// Which connection of that name.
    pub generation: u64,
}

/// An entry shipped to a peer and not acknowledged yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shipped {
    /// Its LSN.
    pub lsn: u64,
    /// When it committed (ms since the Unix epoch, the primary's clock).
    pub commit_ms: u64,
    /// Its size as shipped.
    pub bytes: u64,
}

/// One peer as the primary tracks it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its current connection.
    pub id: LinkId,
    /// Its store directory's id (see `Store::store_id`; 0 from a consumer or an older
    /// peer): tells a reconnection of the same replica from another one of the same name.
    pub store_id: u64,
    /// Replica or consumer.
    pub kind: PeerKind,
    /// Whether it fsyncs what it acks (only such replicas count toward a quorum).
    pub durable: bool,
    /// Where it stands.
    pub state: LinkState,
    /// The last LSN handed to the transport for it (recorded before the frames are
    /// written, so an ack can never outrun it).
    pub sent_lsn: u64,
    /// The last LSN it acknowledged as durable in its log.
    pub acked_lsn: u64,
    /// The last LSN its readers see.
    pub applied_lsn: u64,
    /// Whether it holds entries back from its readers until told they are durable here:
    /// such a replica is shipped entries as soon as they are written, before the
    /// primary's fdatasync ends.
    pub holds_back: bool,
    /// The last durable LSN it was told of (in entries or heartbeats).
    pub told_durable: u64,
    /// Shipped and not acknowledged, oldest first.
    pub in_flight: VecDeque<Shipped>,
    /// Their bytes in all.
    pub in_flight_bytes: u64,
    last_ship: Option<Micros>,
    last_beat: Micros,
    last_heard: Micros,
}

impl Peer {
    /// Whether its acks count toward the quorum: a replica that fsyncs, connected or not
    /// (a replica that went away still holds what it acked).
    #[must_use]
    pub fn counts(&self) -> bool {
        self.kind == PeerKind::Replica && self.durable
    }

    /// The last LSN it holds durably applied: in its log, fsynced, and shown to its
    /// readers. What a sync write waits for (DESIGN promise 3): a replica that holds back
    /// acks an entry when it is durable, and shows it once told it is durable here.
    #[must_use]
    pub fn durably_applied_lsn(&self) -> u64 {
        self.acked_lsn.min(self.applied_lsn)
    }
}

/// What the transport should do for one link now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkAction {
    /// Read entries after `after_lsn`, up to `up_to_lsn` (as many as a batch holds), call
    /// [`PrimaryMachine::shipping`] with them, then send them saying `durable_lsn`.
    Ship {
        /// The peer has everything up to here.
        after_lsn: u64,
        /// The last visible LSN, or for a peer that holds back, the last written one.
        up_to_lsn: u64,
        /// The last visible (durable) LSN, which the frames carry.
        durable_lsn: u64,
    },
    /// Send a heartbeat carrying the primary's last LSN (on time, or at once when a peer
    /// that holds back has entries it has not been told are durable), then call
    /// [`PrimaryMachine::heartbeat_sent`].
    Heartbeat {
        /// The primary's last visible LSN.
        last_lsn: u64,
    },
    /// Drop the connection: the peer acked nothing for the stall timeout.
    Drop,
    /// Nothing to do before this time (or before new entries or an ack arrive).
    WaitUntil(Micros),
}

/// What an ack changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckOutcome {
    /// The replica's slot may move to this LSN (replicas only).
    pub slot_lsn: Option<u64>,
    /// The quorum LSN rose to this: sync writers at or below it may return.
    pub quorum_lsn: Option<u64>,
}

/// The whole primary side of the protocol.
#[derive(Debug, Clone)]
pub struct PrimaryMachine {
    config: PrimaryConfig,
    visible_lsn: u64,
    /// Written to the log, durable or not (at least `visible_lsn`): what peers that hold
    /// back may be shipped.
    written_lsn: u64,
    peers: BTreeMap<String, Peer>,
    generations: u64,
    quorum_lsn: u64,
    /// The highest LSN a sync writer waits for that is visible: counting links ship up to
    /// it without waiting for the interval.
    sync_wanted_lsn: u64,
    /// The highest LSN a sync writer waits for that is written: links to counting peers
    /// that hold back ship up to it without waiting for the interval.
    sync_written_lsn: u64,
    /// LSNs sync writers wait for that are not visible yet, ascending. Shipping what is
    /// visible before them would cost a second batch, and the replica a second append,
    /// sync and ack, per sync write: each moves to `sync_wanted_lsn` once visible.
    sync_pending: VecDeque<u64>,
    #[cfg(test)]
    pub(crate) planted: Planted,
}

impl PrimaryMachine {
    /// A primary whose log is visible up to `visible_lsn`.
    #[must_use]
    pub fn new(config: PrimaryConfig, visible_lsn: u64) -> Self {
        Self {
            config,
            visible_lsn,
            written_lsn: visible_lsn,
            peers: BTreeMap::new(),
            generations: 0,
            quorum_lsn: 0,
            sync_wanted_lsn: 0,
            sync_written_lsn: 0,
            sync_pending: VecDeque::new(),
            #[cfg(test)]
            planted: Planted::default(),
        }
    }

    /// Its rules.
    #[must_use]
    pub fn config(&self) -> &PrimaryConfig {
        &self.config
    }

    /// The last visible LSN it knows of.
    #[must_use]
    pub fn visible_lsn(&self) -> u64 {
        self.visible_lsn
    }

    /// The highest LSN that `quorum` counting replicas have acknowledged (0 if none).
    #[must_use]
    pub fn quorum_lsn(&self) -> u64 {
        self.quorum_lsn
    }

    /// Every peer seen, by name.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// The peer of a live connection.
    #[must_use]
    pub fn peer(&self, id: &LinkId) -> Option<&Peer> {
        self.peers.get(&id.name).filter(|p| p.id == *id)
    }

    /// Counting replicas, connected or not.
    #[must_use]
    pub fn counting_replicas(&self) -> usize {
        self.peers.values().filter(|p| self.counts(p)).count()
    }

    /// Counting replicas connected now.
    #[must_use]
    pub fn connected_counting_replicas(&self) -> usize {
        self.peers
            .values()
            .filter(|p| self.counts(p) && is_connected(p.state))
            .count()
    }

    /// The quorum as sync writers need it: the quorum LSN and every counting replica's ack.
    #[must_use]
    pub fn quorum_view(&self) -> QuorumView {
        QuorumView {
            quorum_lsn: self.quorum_lsn,
            acked: self
                .peers
                .values()
                .filter(|p| self.counts(p))
                .map(|p| (p.id.name.clone(), self.counted_lsn(p)))
                .collect(),
        }
    }

    /// Names of the counting replicas that acknowledged `lsn`, in name order.
    #[must_use]
    pub fn acked_by(&self, lsn: u64) -> Vec<String> {
        self.peers
            .values()
            .filter(|p| self.counts(p) && self.counted_lsn(p) >= lsn)
            .map(|p| p.id.name.clone())
            .collect()
    }

    #[cfg_attr(not(test), allow(clippy::unused_self))]
    fn counts(&self, peer: &Peer) -> bool {
        #[cfg(test)]
        if self.planted == Planted::CountEveryone {
            return true;
        }
        peer.counts()
    }

    /// What a counting peer holds toward a sync write: its durably applied LSN.
    #[cfg_attr(not(test), allow(clippy::unused_self))]
    fn counted_lsn(&self, peer: &Peer) -> u64 {
        #[cfg(test)]
        if self.planted == Planted::CountFlushed {
            return peer.acked_lsn;
        }
        peer.durably_applied_lsn()
    }

    /// Whether `name` belongs to a connected peer with another store than `store_id`: two
    /// replicas were given one name. Such a hello is refused (for as long as the other
    /// stays connected) rather than replacing the other's connection, which would then do
    /// the same in turn, each resuming from the other's position. A peer that does not
    /// say its store (0: a consumer, an older peer) is never told apart.
    #[must_use]
    pub fn held_by_another(&self, name: &str, store_id: u64) -> bool {
        self.peers.get(name).is_some_and(|p| {
            is_connected(p.state) && store_id != 0 && p.store_id != 0 && p.store_id != store_id
        })
    }

    /// A peer connected: a replica resumes after `resumed_lsn` (the LSN it holds), or after
    /// a snapshot at that LSN. An older connection of the same name is replaced; its id is
    /// returned so that the transport closes it.
    pub fn connect(
        &mut self,
        name: &str,
        store_id: u64,
        kind: PeerKind,
        durable: bool,
        resumed_lsn: u64,
        now: Micros,
    ) -> (LinkId, Option<LinkId>) {
        self.generations += 1;
        let id = LinkId {
            name: name.to_owned(),
            generation: self.generations,
        };
        // A reconnecting peer holds what it says it holds (a replica whose directory was
        // replaced holds less than it once acked); the quorum LSN never moves back.
        let replaced = self
            .peers
            .get(name)
            .filter(|p| is_connected(p.state))
            .map(|p| p.id.clone());
        // A peer that holds everything visible streams at once (nothing would be shipped
        // to it to say so while the primary is idle).
        let state = if resumed_lsn >= self.visible_lsn {
            LinkState::Streaming
        } else {
            LinkState::CatchingUp
        };
        let peer = Peer {
            id: id.clone(),
            store_id,
            kind,
            durable,
            state,
            sent_lsn: resumed_lsn,
            acked_lsn: resumed_lsn,
            applied_lsn: resumed_lsn,
            holds_back: false,
            told_durable: resumed_lsn,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            last_ship: None,
            last_beat: now,
            last_heard: now,
        };
        self.peers.insert(name.to_owned(), peer);
        (id, replaced)
    }

    /// The peer of `id` said it holds entries back from its readers until told they are
    /// durable, and this primary ships ahead: it is shipped what is written from now on,
    /// and told what is durable at the pace entries ship, or at once while a sync writer
    /// waits for it to show an entry.
    pub fn hold_back(&mut self, id: &LinkId) {
        if let Some(peer) = self.live(id) {
            peer.holds_back = true;
        }
    }

    /// The peer that just connected as `id` shows its readers only up to `lsn` of what it
    /// holds: a replica that holds back shows what its primary confirmed to it, and after
    /// a restart, less. The rest counts toward a sync write once it acks it shown, after
    /// it is told the entries are durable here (told at once if a sync writer waits).
    pub fn showing(&mut self, id: &LinkId, lsn: u64) {
        #[cfg(test)]
        if self.planted == Planted::ForgetShown {
            return;
        }
        if let Some(peer) = self.live(id) {
            peer.applied_lsn = peer.applied_lsn.min(lsn);
            peer.told_durable = peer.told_durable.min(lsn);
        }
    }

    /// A replica known from its durable slot, not connected since this primary started.
    /// It is registered (a sync write waits for it to come back rather than being refused,
    /// if it said it fsyncs) but holds nothing proven until it acks again: a slot's LSN may
    /// be a snapshot's that was never acknowledged.
    pub fn remember(&mut self, name: &str, durable: bool, now: Micros) {
        if self.peers.contains_key(name) {
            return;
        }
        let (id, _) = self.connect(name, 0, PeerKind::Replica, durable, 0, now);
        self.disconnect(&id);
    }

    /// A snapshot at `lsn` is being sent to the peer: it streams after it.
    pub fn snapshot_started(&mut self, id: &LinkId, lsn: u64) {
        if let Some(peer) = self.live(id) {
            peer.state = LinkState::Snapshot;
            peer.sent_lsn = lsn;
        }
    }

    /// The snapshot was sent whole: entries after it follow, and the peer has the stall
    /// timeout from now to ack (installing it took no acks).
    pub fn snapshot_sent(&mut self, id: &LinkId, now: Micros) {
        if let Some(peer) = self.live(id).filter(|p| p.state == LinkState::Snapshot) {
            peer.state = LinkState::CatchingUp;
            peer.last_heard = now;
        }
    }

    /// The connection ended (closed, failed or dropped). The peer's acks stay: what a
    /// replica acked is in its log whether it is connected or not. What was sent and not
    /// acked is lost with the connection: the peer lacks it, and its lag dates from it.
    pub fn disconnect(&mut self, id: &LinkId) {
        if let Some(peer) = self.live(id) {
            peer.state = LinkState::Disconnected;
            peer.sent_lsn = peer.acked_lsn;
            peer.in_flight.clear();
            peer.in_flight_bytes = 0;
        }
    }

    /// Forgets a peer (its slot was dropped); the quorum LSN never moves back.
    pub fn forget(&mut self, name: &str) {
        self.peers.remove(name);
    }

    /// A sync writer waits for `lsn`: counting replicas get it without waiting for the
    /// ship interval (pacing batches async writes; it must not delay a sync one). Told
    /// before `lsn` is visible, the links wait for it to be: the entries visible before it
    /// then ship with it, in one batch.
    pub fn sync_wanted(&mut self, lsn: u64) {
        if lsn <= self.written_lsn {
            self.sync_written_lsn = self.sync_written_lsn.max(lsn);
        }
        if lsn <= self.visible_lsn {
            self.sync_wanted_lsn = self.sync_wanted_lsn.max(lsn);
        } else if self.sync_pending.back().is_none_or(|last| *last < lsn) {
            if self.sync_pending.len() == MAX_PENDING_WANTS {
                // The newest covers the one it replaces: that one ships when it does.
                self.sync_pending.pop_back();
            }
            self.sync_pending.push_back(lsn);
        }
    }

    /// Entries up to `lsn` are written to the log, not yet durable: peers that hold back
    /// may be shipped them, and a sync writer's wish among them is theirs to hurry.
    pub fn written(&mut self, lsn: u64) {
        self.written_lsn = self.written_lsn.max(lsn);
        let covered = self
            .sync_pending
            .partition_point(|w| *w <= self.written_lsn);
        if let Some(wanted) = covered.checked_sub(1).map(|i| self.sync_pending[i]) {
            self.sync_written_lsn = self.sync_written_lsn.max(wanted);
        }
    }

    /// Entries up to `lsn` are durable and visible.
    pub fn visible(&mut self, lsn: u64) {
        self.visible_lsn = self.visible_lsn.max(lsn);
        self.written(lsn);
        while let Some(wanted) = self.sync_pending.front().copied() {
            if wanted > self.visible_lsn {
                break;
            }
            self.sync_wanted_lsn = self.sync_wanted_lsn.max(wanted);
            self.sync_pending.pop_front();
        }
    }

    /// Whether a sync writer waits for an entry not visible yet: a link that paces itself
    /// should look again when entries become visible, to ship that one at once.
    #[must_use]
    pub fn awaits_visible(&self) -> bool {
        !self.sync_pending.is_empty()
    }

    fn live(&mut self, id: &LinkId) -> Option<&mut Peer> {
        self.peers
            .get_mut(&id.name)
            .filter(|p| p.id == *id && is_connected(p.state))
    }

    /// Whether `id` has been sent every entry it may be (so new ones are news to it).
    #[must_use]
    pub fn caught_up(&self, id: &LinkId) -> bool {
        self.peer(id).is_none_or(|p| p.sent_lsn >= self.ship_end(p))
    }

    /// The last LSN `peer` may be shipped: the written one if it holds back (at most
    /// [`MAX_AHEAD_ENTRIES`] past the visible one), else the visible one.
    fn ship_end(&self, peer: &Peer) -> u64 {
        if peer.holds_back {
            self.written_lsn.min(self.visible_lsn + MAX_AHEAD_ENTRIES)
        } else {
            self.visible_lsn
        }
    }

    /// The LSN a sync writer waits for that `peer` is due to be sent at once.
    fn wanted_of(&self, peer: &Peer) -> u64 {
        if !self.counts(peer) {
            0
        } else if peer.holds_back {
            self.sync_written_lsn
        } else {
            self.sync_wanted_lsn
        }
    }

    /// What the transport should do for `id` now.
    #[must_use]
    pub fn poll(&self, id: &LinkId, now: Micros) -> LinkAction {
        let Some(peer) = self.peers.get(&id.name).filter(|p| p.id == *id) else {
            return LinkAction::Drop;
        };
        if !is_connected(peer.state) {
            return LinkAction::Drop;
        }
        if now.saturating_sub(peer.last_heard) >= self.config.stall_timeout {
            return LinkAction::Drop;
        }
        let stall_at = peer.last_heard + self.config.stall_timeout;
        let beat_at = peer.last_beat + self.config.heartbeat_interval;
        // Heartbeats go out on time even while entries flow: they carry the clock samples
        // that lag is measured with, and a peer acks at least those.
        if beat_at <= now {
            return LinkAction::Heartbeat {
                last_lsn: self.visible_lsn,
            };
        }
        let end = self.ship_end(peer);
        if peer.state != LinkState::Snapshot && peer.sent_lsn < end {
            // A peer behind by a whole batch is caught up as fast as it takes entries; the
            // interval only paces one that keeps up.
            let backlog = end - peer.sent_lsn;
            let urgent = peer.sent_lsn < self.wanted_of(peer);
            let ship_at = match peer.last_ship {
                Some(at) if backlog < self.config.catch_up_entries && !urgent => {
                    at + self.config.ship_interval
                }
                _ => now,
            };
            if ship_at <= now {
                return LinkAction::Ship {
                    after_lsn: peer.sent_lsn,
                    up_to_lsn: end,
                    durable_lsn: self.visible_lsn,
                };
            }
            if !self.owes_confirmation(peer) {
                return LinkAction::WaitUntil(ship_at.min(beat_at).min(stall_at));
            }
        }
        if self.owes_confirmation(peer) {
            // It holds entries back from its readers until it hears they are durable here:
            // told at the pace entries ship, so that under load the next entries tell it,
            // but at once when a sync writer waits for it to show one.
            let told_at = peer.last_ship.unwrap_or(0).max(peer.last_beat);
            let urgent = peer.told_durable < self.wanted_of(peer).min(self.visible_lsn);
            let confirm_at = if urgent {
                now
            } else {
                told_at + self.config.ship_interval
            };
            if confirm_at <= now {
                return LinkAction::Heartbeat {
                    last_lsn: self.visible_lsn,
                };
            }
            return LinkAction::WaitUntil(confirm_at.min(beat_at).min(stall_at));
        }
        LinkAction::WaitUntil(beat_at.min(stall_at))
    }

    /// Whether `peer` holds entries that are durable here and it has not been told so.
    fn owes_confirmation(&self, peer: &Peer) -> bool {
        peer.told_durable < peer.sent_lsn.min(self.visible_lsn)
    }

    /// The transport is about to send `entries` (consecutive, after the peer's `sent_lsn`)
    /// to `id`, in frames that say the log is durable up to `durable_lsn`. Recorded before
    /// the frames leave, so that the fastest ack finds them sent.
    pub fn shipping(&mut self, id: &LinkId, entries: &[Shipped], durable_lsn: u64, now: Micros) {
        let visible = self.visible_lsn;
        let Some(peer) = self.live(id) else { return };
        let Some(last) = entries.last() else { return };
        peer.sent_lsn = peer.sent_lsn.max(last.lsn);
        peer.told_durable = peer.told_durable.max(durable_lsn);
        peer.last_ship = Some(now);
        peer.in_flight_bytes += entries.iter().map(|e| e.bytes).sum::<u64>();
        peer.in_flight.extend(entries.iter().copied());
        peer.state = if peer.sent_lsn >= visible {
            LinkState::Streaming
        } else {
            LinkState::CatchingUp
        };
    }

    /// A heartbeat saying the log is durable up to `last_lsn` is about to be sent to `id`.
    pub fn heartbeat_sent(&mut self, id: &LinkId, last_lsn: u64, now: Micros) {
        if let Some(peer) = self.live(id) {
            peer.last_beat = now;
            peer.told_durable = peer.told_durable.max(last_lsn);
        }
    }

    /// A cumulative ack from `id`: its log is durable up to `flushed_lsn` and its readers
    /// see up to `applied_lsn`. An ack beyond what was sent is a confused peer: it is held
    /// to `sent_lsn`, which the transport records before it writes.
    pub fn ack(
        &mut self,
        id: &LinkId,
        flushed_lsn: u64,
        applied_lsn: u64,
        now: Micros,
    ) -> AckOutcome {
        let Some(peer) = self.live(id) else {
            return AckOutcome::default();
        };
        let flushed_lsn = flushed_lsn.min(peer.sent_lsn);
        peer.last_heard = now;
        peer.acked_lsn = peer.acked_lsn.max(flushed_lsn);
        peer.applied_lsn = peer.applied_lsn.max(applied_lsn.min(peer.sent_lsn));
        while let Some(oldest) = peer.in_flight.front().filter(|e| e.lsn <= flushed_lsn) {
            peer.in_flight_bytes -= oldest.bytes;
            peer.in_flight.pop_front();
        }
        let slot_lsn = (peer.kind == PeerKind::Replica).then_some(peer.acked_lsn);
        let quorum = self.recount();
        AckOutcome {
            slot_lsn,
            quorum_lsn: quorum,
        }
    }

    /// Recomputes the quorum LSN; returns it if it rose.
    fn recount(&mut self) -> Option<u64> {
        let acks = self
            .peers
            .values()
            .filter(|p| self.counts(p))
            .map(|p| self.counted_lsn(p));
        let lsn = quorum_lsn(acks, self.config.quorum);
        (lsn > self.quorum_lsn).then(|| {
            self.quorum_lsn = lsn;
            lsn
        })
    }
}

fn is_connected(state: LinkState) -> bool {
    !matches!(state, LinkState::Disconnected | LinkState::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PrimaryConfig {
        PrimaryConfig {
            quorum: 2,
            ship_interval: 50_000,
            heartbeat_interval: 500_000,
            stall_timeout: 3_000_000,
            catch_up_entries: 4096,
        }
    }

    fn shipped(lsns: std::ops::RangeInclusive<u64>) -> Vec<Shipped> {
        lsns.map(|lsn| Shipped {
            lsn,
            commit_ms: lsn,
            bytes: 10,
        })
        .collect()
    }

    #[test]
    fn a_fast_ack_is_never_clamped_below_what_was_handed_to_the_transport() {
        let mut m = PrimaryMachine::new(config(), 0);
        let (a, _) = m.connect("a", 0, PeerKind::Replica, true, 0, 0);
        m.visible(3);
        assert_eq!(
            m.poll(&a, 0),
            LinkAction::Ship {
                after_lsn: 0,
                up_to_lsn: 3,
                durable_lsn: 3,
            }
        );
        m.shipping(&a, &shipped(1..=3), m.visible_lsn(), 0);
        // The ack arrives before the transport finished writing: it still counts whole.
        let outcome = m.ack(&a, 3, 3, 10);
        assert_eq!(outcome.slot_lsn, Some(3));
        assert_eq!(m.peer(&a).unwrap().acked_lsn, 3);
        assert_eq!(m.peer(&a).unwrap().in_flight_bytes, 0);
    }

    #[test]
    fn the_quorum_counts_only_replicas_that_fsync_and_never_moves_back() {
        let mut m = PrimaryMachine::new(config(), 10);
        let (a, _) = m.connect("a", 0, PeerKind::Replica, true, 0, 0);
        let (cache, _) = m.connect("cache", 0, PeerKind::Consumer, false, 0, 0);
        let (lazy, _) = m.connect("nofsync", 0, PeerKind::Replica, false, 0, 0);
        let (b, _) = m.connect("b", 0, PeerKind::Replica, true, 0, 0);
        for id in [&a, &cache, &lazy, &b] {
            m.shipping(id, &shipped(1..=10), 10, 0);
        }
        assert_eq!(m.ack(&cache, 10, 10, 1).quorum_lsn, None);
        assert_eq!(m.ack(&lazy, 10, 10, 1).quorum_lsn, None);
        assert_eq!(m.ack(&a, 7, 7, 1).quorum_lsn, None, "one of two");
        assert_eq!(m.ack(&b, 9, 9, 1).quorum_lsn, Some(7));
        assert_eq!(m.acked_by(7), vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(m.acked_by(9), vec!["b".to_owned()]);
        m.disconnect(&a);
        assert_eq!(m.quorum_lsn(), 7, "a replica that left keeps what it acked");
        assert_eq!(m.counting_replicas(), 2);
        assert_eq!(m.connected_counting_replicas(), 1);
    }

    #[test]
    fn what_a_lost_connection_had_sent_and_not_had_acked_counts_as_missing() {
        let mut m = PrimaryMachine::new(config(), 1);
        let (a, _) = m.connect("a", 0, PeerKind::Replica, true, 0, 0);
        m.visible(10);
        m.shipping(&a, &shipped(1..=10), m.visible_lsn(), 0);
        m.ack(&a, 4, 4, 1);
        m.disconnect(&a);
        let peer = m.peer(&a).expect("known");
        assert_eq!((peer.sent_lsn, peer.acked_lsn), (4, 4));
        assert!(!m.caught_up(&a), "entries 5 to 10 are missing, not sent");
    }

    #[test]
    fn a_peer_that_keeps_up_is_paced_and_one_far_behind_is_not() {
        let mut m = PrimaryMachine::new(config(), 1);
        let (a, _) = m.connect("a", 0, PeerKind::Replica, true, 0, 0);
        m.shipping(&a, &shipped(1..=1), m.visible_lsn(), 0);
        assert!(m.caught_up(&a));
        m.visible(2);
        assert!(!m.caught_up(&a), "entry 2 waits for the pace");
        assert_eq!(m.poll(&a, 10), LinkAction::WaitUntil(50_000));
        assert!(matches!(m.poll(&a, 50_000), LinkAction::Ship { .. }));
        m.visible(10_000);
        assert!(matches!(m.poll(&a, 10), LinkAction::Ship { .. }));
    }

    #[test]
    fn a_sync_writer_is_shipped_to_counting_replicas_without_waiting_for_the_interval() {
        let mut m = PrimaryMachine::new(config(), 1);
        let (a, _) = m.connect("a", 0, PeerKind::Replica, true, 0, 0);
        let (cache, _) = m.connect("cache", 0, PeerKind::Consumer, false, 0, 0);
        m.shipping(&a, &shipped(1..=1), m.visible_lsn(), 0);
        m.shipping(&cache, &shipped(1..=1), m.visible_lsn(), 0);
        m.visible(2);
        m.sync_wanted(2);
        assert!(matches!(m.poll(&a, 10), LinkAction::Ship { .. }));
        assert_eq!(
            m.poll(&cache, 10),
            LinkAction::WaitUntil(50_000),
            "a consumer keeps its pace"
        );
    }

    #[test]
    fn a_sync_entry_not_yet_visible_ships_with_the_entries_before_it_once_it_is() {
        let mut m = PrimaryMachine::new(config(), 1);
        let (a, _) = m.connect("a", 0, PeerKind::Replica, true, 0, 0);
        m.shipping(&a, &shipped(1..=1), m.visible_lsn(), 0);
        // The writer waits from its commit on; entry 2, another writer's, is visible first.
        m.sync_wanted(3);
        m.visible(2);
        assert!(m.awaits_visible());
        assert_eq!(
            m.poll(&a, 10),
            LinkAction::WaitUntil(50_000),
            "entry 2 shipped alone would cost the replica a batch of its own"
        );
        m.visible(3);
        assert!(!m.awaits_visible());
        assert_eq!(
            m.poll(&a, 20),
            LinkAction::Ship {
                after_lsn: 1,
                up_to_lsn: 3,
                durable_lsn: 3,
            }
        );
    }

    #[test]
    fn each_of_many_sync_writers_ships_once_its_own_entry_is_visible() {
        let mut m = PrimaryMachine::new(config(), 1);
        let (a, _) = m.connect("a", 0, PeerKind::Replica, true, 0, 0);
        m.shipping(&a, &shipped(1..=1), m.visible_lsn(), 0);
        m.sync_wanted(3);
        m.sync_wanted(5);
        m.visible(4);
        assert!(m.awaits_visible(), "entry 5 is still on its way");
        assert_eq!(
            m.poll(&a, 10),
            LinkAction::Ship {
                after_lsn: 1,
                up_to_lsn: 4,
                durable_lsn: 4,
            },
            "entry 3 must not wait for entry 5"
        );
        m.shipping(&a, &shipped(2..=4), m.visible_lsn(), 10);
        assert!(m.caught_up(&a));
        m.visible(5);
        assert!(matches!(m.poll(&a, 30), LinkAction::Ship { .. }));
    }

    #[test]
    fn an_idle_link_gets_heartbeats_and_a_silent_one_is_dropped() {
        let mut m = PrimaryMachine::new(config(), 0);
        let (a, _) = m.connect("a", 0, PeerKind::Replica, true, 0, 0);
        assert_eq!(m.poll(&a, 100), LinkAction::WaitUntil(500_000));
        assert_eq!(m.poll(&a, 500_000), LinkAction::Heartbeat { last_lsn: 0 });
        m.heartbeat_sent(&a, 0, 500_000);
        assert_eq!(m.poll(&a, 600_000), LinkAction::WaitUntil(1_000_000));
        assert_eq!(m.poll(&a, 3_000_000), LinkAction::Drop);
        m.ack(&a, 0, 0, 2_900_000);
        assert!(matches!(
            m.poll(&a, 3_000_000),
            LinkAction::Heartbeat { .. }
        ));
    }

    #[test]
    fn heartbeats_go_out_on_time_while_a_backlog_ships() {
        let mut m = PrimaryMachine::new(config(), 100_000);
        let (a, _) = m.connect("a", 0, PeerKind::Replica, true, 0, 0);
        m.shipping(&a, &shipped(1..=4096), m.visible_lsn(), 400_000);
        assert!(matches!(m.poll(&a, 499_999), LinkAction::Ship { .. }));
        assert!(matches!(m.poll(&a, 500_000), LinkAction::Heartbeat { .. }));
        m.heartbeat_sent(&a, 0, 500_000);
        assert!(matches!(m.poll(&a, 500_001), LinkAction::Ship { .. }));
    }

    #[test]
    fn a_replica_remembered_from_its_slot_is_registered_but_proves_nothing_until_it_acks() {
        let mut m = PrimaryMachine::new(config(), 50);
        m.remember("a", true, 0);
        m.remember("lazy", false, 0);
        assert_eq!(m.counting_replicas(), 1);
        assert_eq!(m.connected_counting_replicas(), 0);
        assert!(m.acked_by(1).is_empty());
        let (a, _) = m.connect("a", 0, PeerKind::Replica, true, 40, 1);
        m.shipping(&a, &shipped(41..=50), m.visible_lsn(), 1);
        m.ack(&a, 45, 45, 2);
        assert_eq!(m.acked_by(45), vec!["a".to_owned()]);
    }

    #[test]
    fn a_name_held_by_another_store_is_told_apart_from_a_reconnection() {
        let mut m = PrimaryMachine::new(config(), 5);
        let (a, _) = m.connect("a", 7, PeerKind::Replica, true, 0, 0);
        assert!(
            m.held_by_another("a", 8),
            "another store's replica under a live name"
        );
        assert!(
            !m.held_by_another("a", 7),
            "the same store reconnecting replaces its link"
        );
        assert!(
            !m.held_by_another("a", 0),
            "a peer that says no store is never told apart"
        );
        assert!(!m.held_by_another("b", 8), "a name nobody holds");
        m.disconnect(&a);
        assert!(
            !m.held_by_another("a", 8),
            "the name is free once its link is gone"
        );
        let (_, replaced) = m.connect("a", 8, PeerKind::Replica, true, 0, 1);
        assert_eq!(replaced, None);
        m.connect("old", 0, PeerKind::Replica, true, 0, 1);
        assert!(
            !m.held_by_another("old", 8),
            "an older peer's link says no store"
        );
    }

    #[test]
    fn events_of_a_replaced_connection_are_ignored() {
        let mut m = PrimaryMachine::new(config(), 5);
        let (old, _) = m.connect("a", 0, PeerKind::Replica, true, 0, 0);
        m.shipping(&old, &shipped(1..=5), m.visible_lsn(), 0);
        let (new, replaced) = m.connect("a", 0, PeerKind::Replica, true, 2, 1);
        assert_eq!(replaced, Some(old.clone()));
        assert_eq!(m.ack(&old, 5, 5, 2), AckOutcome::default());
        assert_eq!(m.poll(&old, 2), LinkAction::Drop);
        assert_eq!(
            m.poll(&new, 2),
            LinkAction::Ship {
                after_lsn: 2,
                up_to_lsn: 5,
                durable_lsn: 5,
            }
        );
    }

    #[test]
    fn a_peer_that_holds_back_is_shipped_what_is_written_and_told_once_it_is_durable() {
        let mut m = PrimaryMachine::new(config(), 1);
        let (a, _) = m.connect("a", 0, PeerKind::Replica, true, 1, 0);
        let (b, _) = m.connect("b", 0, PeerKind::Replica, true, 1, 0);
        m.hold_back(&a);
        m.written(3);
        m.sync_wanted(3);
        assert_eq!(
            m.poll(&a, 10),
            LinkAction::Ship {
                after_lsn: 1,
                up_to_lsn: 3,
                durable_lsn: 1
            },
            "a sync writer's entry ships as soon as it is written"
        );
        assert!(!m.caught_up(&a));
        assert_eq!(
            m.poll(&b, 10),
            LinkAction::WaitUntil(500_000),
            "a peer that does not hold back waits for entries to be durable"
        );
        m.shipping(&a, &shipped(2..=3), 1, 10);
        assert!(m.caught_up(&a));
        assert_eq!(m.poll(&a, 20), LinkAction::WaitUntil(500_000));
        // The ack may come before the primary's own fdatasync ends: the entry is durable
        // there, but a sync write waits until its readers see it too.
        m.ack(&a, 3, 1, 30);
        assert!(m.acked_by(3).is_empty(), "held, not shown");
        m.visible(2);
        assert_eq!(
            m.poll(&a, 40),
            LinkAction::Heartbeat { last_lsn: 2 },
            "a sync writer waits for it to show what is durable here: told at once"
        );
        m.heartbeat_sent(&a, 2, 40);
        m.visible(3);
        assert_eq!(m.poll(&a, 50), LinkAction::Heartbeat { last_lsn: 3 });
        m.heartbeat_sent(&a, 3, 50);
        assert_eq!(m.poll(&a, 60), LinkAction::WaitUntil(500_050));
        m.ack(&a, 3, 3, 70);
        assert_eq!(m.acked_by(3), vec!["a".to_owned()]);
        assert_eq!(
            m.poll(&b, 80),
            LinkAction::Ship {
                after_lsn: 1,
                up_to_lsn: 3,
                durable_lsn: 3
            }
        );
    }

    #[test]
    fn a_peer_that_holds_back_is_told_at_the_pace_entries_ship_when_no_sync_writer_waits() {
        let mut m = PrimaryMachine::new(config(), 1);
        let (a, _) = m.connect("a", 0, PeerKind::Replica, true, 1, 0);
        m.hold_back(&a);
        m.written(3);
        m.shipping(&a, &shipped(2..=3), 1, 10);
        m.visible(2);
        assert_eq!(
            m.poll(&a, 40),
            LinkAction::WaitUntil(50_010),
            "told at the pace entries ship, which the next entries would do"
        );
        assert_eq!(
            m.poll(&a, 50_010),
            LinkAction::Heartbeat { last_lsn: 2 },
            "told that entry 2 is durable then, not at the next heartbeat"
        );
        m.heartbeat_sent(&a, 2, 50_010);
        assert_eq!(m.poll(&a, 50_020), LinkAction::WaitUntil(550_010));
        m.visible(3);
        assert_eq!(m.poll(&a, 100_010), LinkAction::Heartbeat { last_lsn: 3 });
    }

    #[test]
    fn what_a_reconnecting_replica_holds_but_does_not_show_counts_once_it_shows_it() {
        let mut m = PrimaryMachine::new(config(), 5);
        m.visible(5);
        // Restarted, it holds entries 4 and 5 back until it is told they are durable here
        // (whether or not this primary ships ahead).
        let (a, _) = m.connect("a", 0, PeerKind::Replica, true, 5, 0);
        m.showing(&a, 3);
        m.connect("b", 0, PeerKind::Replica, true, 5, 0);
        assert_eq!(m.acked_by(5), vec!["b".to_owned()], "a shows only 3");
        m.written(5);
        m.sync_wanted(5);
        assert_eq!(
            m.poll(&a, 10),
            LinkAction::Heartbeat { last_lsn: 5 },
            "a sync writer waits: told at once"
        );
        m.heartbeat_sent(&a, 5, 10);
        m.ack(&a, 5, 5, 20);
        assert_eq!(m.acked_by(5), vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(m.quorum_lsn(), 5);
    }

    #[test]
    fn a_consumer_never_holds_back_and_a_wish_of_another_peer_never_hurries_it() {
        let mut m = PrimaryMachine::new(config(), 1);
        let (cache, _) = m.connect("cache", 0, PeerKind::Consumer, false, 1, 0);
        let (lazy, _) = m.connect("lazy", 0, PeerKind::Replica, false, 0, 0);
        m.hold_back(&lazy);
        m.shipping(&lazy, &shipped(1..=1), 1, 0);
        m.written(2);
        m.sync_wanted(2);
        assert_eq!(m.poll(&cache, 10), LinkAction::WaitUntil(500_000));
        assert_eq!(
            m.poll(&lazy, 10),
            LinkAction::WaitUntil(50_000),
            "a replica that does not count keeps its pace"
        );
    }
}
