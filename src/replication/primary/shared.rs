//! What every task of a primary shares: acks in, entries made visible, peers admitted,
//! status and retention out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::{lock, oldest_missing_ms, outbox, Claim, PrimaryStatus, Shared, SharedSocket, Wire};
use crate::error::Result;
use crate::replication::machine::{LinkId, Micros, PrimaryMachine};
use crate::replication::protocol::{Message, PeerKind};
use crate::replication::status::{lag_seconds, now_ms, ReplicaLink, SyncRole, SyncState};
use crate::store::{LogHolds, RetentionPolicy};

impl Shared {
    /// Hears from the store that entries up to `lsn` are visible (once per group-commit
    /// batch, on the thread that led it): dates them (see [`crate::replication::commit_times::CommitTimes`]) and wakes the
    /// streaming tasks parked waiting for entries. A task that is shipping, or pacing itself
    /// to `ship_interval`, is not woken: it finds the entries when it next looks, so one
    /// wake-up carries every batch made visible meanwhile.
    ///
    /// When this thread is a sync writer about to wait for one of them, they leave from it
    /// where they can (see [`super::from_writer`]), and the tasks of the links served so are not
    /// woken.
    pub(super) fn entries_visible(&self, lsn: u64) {
        self.commit_times.record(lsn, now_ms());
        let wish = self.sync.visible(lsn);
        // Only a sync writer that made its own entry visible ships from its thread: an
        // async writer leading the batch leaves it to the tasks (see [`from_writer`]).
        let shipped = self.sync.waits_here(lsn)
            && wish.is_some_and(|wanted| self.ship_from_writer(lsn, wanted));
        // Before the links hear of the entries: one woken by either sees the wishes.
        if let Some(wanted) = wish {
            self.sync.announce(wanted, !shipped);
        }
        self.visible.send_if_modified(|seen| {
            let newer = lsn > *seen;
            *seen = (*seen).max(lsn);
            newer && !shipped
        });
    }

