//! When a replica that joins the counting members starts to count toward the quorum.
//!
//! A promotion reaches `members - quorum + 1` of the members its candidate last heard of
//! (see [`needed`](crate::replication::machine::promotion::needed)). A candidate that never
//! heard of a member that joined since counts one member too few: if the newcomer's ack
//! completed a sync write, the members that acked it besides the newcomer can all be
//! outside what the candidate reaches, and the promotion adopts a log without the write.
//! So a member that joins counts only once every counting member, itself included, holds
//! the membership it joined durably: from then on every candidate counts it.
//!
//! Each change of the counting members bumps a version. Heartbeats carry it with the
//! member count; a replica records the count durably before it echoes the version in its
//! acks (and drops the link when it cannot), so an ack that carries a version proves the
//! replica holds that membership. A member that has not been told the current version is
//! sent a heartbeat at once.
//!
//! The members a primary starts with count at once (from its slots, or handed over by a
//! promotion or a switchover), but for those its slots say were still joining when it
//! stopped: they join again, at the first version, and count once every member has
//! proved it holds this primary's membership.

use super::{Peer, PrimaryMachine};
use crate::replication::protocol::PeerKind;

/// A peer's place among the counting members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Membership {
    /// The membership version it joined at (0: one of the members this primary started
    /// with).
    joined: u64,
    /// Whether its acks count toward the quorum: once established, for good.
    pub(super) established: bool,
    /// The newest version a heartbeat of its current connection told it.
    pub(super) told: u64,
    /// The newest version it proved it holds durably.
    knows: u64,
}

impl Membership {
    /// One of the members the primary starts with, or a peer that does not count.
    pub(super) const FOUNDING: Self = Self {
        joined: 0,
        established: true,
        told: 0,
        knows: 0,
    };

    /// A member that joined at `version`.
    pub(super) fn joining(version: u64) -> Self {
        Self {
            joined: version,
            established: false,
            told: 0,
            knows: 0,
        }
    }
}

/// What a connection does to the counting members.
enum Arrival {
    /// A member reconnects, with its membership.
    Returns(Membership),
    /// A member that stopped fsyncing leaves.
    Leaves,
    /// A peer that does not count, as before.
    Outside,
    /// A new counting member (a new name, another store under an old name, or one that
    /// fsyncs now and did not).
    Joins,
}

impl PrimaryMachine {
    fn arrival(&self, name: &str, store_id: u64, kind: PeerKind, durable: bool) -> Arrival {
        let counts = kind == PeerKind::Replica && durable;
        let same_store = |p: &Peer| p.store_id == 0 || store_id == 0 || p.store_id == store_id;
        match self.peers.get(name) {
            Some(p) if p.counts() == counts && same_store(p) => Arrival::Returns(p.member),
            Some(p) if p.counts() && !counts => Arrival::Leaves,
            _ if !counts => Arrival::Outside,
            _ => Arrival::Joins,
        }
    }

    /// Whether a peer connecting as `name` would join the counting members: its slot
    /// says so on disk before it is welcomed, so that a restart does not count it early.
    #[must_use]
    pub fn would_join(&self, name: &str, store_id: u64, kind: PeerKind, durable: bool) -> bool {
        matches!(self.arrival(name, store_id, kind, durable), Arrival::Joins)
    }

    /// The membership of a peer connecting as `name`: a member that returns keeps its own
    /// (what it proved is in its store), to be told again on this connection; one that
    /// joins or leaves bumps the version.
    pub(super) fn member_on_connect(
        &mut self,
        name: &str,
        store_id: u64,
        kind: PeerKind,
        durable: bool,
    ) -> Membership {
        match self.arrival(name, store_id, kind, durable) {
            Arrival::Returns(member) => Membership { told: 0, ..member },
            Arrival::Outside => Membership::FOUNDING,
            Arrival::Leaves => {
                self.members_version += 1;
                Membership::FOUNDING
            }
            Arrival::Joins => {
                self.members_version += 1;
                Membership::joining(self.members_version)
            }
        }
    }

    /// The membership a heartbeat about to be sent to `id`'s peer announces: the number of
    /// counting members and the version.
    pub(super) fn announce_members(&mut self, name: &str) -> (u64, u64) {
        let version = self.members_version;
        let members = self.peers.values().filter(|p| p.counts()).count() as u64;
        if let Some(peer) = self.peers.get_mut(name) {
            peer.member.told = version;
        }
        (members, version)
    }

    /// The store directory of each counting member whose id is known, `(name, store id)`:
    /// heartbeats say them, so that a promotion counts each member only from its own.
    #[must_use]
    pub fn member_ids(&self) -> Vec<(String, u64)> {
        self.peers
            .values()
            .filter(|p| p.counts() && p.store_id != 0)
            .map(|p| (p.id.name.clone(), p.store_id))
            .collect()
    }

