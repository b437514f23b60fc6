//! What each link does next, decided from the peer's state and the primary's LSNs:
//! entries ship as they become visible (or as they are written, to a peer that holds
//! back), at once when a sync writer waits for them and paced otherwise; heartbeats go out
//! on time; a peer that holds back is told what is durable; a silent link is dropped.

use super::{
    is_connected, LinkAction, LinkId, Micros, Peer, PrimaryMachine, Shipped, APPLIED_PER_SECOND,
    MAX_AHEAD_ENTRIES, MAX_PENDING_WANTS,
};
use crate::replication::machine::APPLY_BATCH_BYTES;
use crate::replication::status::LinkState;

impl PrimaryMachine {
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

    /// Whether `id` has been sent every entry it may be (so new ones are news to it).
    #[must_use]
    pub fn caught_up(&self, id: &LinkId) -> bool {
        self.peer(id).is_none_or(|p| p.sent_lsn >= self.ship_end(p))
    }

    /// Whether `id` has been sent everything it may be and told everything it is owed:
    /// nothing that happened since its last frame is for it until its next heartbeat.
    #[must_use]
    pub fn has_all(&self, id: &LinkId) -> bool {
        self.caught_up(id) && self.peer(id).is_none_or(|p| !self.owes_confirmation(p))
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
        let stall_at = peer.last_heard.saturating_add(self.stall_timeout_of(peer));
        if now >= stall_at {
            return LinkAction::Drop;
        }
        let beat_at = peer.last_beat + self.config.heartbeat_interval;
        // Heartbeats go out on time even while entries flow: they carry the clock samples
        // that lag is measured with, and a peer acks at least those. A member not told the
        // current membership is told at once: a joining member counts once all know it.
        if beat_at <= now || self.untold(peer) {
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
                Some(at) if backlog < self.config.catch_up_entries && !urgent && !peer.behind => {
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
            // but at once for a sync writer's entry, so that its readers see it soon.
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

    /// How long `peer` may stay silent: the stall timeout, and a second more per
    /// [`APPLIED_PER_SECOND`] bytes of the batch it may be applying. A replica acks a batch
    /// once it is applied, and one bulk load may take it seconds: dropped for that, it
    /// would reconnect and take it again. A batch is at most [`APPLY_BATCH_BYTES`] and the
    /// entry that crossed that mark, so what is shipped beyond (read ahead, or still in
    /// the sockets) earns no more time: a peer gone with a deep backlog in flight is
    /// dropped as soon as one with none would be, give or take one batch.
    fn stall_timeout_of(&self, peer: &Peer) -> Micros {
        let batch = peer
            .in_flight_bytes
            .min(APPLY_BATCH_BYTES.saturating_add(peer.in_flight_largest()));
        let applying = batch.saturating_mul(1_000_000) / APPLIED_PER_SECOND;
        self.config.stall_timeout.saturating_add(applying)
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
        peer.behind = false;
        for entry in entries {
            peer.push_in_flight(*entry);
        }
        peer.state = if peer.sent_lsn >= visible {
            LinkState::Streaming
        } else {
            LinkState::CatchingUp
        };
    }

    /// The batch just shipped to `id` stopped short of the `up_to_lsn` its
    /// [`LinkAction::Ship`] asked for (it filled the batch's bounds first): the peer is a
    /// batch or more behind, and its next batch ships without waiting for the interval.
    /// In entries alone a backlog of large ones never looked that far behind, and such a
    /// peer took one batch per interval.
    pub fn fell_short(&mut self, id: &LinkId) {
        if let Some(peer) = self.live(id) {
            peer.behind = true;
        }
    }

    /// A heartbeat saying the log is durable up to `last_lsn` is about to be sent to `id`;
    /// returns the membership it announces: `(counting members, version)`.
    pub fn heartbeat_sent(&mut self, id: &LinkId, last_lsn: u64, now: Micros) -> (u64, u64) {
        if let Some(peer) = self.live(id) {
            peer.last_beat = now;
            peer.told_durable = peer.told_durable.max(last_lsn);
        }
        self.announce_members(&id.name)
    }
}
