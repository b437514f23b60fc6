//! The promises checked after every step, the liveness check at the end, and the trace
//! that a failure prints and a determinism test hashes.

use std::fmt;

use super::network::{Frame, Side};
use super::peer::Node;
use super::world::{Event, World};
use crate::codec::payload_lsn;
use crate::replication::protocol::Message;

/// A promise of DESIGN §3 as the simulator checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invariant {
    /// Promise 3: a sync write returned to its writer is fsynced, equal to the primary's,
    /// on at least `quorum` counting replicas (checked after every step, and so when the
    /// primary is lost).
    SyncWriteDurable,
    /// Promise 3: a sync write returns only once at least `quorum` counting replicas hold
    /// it durably applied: fsynced, and shown to their readers (checked as it returns,
    /// from a primary that does not ship ahead).
    SyncWriteApplied,
    /// Promise 5: a peer's log is always a prefix of the primary's, entry by entry, whole.
    PrefixOfPrimaryLog,
    /// Promise 5: a peer's applied state hashes equal to the primary's at that LSN.
    EqualChecksums,
    /// A peer's readers see only entries durable on the primary (a replica that holds
    /// back is shipped entries before they are; the primary may lose them).
    AppliedOnlyDurable,
    /// A replica that fsyncs never acks (nor claims flushed) past what it fsynced.
    AckOnlyFsynced,
    /// An ack that arrives on a connection the primary closed changes nothing.
    StaleFrameIgnored,
    /// After the faults stop, every peer catches up within the bound.
    CatchUp,
    /// A replica restarted after a crash shows at least the durable entries it showed
    /// before, unless its primary ships ahead (then it cannot know which were confirmed).
    ShownStaysShown,
    /// Promise 3 across a promotion: a replica's acks count toward the quorum only once
    /// every counting replica the primary knows has recorded a member count that counts
    /// it (else a promotion by one that has not could miss the writes it acknowledged).
    MembersKnowWhoCounts,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invariant::SyncWriteDurable => "sync write durable on a quorum",
            Invariant::SyncWriteApplied => "sync write applied on a quorum as it returns",
            Invariant::PrefixOfPrimaryLog => "peer log is a prefix of the primary's",
            Invariant::EqualChecksums => "equal checksums at equal applied LSN",
            Invariant::AppliedOnlyDurable => "readers see only what the primary made durable",
            Invariant::AckOnlyFsynced => "acks only what is fsynced",
            Invariant::StaleFrameIgnored => "stale frames are ignored",
            Invariant::CatchUp => "every peer catches up after healing",
            Invariant::ShownStaysShown => "a restart hides nothing durable a replica showed",
            Invariant::MembersKnowWhoCounts => "every member has recorded who counts",
        })
    }
}

/// An invariant that failed, and what was seen.
pub(super) type Violation = super::report::Violation<Invariant>;