    /// Whether `peer` must be told the current membership: a counting member not told it
    /// on this connection.
    pub(super) fn untold(&self, peer: &Peer) -> bool {
        peer.counts() && peer.member.told < self.members_version
    }

    /// `peer` proved it holds membership `version` (from its ack): a version this primary
    /// never announced to it proves nothing.
    pub(super) fn proved_members(&mut self, name: &str, version: u64) {
        if let Some(peer) = self.peers.get_mut(name) {
            if version <= peer.member.told {
                peer.member.knows = peer.member.knows.max(version);
            }
        }
    }

    /// Establishes every joining member whose joining every counting member has proved
    /// it holds; returns whether any was.
    pub(super) fn establish(&mut self) -> bool {
        let Some(floor) = self
            .peers
            .values()
            .filter(|p| p.counts())
            .map(|p| p.member.knows)
            .min()
        else {
            return false;
        };
        let mut any = false;
        for peer in self.peers.values_mut() {
            if peer.counts() && !peer.member.established && peer.member.joined <= floor {
                peer.member.established = true;
                any = true;
            }
        }
        any
    }
}

#[cfg(test)]
impl PrimaryMachine {
    /// Every counting member proves the current membership at once, as a heartbeat and
    /// its ack would over a round trip: for the tests of other rules.
    pub(crate) fn all_members_told(&mut self) {
        let version = self.members_version;
        for peer in self.peers.values_mut() {
            peer.member.told = version;
            peer.member.knows = version;
        }
        self.establish();
        self.recount();
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LinkAction, LinkId, PrimaryConfig, Shipped};
    use super::*;

    fn machine(quorum: usize) -> PrimaryMachine {
        let config = PrimaryConfig {
            quorum,
            ship_interval: 50_000,
            heartbeat_interval: 500_000,
            stall_timeout: 3_000_000,
            catch_up_entries: 4096,
        };
        PrimaryMachine::new(config, 0)
    }

    /// Ships `lsn` to `id` and has it acked, echoing `version`.
    fn ship_and_ack(m: &mut PrimaryMachine, id: &LinkId, lsn: u64, version: u64) {
        m.visible(lsn);
        let after = m.peer(id).unwrap().sent_lsn;
        let entries: Vec<Shipped> = (after + 1..=lsn)
            .map(|lsn| Shipped {
                lsn,
                commit_ms: 0,
                bytes: 1,
            })
            .collect();
        m.shipping(id, &entries, lsn, 0);
        m.ack(id, lsn, lsn, version, 0);
    }

    /// Sends `id` the heartbeat its link asks for; returns the version it carries.
    fn beat(m: &mut PrimaryMachine, id: &LinkId) -> u64 {
        let last_lsn = m.visible_lsn();
        assert_eq!(m.poll(id, 0), LinkAction::Heartbeat { last_lsn });
        m.heartbeat_sent(id, last_lsn, 0).1
    }

    #[test]
    fn a_member_that_joins_while_another_is_away_does_not_count_until_it_is_back() {
        let mut m = machine(1);
        m.remember("away", true, false, 0, 0);
        let (old, _) = m.connect("old", 0, PeerKind::Replica, true, 0, 0);
        m.all_members_told();
        let (new, _) = m.connect("new", 0, PeerKind::Replica, true, 0, 0);
        // Both live members are told the new membership at once, and prove it.
        let version = beat(&mut m, &new);
        assert_eq!(beat(&mut m, &old), version);
        assert_eq!(m.heartbeat_sent(&new, 0, 0).0, 3, "three counting members");
        ship_and_ack(&mut m, &new, 5, version);
        ship_and_ack(&mut m, &old, 3, version);
        assert_eq!(m.quorum_lsn(), 3, "the newcomer's ack of 5 does not count");
        assert_eq!(m.acked_by(5), Vec::<String>::new());
        let view = m.quorum_view();
        assert_eq!((view.acked.len(), view.joining), (2, 1));
        // The member that was away comes back and learns of the newcomer.
        let (away, _) = m.connect("away", 0, PeerKind::Replica, true, 0, 0);
        ship_and_ack(&mut m, &away, 1, 0);
        assert_eq!(
            m.quorum_lsn(),
            3,
            "an ack without the version proves nothing"
        );
        assert_eq!(beat(&mut m, &away), version);
        let outcome = m.ack(&away, 1, 1, version, 0);
        assert!(outcome.established);
        assert_eq!(outcome.quorum_lsn, Some(5));
        assert_eq!(m.acked_by(5), vec!["new".to_owned()]);
    }