    /// Offers the socket `id` streams on to writers' threads until the guard is dropped.
    pub(super) fn share_socket(
        &self,
        id: &LinkId,
        outbox: &Arc<outbox::Outbox>,
    ) -> SharedSocket<'_> {
        let mut links = lock(&self.links);
        if let Some(wire) = links.wires.get_mut(&id.name) {
            wire.outbox = Some((id.clone(), Arc::clone(outbox)));
        }
        SharedSocket {
            shared: self,
            id: id.clone(),
        }
    }

    /// The status report a monitor gets.
    pub(super) fn report(&self) -> Message {
        let status = self.status();
        Message::Status {
            last_lsn: status.last_lsn,
            epoch: status.epoch,
            rejected: status.rejected,
            replicas: status.replicas,
            sync_state: status.sync_state,
        }
    }

    /// Persists the slots, then drops whole log segments no slot needs, within the caps:
    /// the store's policy, or this primary's own caps where it has them. A pinned slot (a
    /// replica being seeded) keeps its log whatever the caps say.
    pub(super) fn retain(&self) -> Result<usize> {
        self.slots.persist()?;
        let store_policy = self.store.retention_policy();
        let policy = RetentionPolicy {
            bytes: self.options.retain_bytes.or(store_policy.bytes),
            age: self.options.retain_seconds.or(store_policy.age),
        };
        let holds = LogHolds {
            min_acked: self.slots.min_acked(),
            min_pinned: self.slots.min_pinned(),
        };
        let dropped = self.store.retain_log(policy, holds)?;
        if dropped > 0 {
            tracing::info!(target: super::LOG_TARGET, dropped, "dropped log segments no replica needs");
        }
        Ok(dropped)
    }

    /// The machine's clock: microseconds since the primary started.
    pub(super) fn now_us(&self) -> Micros {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Every link's state and lag: in memory only, so cheap enough for any caller.
    pub(super) fn status(&self) -> PrimaryStatus {
        let last_lsn = self.store.last_lsn();
        let now = now_ms();
        // A replica away since this primary started has acked nothing to it, but its slot
        // says where it stands (and where it resumes): shown rather than 0. Not a pinned
        // slot's, which is a snapshot's the replica may never have received.
        let held: HashMap<String, u64> = self
            .slots
            .list()
            .into_iter()
            .filter(|slot| !slot.pinned)
            .map(|slot| (slot.name, slot.acked_lsn))
            .collect();
        let links = lock(&self.links);
        let replicas = links
            .machine
            .peers()
            .map(|peer| {
                let wire = links.wires.get(&peer.id.name);
                let acked_lsn = match held.get(&peer.id.name) {
                    Some(&slot) if !peer.state.is_connected() => peer.acked_lsn.max(slot),
                    _ => peer.acked_lsn,
                };
                let oldest_missing = oldest_missing_ms(peer, last_lsn, &self.commit_times)
                    .filter(|_| acked_lsn < last_lsn);
                ReplicaLink {
                    name: peer.kind.peer_name(&peer.id.name).to_owned(),
                    kind: peer.kind.name().to_owned(),
                    address: wire.map(|w| w.address.clone()).unwrap_or_default(),
                    state: peer.state,
                    sent_lsn: peer.sent_lsn,
                    acked_lsn,
                    lag_lsn: last_lsn.saturating_sub(acked_lsn),
                    lag_bytes: peer.in_flight_bytes,
                    lag_seconds: lag_seconds(oldest_missing, now),
                    last_seen_ms: wire.map_or(0, |w| w.last_seen_ms),
                    sync_state: match (peer.counts(), peer.established()) {
                        (true, true) => SyncRole::Quorum,
                        (true, false) => SyncRole::Joining,
                        (false, _) => SyncRole::Async,
                    },
                }
            })
            .collect();
        // A deposed primary takes no write at all, whatever its replicas.
        let sync_state = if self.sync.is_fenced() {
            SyncState::Unavailable
        } else {
            SyncState::of(
                links.machine.connected_counting_replicas(),
                links.machine.counting_replicas(),
                self.options.sync.quorum,
            )
        };
        drop(links);
        PrimaryStatus {
            last_lsn,
            epoch: self.store.epoch(),
            rejected: self.rejected.load(Ordering::Acquire),
            last_rejection: lock(&self.last_rejection).clone(),
            replicas,
            sync_state,
        }
    }

    pub(super) fn reject(&self, peer: &dyn std::fmt::Display, reason: &str) {
        if let Some(skipped) = self.rejections_logged.admit(Instant::now()) {
            tracing::warn!(target: super::LOG_TARGET, %peer, %reason, skipped, "refused a replication connection");
        }
        // The reason first: whoever sees the count sees the reason behind it.
        *lock(&self.last_rejection) = Some(format!("{peer}: {reason}"));
        self.rejected.fetch_add(1, Ordering::Release);
    }

    pub(super) fn token(&self) -> &[u8] {
        self.options.token.as_deref().unwrap_or("").as_bytes()
    }

    /// Holds `name` for a hello from the store `store_id` while it is admitted. Refused if
    /// another store is connected under that name (see [`PrimaryMachine::held_by_another`]:
    /// the error says where from) or is being admitted under it (`None`).
    pub(super) fn claim(&self, name: &str, store_id: u64) -> Result<Claim<'_>, Option<String>> {
        let mut links = lock(&self.links);
        if links.machine.held_by_another(name, store_id) {
            return Err(links.wires.get(name).map(|wire| wire.address.clone()));
        }
        if store_id != 0 {
            match links.admitting.get(name) {
                Some(&other) if other != store_id => return Err(None),
                _ => {
                    links.admitting.insert(name.to_owned(), store_id);
                }
            }
        }
        Ok(Claim {
            links: &self.links,
            name: name.to_owned(),
            store_id,
        })
    }

    /// Registers a connection for `name` that holds everything up to `from_lsn` and shows
    /// its readers up to `shown_lsn` (less if it `holds_back`: it is then shipped ahead),
    /// stopping an older one for the same name.
    pub(super) fn connect(
        &self,
        kind: PeerKind,
        durable: bool,
        name: &str,
        store_id: u64,
        peer: &SocketAddr,
        (from_lsn, shown_lsn, holds_back): (u64, u64, bool),
    ) -> (LinkId, watch::Receiver<bool>) {
        let (stop, stop_rx) = watch::channel(false);
        let now = self.now_us();
        let mut links = lock(&self.links);
        let (id, _replaced) = links
            .machine
            .connect(name, store_id, kind, durable, from_lsn, now);
        links.machine.showing(&id, shown_lsn);
        // Before the waiters see the link: a replica that holds back counts what it holds
        // durably, as its earlier link did (a view that counted it by what it shows would
        // name nobody for a write its earlier link's ack released).
        if holds_back {
            links.machine.hold_back(&id);
        }
        self.sync.publish(links.machine.quorum_view());
        let wire = Wire {
            address: peer.to_string(),
            stop,
            last_seen_ms: now_ms(),
            outbox: None,
        };
        if let Some(old) = links.wires.insert(name.to_owned(), wire) {
            old.stop.send_replace(true);
        }
        (id, stop_rx)
    }

    /// A cumulative ack from `id`: moves the machine, wakes whoever waits on acks, and
    /// moves a replica's slot.
    pub(super) fn acknowledge(
        &self,
        id: &LinkId,
        flushed_lsn: u64,
        applied_lsn: u64,
        members_version: u64,
    ) {
        let now = self.now_us();
        let mut links = lock(&self.links);
        let outcome = links
            .machine
            .ack(id, flushed_lsn, applied_lsn, members_version, now);
        if let Some(wire) = links.wires.get_mut(&id.name) {
            wire.last_seen_ms = now_ms();
        }
        // Only a replica moves its slot (the ack its snapshot's pin waits for unpins it),
        // before the waiters learn of the ack: whoever `wait_for` released finds the slot
        // moved. The slots' lock is a leaf: it is never held while `links` is taken.
        if let Some(lsn) = outcome.slot_lsn {
            self.slots.advance(&id.name, lsn);
        }
        if outcome.established {
            self.settle_slots(&links.machine);
        }
        if let Some(lsn) = outcome.quorum_lsn {
            self.announce_raised_quorum(lsn);
        }
        if outcome.quorum_lsn.is_some() || outcome.slot_lsn.is_some() || outcome.established {
            self.sync.publish(links.machine.quorum_view());
        }
    }

    /// The quorum LSN reached `quorum_lsn`: a raised quorum that now holds everything
    /// written before this primary started is the one heartbeats tell from now on.
    /// Called on every rise of the quorum LSN: once announced, it only reads.
    pub(super) fn announce_raised_quorum(&self, quorum_lsn: u64) {
        let quorum = self.options.sync.quorum as u64;
        if self.announced_quorum.load(Ordering::Acquire) != quorum
            && quorum_lsn >= self.raised_over
            && self.announced_quorum.swap(quorum, Ordering::AcqRel) != quorum
        {
            self.slots.settle_quorum(quorum);
            tracing::info!(target: super::LOG_TARGET, quorum, "the raised quorum holds everything written before it: replicas are told it now");
        }
    }

    /// Marks the slots of the replicas that count toward the quorum as no longer joining.
    pub(super) fn settle_slots(&self, machine: &PrimaryMachine) {
        for peer in machine.peers().filter(|p| p.counts() && p.established()) {
            self.slots.settle(&peer.id.name);
        }
    }

    /// Learned that `epoch` began elsewhere (a replica was promoted): sync writers still
    /// waiting fail with [`crate::error::ReplicationError::Fenced`], the store durably records the epoch
    /// and refuses writes, and every link stops, so that no replica takes an entry from
    /// this deposed primary again. Nothing happens for an epoch not newer than the store's.
    pub(super) async fn fence(self: &Arc<Self>, epoch: u64) {
        if epoch <= self.store.epoch() {
            return;
        }
        self.sync.fence(epoch);
        let store = self.store.clone();
        let raised = tokio::task::spawn_blocking(move || store.raise_epoch(epoch)).await;
        if !matches!(raised, Ok(Ok(_))) {
            tracing::error!(target: super::LOG_TARGET, epoch, result = ?raised, "could not record the newer epoch durably; writes stay refused until restart");
        }
        tracing::warn!(
            target: super::LOG_TARGET,
            epoch,
            "deposed: epoch {epoch} began elsewhere; this primary takes no more writes"
        );
        for wire in lock(&self.links).wires.values() {
            wire.stop.send_replace(true);
        }
    }

    /// The commit time of the oldest entry `id` lacks, if it lacks any.
    pub(super) fn oldest_missing_ms(&self, id: &LinkId, last_lsn: u64) -> Option<u64> {
        let links = lock(&self.links);
        let peer = links.machine.peer(id)?;
        oldest_missing_ms(peer, last_lsn, &self.commit_times)
    }

    /// `name` says it serves at `address`: the switchover waiting for it (if it hands over
    /// to `name`) is done.
    pub(super) fn handed_over(&self, name: &str, address: String) {
        let mut waiting = lock(&self.handing_over);
        if waiting.as_ref().is_some_and(|(to, _)| to == name) {
            if let Some((_, done)) = waiting.take() {
                let _ = done.send(address);
            }
        }
    }

    /// Runs `f` on the protocol state.
    pub(super) fn machine<T>(&self, f: impl FnOnce(&mut PrimaryMachine) -> T) -> T {
        f(&mut lock(&self.links).machine)
    }
}