impl World {
    /// Every invariant that can be checked on the state, in O(peers).
    pub(super) fn check(&self) -> Result<(), Violation> {
        // The primary's quorum LSN releases writers: it must be true before any writer
        // relies on it (while the primary runs: a crash loses what it had not fsynced, which
        // a replica that holds back may have acked, and its machine with it), and so must
        // every sync write that returned.
        let quorum_lsn = if self.primary_up {
            self.primary.quorum_lsn()
        } else {
            0
        };
        for (what, lsn) in [
            ("the primary's quorum LSN", quorum_lsn),
            ("the last sync write returned", self.sync_returned_lsn),
        ] {
            // The same entries: a replica that holds back counts with what it fsynced
            // before the primary's own fdatasync ended.
            let expected = self.log.checksum(lsn);
            let holding = self
                .nodes
                .iter()
                .filter(|n| {
                    n.counts() && n.disk.durable_lsn() >= lsn && n.disk.checksum(lsn) == expected
                })
                .count();
            if holding < self.sim.config.quorum {
                return Err(Violation::new(
                    Invariant::SyncWriteDurable,
                    format!(
                        "{what} is {lsn}, fsynced and equal to the primary's on {holding} \
                         counting replicas of the quorum {} (durable: {})",
                        self.sim.config.quorum,
                        self.positions(|n| n.disk.durable_lsn())
                    ),
                ));
            }
        }
        if self.primary_up {
            self.members_know_who_counts()?;
        }
        for node in &self.nodes {
            self.shows_only_durable(node)?;
            if let Some((showed, shows)) = node.hid.filter(|_| !self.sim.params.ship_ahead) {
                return Err(Violation::new(
                    Invariant::ShownStaysShown,
                    format!(
                        "{} showed LSN {showed}, durably, before a crash and shows {shows} \
                         after it, from a primary that does not ship ahead",
                        node.name
                    ),
                ));
            }
            if node.fsync && node.machine.flushed_lsn() > node.disk.durable_lsn() {
                return Err(Violation::new(
                    Invariant::AckOnlyFsynced,
                    format!(
                        "{} claims flushed_lsn {} with its disk durable up to {}",
                        node.name,
                        node.machine.flushed_lsn(),
                        node.disk.durable_lsn()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every replica whose acks count is counted by the member count that each counting
    /// replica the primary knows has recorded.
    fn members_know_who_counts(&self) -> Result<(), Violation> {
        let view = self.primary.quorum_view();
        let Some((name, rank)) = view
            .acked
            .iter()
            .filter_map(|(name, _)| Some((name, *self.join_rank.get(name)?)))
            .max_by_key(|(_, rank)| *rank)
        else {
            return Ok(());
        };
        // A replica that never recorded a membership cannot promote (its rule is unknown).
        let known = |n: &&Node| {
            n.recorded_members > 0
                && self
                    .primary
                    .peers()
                    .any(|p| p.counts() && p.id.name == n.name)
        };
        match self
            .nodes
            .iter()
            .filter(known)
            .find(|n| n.recorded_members < rank)
        {
            None => Ok(()),
            Some(unaware) => Err(Violation::new(
                Invariant::MembersKnowWhoCounts,
                format!(
                    "{name}'s acks count, and it joined as counting replica {rank}, but {} \
                     recorded only {} members",
                    unaware.name, unaware.recorded_members
                ),
            )),
        }
    }

    /// A sync write returning at `lsn` is durably applied on at least `quorum` counting
    /// replicas: fsynced, and acked as shown to readers.
    pub(super) fn shown_on_quorum(&self, lsn: u64) -> Result<(), Violation> {
        let showing = self
            .nodes
            .iter()
            .filter(|n| n.counts() && n.shown_ever() >= lsn && n.disk.durable_lsn() >= lsn)
            .count();
        if showing >= self.sim.config.quorum {
            return Ok(());
        }
        Err(Violation::new(
            Invariant::SyncWriteApplied,
            format!(
                "sync write {lsn} returned, durably applied on {showing} counting replicas of \
                 the quorum {} (acked as shown: {})",
                self.sim.config.quorum,
                self.positions(Node::shown_ever)
            ),
        ))
    }

    /// What `node` shows its readers is durable on the primary, and equal to it.
    fn shows_only_durable(&self, node: &Node) -> Result<(), Violation> {
        let applied = node.machine.applied_lsn();
        if applied > self.log.durable_lsn() {
            return Err(Violation::new(
                Invariant::AppliedOnlyDurable,
                format!(
                    "{} shows LSN {applied}, and the primary's log is durable up to {}",
                    node.name,
                    self.log.durable_lsn()
                ),
            ));
        }
        let Some(checksum) = node.disk.checksum(applied) else {
            return Err(Violation::new(
                Invariant::PrefixOfPrimaryLog,
                format!(
                    "{} shows LSN {applied} with {} entries in its log",
                    node.name,
                    node.disk.len()
                ),
            ));
        };
        if Some(checksum) != self.log.checksum(applied) {
            return Err(Violation::new(
                Invariant::EqualChecksums,
                format!("{} differs from the primary at LSN {applied}", node.name),
            ));
        }
        Ok(())
    }

    /// Promise 3 once the primary is lost: every peer loses its page cache too (the
    /// worst case), and at least `quorum` counting replicas still hold, durably and byte
    /// for byte, every entry up to the last sync write returned to a writer.
    pub(super) fn after_primary_loss(&mut self) -> Result<(), Violation> {
        let lsn = self.sync_returned_lsn;
        let expected = self.log.checksum(lsn);
        for node in &mut self.nodes {
            node.disk.crash();
        }
        let holding = self
            .nodes
            .iter()
            .filter(|n| n.counts() && n.disk.checksum(lsn) == expected)
            .count();
        if holding >= self.sim.config.quorum {
            return Ok(());
        }
        Err(Violation::new(
            Invariant::SyncWriteDurable,
            format!(
                "the primary is lost and only {holding} counting replicas hold sync write \
                 {lsn} (quorum {}); their logs: {}",
                self.sim.config.quorum,
                self.positions(|n| n.disk.len())
            ),
        ))
    }

    /// Whether the run may end: everything committed is durable on the primary, every
    /// sync write returned, and every peer is connected and holds and shows it all.
    pub(super) fn settled(&self) -> bool {
        let last = self.log.len();
        self.log.durable_lsn() == last
            && self.sync_waiting.is_empty()
            && self.nodes.iter().all(|n| {
                n.up && n.conn.is_some()
                    && n.machine.flushed_lsn() == last
                    && n.machine.applied_lsn() == last
            })
    }

    /// The liveness failure: who is behind, and where the primary thinks they are.
    pub(super) fn lagging(&self) -> Violation {
        let detail = self
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "{} up={} connected={} applied={} link={:?}",
                    n.name,
                    n.up,
                    n.conn.is_some(),
                    n.machine.applied_lsn(),
                    self.link_state(&n.name)
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        Violation::new(
            Invariant::CatchUp,
            format!(
                "primary at {} (sync writes waiting: {}) and not caught up: {detail}",
                self.log.len(),
                self.sync_waiting.len()
            ),
        )
    }

    fn positions(&self, position: impl Fn(&Node) -> u64) -> String {
        let all: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{}={}", n.name, position(n)))
            .collect();
        all.join(", ")
    }
}

/// The last steps of a run, for a failure to print, and a hash of all of them.
pub(super) type Trace = super::trace::Trace<Event, TAIL>;

/// Steps a failure shows.
const TAIL: usize = 40;

/// A step as a person reads it.
pub(super) fn describe(event: &Event) -> String {
    match event {
        Event::Deliver {
            generation,
            to,
            frame,
        } => format!(
            "deliver on #{generation} to {}: {}",
            side(*to),
            frame_name(frame)
        ),
        Event::Stale {
            generation,
            to,
            frame,
            ..
        } => format!(
            "late frame of #{generation} to {}: {}",
            side(*to),
            frame_name(frame)
        ),
        other => format!("{other:?}"),
    }
}

/// A frame as a person reads it: entries by LSN, not by bytes.
fn frame_name(frame: &Frame) -> String {
    match frame {
        Frame::Wire(Message::Entries { payloads, .. }) => {
            let lsns: Vec<_> = payloads.iter().filter_map(|p| payload_lsn(p)).collect();
            format!("entries {lsns:?}")
        }
        Frame::Wire(Message::EntryPart {
            total,
            offset,
            data,
            lsn,
            ..
        }) => {
            format!(
                "entry {lsn} part {offset}..{} of {total}",
                offset + data.len() as u64
            )
        }
        other => format!("{other:?}"),
    }
}

fn side(to: Side) -> &'static str {
    match to {
        Side::Primary => "primary",
        Side::Peer => "peer",
    }
}
