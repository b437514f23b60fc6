//! The primary's protocol decisions as a pure state machine: which peer gets which entries
//! and when, heartbeats, stalled links, cumulative acks and the quorum LSN that releases
//! synchronous writers. No sockets, no clock reads, no threads: the caller passes the time
//! in and carries out the [`LinkAction`]s; `net/` glue does it over TCP, the simulator over
//! a fake network.
//!
//! Here: the peers, what they acked and the quorum it makes; in `ship.rs`, what each link
//! does next.

use std::collections::{BTreeMap, VecDeque};

#[cfg(test)]
use super::Planted;
use crate::replication::protocol::PeerKind;
use crate::replication::quorum::{quorum_lsn, QuorumView};
use crate::replication::status::LinkState;

mod membership;
mod ship;

use membership::Membership;

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

/// The slowest a replica is assumed to apply what it was shipped, in bytes per second: a
/// peer gets a second longer than the stall timeout to ack per this many bytes of the
/// batch it may be applying (see [`PrimaryMachine::poll`]). A debug build on a loaded
/// machine applies about this fast.
pub const APPLIED_PER_SECOND: u64 = 8 << 20;

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
    /// The candidates for the largest of them, oldest first, each larger than every
    /// later one: the front is the largest, kept in O(1) per entry as entries are shipped
    /// and acked (a scan of a catch-up's backlog on every ack was not).
    largest: VecDeque<Shipped>,
    last_ship: Option<Micros>,
    /// Its last batch stopped short of what could be shipped when it was decided (the
    /// batch's byte or entry bound): it is a batch or more behind, and is shipped again
    /// without waiting for the interval, however few (and large) the entries left.
    behind: bool,
    last_beat: Micros,
    /// Its last sign of life: an ack, or bytes taken (see [`PrimaryMachine::took_bytes`]).
    last_heard: Micros,
    /// Where it stands among the counting members (see `membership.rs`).
    member: Membership,
}

impl Peer {
    /// The bytes of the largest entry in flight (0 when none).
    #[must_use]
    pub fn in_flight_largest(&self) -> u64 {
        self.largest.front().map_or(0, |e| e.bytes)
    }

    fn push_in_flight(&mut self, entry: Shipped) {
        self.in_flight_bytes += entry.bytes;
        while self.largest.back().is_some_and(|l| l.bytes <= entry.bytes) {
            self.largest.pop_back();
        }
        self.largest.push_back(entry);
        self.in_flight.push_back(entry);
    }

    /// Whether it is a counting member: a replica that fsyncs, connected or not (a
    /// replica that went away still holds what it acked). Its acks count toward the
    /// quorum once it is [established](Peer::established).
    #[must_use]
    pub fn counts(&self) -> bool {
        self.kind == PeerKind::Replica && self.durable
    }

    /// Whether its acks count toward the quorum yet: a member that joined while this
    /// primary served counts once every counting member has recorded the membership it
    /// joined (see `membership.rs`).
    #[must_use]
    pub fn established(&self) -> bool {
        self.member.established
    }