    #[test]
    fn a_remembered_member_returns_from_its_own_store_and_another_store_joins_anew() {
        let mut m = machine(1);
        m.remember("c", true, false, 0xc, 0);
        m.remember("a", true, false, 0xa, 0);
        let (own, _) = m.connect("c", 0xc, PeerKind::Replica, true, 0, 0);
        assert!(m.peer(&own).unwrap().established(), "its own store returns");
        m.disconnect(&own);
        assert!(!m.would_join("c", 0xc, PeerKind::Replica, true));
        // A directory replaced under the name, with "a" away: it waits to count.
        assert!(m.would_join("c", 0xc2, PeerKind::Replica, true));
        let (replaced, _) = m.connect("c", 0xc2, PeerKind::Replica, true, 0, 0);
        let version = beat(&mut m, &replaced);
        ship_and_ack(&mut m, &replaced, 2, version);
        assert!(!m.peer(&replaced).unwrap().established());
        assert_eq!(
            m.quorum_lsn(),
            0,
            "its ack counts once \"a\" knows it joined"
        );
    }

    #[test]
    fn a_version_never_announced_on_the_connection_proves_nothing() {
        let mut m = machine(1);
        let (a, _) = m.connect("a", 0, PeerKind::Replica, true, 0, 0);
        // Echoed before any heartbeat of this connection told it (another primary's).
        ship_and_ack(&mut m, &a, 2, 7);
        assert_eq!(m.quorum_lsn(), 0);
        let version = beat(&mut m, &a);
        m.disconnect(&a);
        // Told on a connection since replaced: the new one must be told again.
        let (a, _) = m.connect("a", 0, PeerKind::Replica, true, 2, 0);
        m.ack(&a, 2, 2, version, 0);
        assert_eq!(m.quorum_lsn(), 0);
        assert_eq!(beat(&mut m, &a), version);
        assert!(m.ack(&a, 2, 2, version, 0).established);
        assert_eq!(m.quorum_lsn(), 2);
    }

    #[test]
    fn forgetting_the_member_that_held_up_a_joiner_establishes_it() {
        let mut m = machine(1);
        m.remember("gone", true, false, 0, 0);
        let (new, _) = m.connect("new", 0, PeerKind::Replica, true, 0, 0);
        let version = beat(&mut m, &new);
        ship_and_ack(&mut m, &new, 4, version);
        assert_eq!(m.quorum_lsn(), 0);
        m.forget("gone");
        assert_eq!(m.quorum_lsn(), 4);
        // One member fewer is a new membership: the next heartbeat says so.
        let (members, newer) = m.heartbeat_sent(&new, 4, 0);
        assert_eq!((members, newer > version), (1, true));
    }

    #[test]
    fn replicas_that_do_not_fsync_and_consumers_neither_join_nor_hold_up_a_joiner() {
        let mut m = machine(1);
        let (lazy, _) = m.connect("lazy", 0, PeerKind::Replica, false, 0, 0);
        let (cache, _) = m.connect("cache", 0, PeerKind::Consumer, false, 0, 0);
        assert!(!m.untold(m.peer(&lazy).unwrap()) && !m.untold(m.peer(&cache).unwrap()));
        let (a, _) = m.connect("a", 0, PeerKind::Replica, true, 0, 0);
        let version = beat(&mut m, &a);
        ship_and_ack(&mut m, &a, 1, version);
        assert_eq!(m.quorum_lsn(), 1);
        // A member that reconnects without fsync leaves; with it again, it joins anew.
        m.disconnect(&a);
        let (a, _) = m.connect("a", 0, PeerKind::Replica, false, 1, 0);
        assert_eq!(m.quorum_view().acked.len(), 0);
        m.disconnect(&a);
        let (a, _) = m.connect("a", 0, PeerKind::Replica, true, 1, 0);
        assert_eq!(m.quorum_view().joining, 1);
        let version = beat(&mut m, &a);
        assert!(m.ack(&a, 1, 1, version, 0).established);
    }

    #[test]
    fn another_store_under_a_members_name_joins_anew() {
        let mut m = machine(1);
        let (a, _) = m.connect("a", 11, PeerKind::Replica, true, 0, 0);
        let version = beat(&mut m, &a);
        m.ack(&a, 0, 0, version, 0);
        assert!(m.peer(&a).unwrap().established());
        m.disconnect(&a);
        let (same, _) = m.connect("a", 11, PeerKind::Replica, true, 0, 0);
        assert!(
            m.peer(&same).unwrap().established(),
            "a reconnection keeps its place"
        );
        m.disconnect(&same);
        let (other, _) = m.connect("a", 12, PeerKind::Replica, true, 0, 0);
        assert!(!m.peer(&other).unwrap().established());
    }
}