    /// The last LSN it holds toward a sync write (DESIGN promise 3). A replica that does
    /// not hold back applies each entry before it fsyncs it: what it holds durably applied.
    /// A replica that holds back fsyncs entries before it may show them (it shows them once
    /// told they are durable here, one frame later): what it holds durably in its log. A
    /// sync write returns only once it is durable here too, so nothing can take it back,
    /// and a promotion shows all that the promoted replica holds: the write survives the
    /// primary either way, and its fsyncs here and there overlap.
    #[must_use]
    pub fn counted_lsn(&self) -> u64 {
        if self.holds_back {
            self.acked_lsn
        } else {
            self.acked_lsn.min(self.applied_lsn)
        }
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
    /// What the replica acked, for its slot (replicas only, and not an ack of LSN 0, which
    /// claims nothing: a replica says so to show it is alive while it installs a
    /// snapshot, and must not release the pin that holds the log it streams next).
    pub slot_lsn: Option<u64>,
    /// The quorum LSN rose to this: sync writers at or below it may return.
    pub quorum_lsn: Option<u64>,
    /// A joining member's acks count from now on.
    pub established: bool,
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
    /// Bumped whenever a counting member joins or leaves (see `membership.rs`).
    members_version: u64,
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
            members_version: 0,
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

    /// Counting replicas connected now whose acks count (established).
    #[must_use]
    pub fn connected_counting_replicas(&self) -> usize {
        self.peers
            .values()
            .filter(|p| self.in_quorum(p) && is_connected(p.state))
            .count()
    }

    /// The quorum as sync writers need it: the quorum LSN, every established counting
    /// replica's ack, and how many members are still joining.
    #[must_use]
    pub fn quorum_view(&self) -> QuorumView {
        QuorumView {
            quorum_lsn: self.quorum_lsn,
            acked: self
                .peers
                .values()
                .filter(|p| self.in_quorum(p))
                .map(|p| (p.id.name.clone(), p.counted_lsn()))
                .collect(),
            joining: self
                .peers
                .values()
                .filter(|p| self.counts(p) && !self.in_quorum(p))
                .count(),
        }
    }

    /// Names of the established counting replicas that acknowledged `lsn`, in name order.
    #[must_use]
    pub fn acked_by(&self, lsn: u64) -> Vec<String> {
        self.peers
            .values()
            .filter(|p| self.in_quorum(p) && p.counted_lsn() >= lsn)
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

    /// Whether `peer`'s acks count toward the quorum now.
    fn in_quorum(&self, peer: &Peer) -> bool {
        #[cfg(test)]
        if self.planted == Planted::CountJoiners {
            return self.counts(peer);
        }
        self.counts(peer) && peer.established()
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
        let member = self.member_on_connect(name, store_id, kind, durable);
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
            largest: VecDeque::new(),
            last_ship: None,
            behind: false,
            last_beat: now,
            last_heard: now,
            member,
        };
        self.peers.insert(name.to_owned(), peer);
        // One that stopped fsyncing no longer holds up a joining member (its acks count
        // from the next ack's recount: what a hello claims is not counted before the
        // transport has said what the peer shows).
        self.establish();
        (id, replaced)
    }

    /// The peer of `id` said it holds entries back from its readers until told they are
    /// durable, and this primary ships ahead: it is shipped what is written from now on,
    /// and told what is durable at the pace entries ship, or at once when a sync writer's
    /// entry is durable here (so that its readers see that write soon after it returns).
    pub fn hold_back(&mut self, id: &LinkId) {
        if let Some(peer) = self.live(id) {
            peer.holds_back = true;
        }
    }

    /// The peer that just connected as `id` shows its readers only up to `lsn` of what it
    /// holds: a replica that holds back shows what its primary confirmed to it, and after
    /// a restart, less. From a primary that does not ship ahead, the rest counts toward a
    /// sync write once it acks it shown, after it is told the entries are durable here
    /// (told at once if a sync writer waits).
    pub fn showing(&mut self, id: &LinkId, lsn: u64) {
        if let Some(peer) = self.live(id) {
            peer.applied_lsn = peer.applied_lsn.min(lsn);
            peer.told_durable = peer.told_durable.min(lsn);
        }
    }

    /// A replica known from its durable slot, not connected since this primary started.
    /// It is registered (a sync write waits for it to come back rather than being refused,
    /// if it said it fsyncs) but holds nothing proven until it acks again: a slot's LSN may
    /// be a snapshot's that was never acknowledged. It is one of the members this primary
    /// starts with, established at once unless it was `joining` (see `membership.rs`).
    /// `store_id` is the store its slot was last held by (0: unknown): another store that
    /// connects under its name joins anew. Told again of a member known from an older
    /// slots file and not connected (a switchover back to a primary that served before),
    /// the newer word on its directory is taken.
    pub fn remember(
        &mut self,
        name: &str,
        durable: bool,
        joining: bool,
        store_id: u64,
        now: Micros,
    ) {
        if let Some(peer) = self.peers.get_mut(name) {
            if store_id != 0 && !is_connected(peer.state) {
                peer.store_id = store_id;
            }
            return;
        }
        let (id, _) = self.connect(name, store_id, PeerKind::Replica, durable, 0, now);
        self.disconnect(&id);
        if let Some(peer) = self.peers.get_mut(name).filter(|_| !joining) {
            peer.member = Membership::FOUNDING;
        }
    }

    /// A snapshot at `lsn` is being sent to the peer: it streams after it.
    pub fn snapshot_started(&mut self, id: &LinkId, lsn: u64) {
        if let Some(peer) = self.live(id) {
            peer.state = LinkState::Snapshot;
            peer.sent_lsn = lsn;
        }
    }

    /// The snapshot was sent whole: entries after it follow (it streams if there are
    /// none), and the peer has the stall timeout from now to ack (installing it took no
    /// acks).
    pub fn snapshot_sent(&mut self, id: &LinkId, now: Micros) {
        let visible = self.visible_lsn;
        if let Some(peer) = self.live(id).filter(|p| p.state == LinkState::Snapshot) {
            // With nothing committed since the snapshot, no entry would be shipped to say
            // it streams: it does from here (as a peer that resumes at the end does).
            peer.state = if peer.sent_lsn >= visible {
                LinkState::Streaming
            } else {
                LinkState::CatchingUp
            };
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
            peer.largest.clear();
        }
    }

    /// Forgets a peer (its slot was dropped); the quorum LSN never moves back.
    pub fn forget(&mut self, name: &str) {
        if self.peers.remove(name).is_some_and(|peer| peer.counts()) {
            // One member fewer: one a joining member waited for, perhaps.
            self.members_version += 1;
            self.establish();
            self.recount();
        }
    }

    fn live(&mut self, id: &LinkId) -> Option<&mut Peer> {
        self.peers
            .get_mut(&id.name)
            .filter(|p| p.id == *id && is_connected(p.state))
    }

    /// The transport saw `id` take bytes at `at` that had waited for room in its socket:
    /// it is reading, so it is not stalled however long an ack takes (a large batch on a
    /// slow link).
    pub fn took_bytes(&mut self, id: &LinkId, at: Micros) {
        if let Some(peer) = self.live(id) {
            peer.last_heard = peer.last_heard.max(at);
        }
    }

    /// A cumulative ack from `id`: its log is durable up to `flushed_lsn`, its readers
    /// see up to `applied_lsn`, and it holds the membership of version `members_version`
    /// durably (see `membership.rs`). An ack beyond what was sent is a confused peer: it
    /// is held to `sent_lsn`, which the transport records before it writes.
    pub fn ack(
        &mut self,
        id: &LinkId,
        flushed_lsn: u64,
        applied_lsn: u64,
        members_version: u64,
        now: Micros,
    ) -> AckOutcome {
        let Some(peer) = self.live(id) else {
            return AckOutcome::default();
        };
        let flushed_lsn = flushed_lsn.min(peer.sent_lsn);
        peer.last_heard = now;
        peer.acked_lsn = peer.acked_lsn.max(flushed_lsn);
        peer.applied_lsn = peer.applied_lsn.max(applied_lsn.min(peer.sent_lsn));
        while let Some(oldest) = peer.in_flight.front().copied() {
            if oldest.lsn > flushed_lsn {
                break;
            }
            peer.in_flight.pop_front();
            peer.in_flight_bytes -= oldest.bytes;
            if peer.largest.front().is_some_and(|l| l.lsn == oldest.lsn) {
                peer.largest.pop_front();
            }
        }
        let slot_lsn = (peer.kind == PeerKind::Replica && flushed_lsn > 0).then_some(flushed_lsn);
        self.proved_members(&id.name, members_version);
        let established = self.establish();
        let quorum = self.recount();
        AckOutcome {
            slot_lsn,
            quorum_lsn: quorum,
            established,
        }
    }

    /// Recomputes the quorum LSN; returns it if it rose.
    fn recount(&mut self) -> Option<u64> {
        let acks = self
            .peers
            .values()
            .filter(|p| self.in_quorum(p))
            .map(Peer::counted_lsn);
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
mod tests;
