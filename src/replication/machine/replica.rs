//! The replica's protocol decisions as a pure state machine: which entries to append (whole,
//! in LSN order, never from an older epoch), and what to acknowledge (only what its log
//! holds durably). The caller carries out [`ReplicaAction`]s on a real or simulated disk
//! and reports back with [`ReplicaMachine::durable`].
//!
//! A replica may hold entries back from its readers ([`ReplicaMachine::holding_back`]):
//! its primary then ships entries as soon as they are written, before its own fdatasync
//! ends, so that the two overlap. Such entries are appended, synced and acknowledged (the
//! ack is a true durability claim), but readers see them only once the primary says they
//! are durable there ([`ReplicaAction::Release`]): a primary that loses its page cache
//! loses them, and the replica's log is cut back at the next handshake
//! ([`crate::replication::handshake::resume_holding`]).

#[cfg(test)]
use super::Planted;
use crate::codec::{payload_epoch, payload_lsn, MAX_RECORD_BYTES};
use crate::error::ReplicationError;
use crate::replication::protocol::Message;
use crate::replication::status::LinkState;

/// What the replica's transport and disk should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaAction {
    /// Append these whole entries, in order, to the log; report with `durable` once they
    /// are fsynced.
    Append(Vec<Vec<u8>>),
    /// Entries up to this LSN are durable at the primary: readers may see them, and once
    /// they do, report with `durable` and send the ack it returns (a sync writer at the
    /// primary may wait for it). Only a machine that holds back says it (any other's store
    /// shows what it appends).
    Release(u64),
    /// Send a cumulative acknowledgement.
    Ack {
        /// Durable in the log up to here.
        flushed_lsn: u64,
        /// Visible to readers up to here.
        applied_lsn: u64,
        /// The newest membership version this connection's heartbeats carried, recorded
        /// durably before the heartbeat reached the machine.
        members_version: u64,
    },
}

/// The whole replica side of the protocol, for one store.
#[derive(Debug, Clone)]
pub struct ReplicaMachine {
    flushed_lsn: u64,
    applied_lsn: u64,
    appended_lsn: u64,
    /// The highest epoch seen: frames from a primary of an older one are refused.
    epoch: u64,
    /// The epoch of the last entry appended: the log's epochs never go back.
    entry_epoch: u64,
    primary_last_lsn: u64,
    /// Whether entries wait for `confirmed_lsn` before readers see them.
    holds_back: bool,
    /// The primary's durable LSN, as last heard.
    confirmed_lsn: u64,
    /// The last LSN readers were allowed to see.
    released_lsn: u64,
    state: LinkState,
    parts: Vec<u8>,
    /// The size the first part of the entry in `parts` announced.
    parts_total: usize,
    parts_lsn: u64,
    /// See [`ReplicaAction::Ack`]: a machine lives for one connection, so a version of
    /// another primary's (or of this one's before a restart) is never echoed.
    members_version: u64,
    #[cfg(test)]
    pub(crate) planted: Planted,
}

impl ReplicaMachine {
    /// A replica whose log is durable up to `flushed_lsn` (an entry of `entry_epoch`),
    /// applied up to `applied_lsn`, and which has seen `epoch`.
    #[must_use]
    pub fn new(flushed_lsn: u64, applied_lsn: u64, epoch: u64, entry_epoch: u64) -> Self {
        Self {
            flushed_lsn,
            applied_lsn,
            appended_lsn: flushed_lsn,
            epoch: epoch.max(entry_epoch),
            entry_epoch,
            primary_last_lsn: 0,
            holds_back: false,
            // What the log held at the start was applied by its recovery.
            confirmed_lsn: flushed_lsn,
            released_lsn: flushed_lsn,
            state: LinkState::Connecting,
            parts: Vec::new(),
            parts_total: 0,
            parts_lsn: 0,
            members_version: 0,
            #[cfg(test)]
            planted: Planted::default(),
        }
    }

    /// The same machine, holding entries back from readers until the primary says they
    /// are durable there (so that its primary may ship them before they are), whose
    /// store kept `confirmed_lsn` as confirmed (and applied its log up to it).
    #[must_use]
    pub fn holding_back(mut self, confirmed_lsn: u64) -> Self {
        self.holds_back = true;
        self.confirmed_lsn = confirmed_lsn;
        self.released_lsn = confirmed_lsn.min(self.applied_lsn);
        self
    }

    /// Whether it holds entries back (see [`ReplicaMachine::holding_back`]).
    #[must_use]
    pub fn holds_back(&self) -> bool {
        self.holds_back
    }

    /// The last LSN its primary said was durable there (at most what the log holds): the
    /// entries after it are held back from readers, and are what a handshake may cut.
    #[must_use]
    pub fn confirmed_lsn(&self) -> u64 {
        self.confirmed_lsn.min(self.appended_lsn)
    }

    /// Durable in its log up to here: what its acks carry, and where a resume starts.
    #[must_use]
    pub fn flushed_lsn(&self) -> u64 {
        self.flushed_lsn
    }

    /// Visible to its readers up to here.
    #[must_use]
    pub fn applied_lsn(&self) -> u64 {
        self.applied_lsn
    }

    /// Appended to its log up to here, durable or not.
    #[must_use]
    pub fn appended_lsn(&self) -> u64 {
        self.appended_lsn
    }

    /// The highest epoch it has seen.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The primary's last LSN, as last heard.
    #[must_use]
    pub fn primary_last_lsn(&self) -> u64 {
        self.primary_last_lsn
    }

    /// Where the link stands.
    #[must_use]
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// The primary welcomed it: a snapshot or entries follow.
    ///
    /// # Errors
    /// [`ReplicationError::Fenced`] if the primary's epoch is older than one already seen.
    pub fn welcomed(
        &mut self,
        primary_epoch: u64,
        primary_last_lsn: u64,
        snapshot: bool,
    ) -> Result<(), ReplicationError> {
        if primary_epoch < self.epoch {
            return Err(ReplicationError::Fenced {
                epoch: self.epoch,
                reason: format!(
                    "the primary is at epoch {primary_epoch}, older than epoch {} seen here",
                    self.epoch
                ),
            });
        }
        self.epoch = primary_epoch;
        self.primary_last_lsn = primary_last_lsn;
        self.parts.clear();
        // Entries appended but not yet durable stay in the log: a resume may repeat them.
        self.state = if snapshot {
            LinkState::Snapshot
        } else {
            LinkState::CatchingUp
        };
        Ok(())
    }

    /// Checks a snapshot the primary begins, at `lsn` (an entry of `epoch`) of the history
    /// `lineage`, before anything of it is taken: it may replace only an empty store, or
    /// one of the same history that holds no entry past `lsn` (DESIGN §1). Either other
    /// kind would throw away entries this replica holds, which no snapshot brings back.
    ///
    /// # Errors
    /// [`ReplicationError::Diverged`] for a snapshot of another history or older than the
    /// log; [`ReplicationError::Protocol`] for one from an epoch after the primary's.
    pub fn snapshot_begins(
        &self,
        lsn: u64,
        epoch: u64,
        lineage: u64,
        own_lineage: u64,
    ) -> Result<(), ReplicationError> {
        if epoch > self.epoch {
            return Err(ReplicationError::Protocol(format!(
                "a snapshot at an entry of epoch {epoch}, after the primary's epoch {}",
                self.epoch
            )));
        }
        if self.flushed_lsn == 0 {
            return Ok(());
        }
        let reason = if lineage != own_lineage {
            format!(
                "the primary's snapshot is of another history than this store's, which holds \
                 entries up to LSN {}",
                self.flushed_lsn
            )
        } else if lsn < self.flushed_lsn {
            format!(
                "the primary's snapshot is at LSN {lsn}, before LSN {} this store holds: the \
                 primary lost entries this store has",
                self.flushed_lsn
            )
        } else {
            return Ok(());
        };
        Err(ReplicationError::Diverged {
            fork_lsn: (lineage == own_lineage).then_some(lsn + 1),
            reason,
        })
    }

    /// A snapshot at `lsn` (an entry of `epoch`) replaced the store's contents.
    pub fn installed(&mut self, lsn: u64, epoch: u64) {
        self.flushed_lsn = lsn;
        self.applied_lsn = lsn;
        self.appended_lsn = lsn;
        self.entry_epoch = epoch;
        self.epoch = self.epoch.max(epoch);
        self.state = LinkState::CatchingUp;
    }

    /// The link ended: a part-received entry is dropped (it will be sent again).
    pub fn disconnected(&mut self) {
        self.parts.clear();
        self.state = LinkState::Disconnected;
    }

    /// A message from the primary, after the handshake.
    ///
    /// # Errors
    /// A gap, an entry from an older epoch, a malformed part, a refusal, or a message that
    /// has no place in the stream: the link must be dropped (nothing of it was appended).
    pub fn receive(&mut self, message: Message) -> Result<Vec<ReplicaAction>, ReplicationError> {
        match message {
            Message::Entries {
                payloads,
                epoch,
                durable_lsn,
            } => {
                self.check_sender(epoch)?;
                let payloads = payloads.into_iter().map(serde_bytes::ByteBuf::into_vec);
                let mut actions = self.accept(payloads.collect(), durable_lsn)?;
                actions.extend(self.confirm(durable_lsn));
                Ok(actions)
            }
            Message::EntryPart {
                total,
                offset,
                data,
                lsn,
                durable_lsn,
            } => match self.part(total, offset, &data, lsn)? {
                Some(entry) => {
                    let mut actions = self.accept(vec![entry], durable_lsn)?;
                    actions.extend(self.confirm(durable_lsn));
                    Ok(actions)
                }
                None => Ok(Vec::new()),
            },
            Message::Heartbeat {
                last_lsn,
                epoch,
                members_version,
                ..
            } => {
                self.check_sender(epoch)?;
                self.primary_last_lsn = self.primary_last_lsn.max(last_lsn);
                // Its caller recorded the membership it carries before handing it over.
                self.members_version = self.members_version.max(members_version);
                self.settle();
                // An ack answers every heartbeat; one that releases entries is answered
                // once they are shown, which is what the primary waits to hear.
                Ok(vec![self.confirm(last_lsn).unwrap_or_else(|| self.ack())])
            }
            other => {
                let kind = other.type_byte();
                Err(other.refusal(self.epoch).unwrap_or_else(|| {
                    ReplicationError::Protocol(format!(
                        "unexpected message from the primary (type {kind})"
                    ))
                }))
            }
        }
    }

    /// Refuses a frame from a primary of an older epoch than one seen here: it was deposed
    /// (0 is a primary that predates the field, whose welcome was checked).
    fn check_sender(&self, epoch: u64) -> Result<(), ReplicationError> {
        if epoch != 0 && epoch < self.epoch {
            return Err(ReplicationError::Fenced {
                epoch: self.epoch,
                reason: format!(
                    "the primary is at epoch {epoch}, but epoch {} began elsewhere: it was deposed",
                    self.epoch
                ),
            });
        }
        Ok(())
    }

    /// The primary's log is durable up to `durable_lsn`: a machine that holds back lets
    /// readers see what it holds of that.
    fn confirm(&mut self, durable_lsn: u64) -> Option<ReplicaAction> {
        self.confirmed_lsn = self.confirmed_lsn.max(durable_lsn);
        if !self.holds_back {
            return None;
        }
        #[allow(unused_mut)] // planted bugs exist in test builds only
        let mut releasable = self.confirmed_lsn();
        #[cfg(test)]
        if self.planted == Planted::ReleaseHeld {
            releasable = self.appended_lsn;
        }
        (releasable > self.released_lsn).then(|| {
            self.released_lsn = releasable;
            ReplicaAction::Release(releasable)
        })
    }

    /// The primary's handshake says this replica resumes after `lsn`. Entries after both
    /// it and the confirmed LSN may have been shipped before they were durable there, and
    /// lost: the log is cut back to the later of the two (returned, if it held more),
    /// which the store must make durable before it appends again. Nothing readers were
    /// shown is cut (they see only confirmed entries), and only a machine that holds back
    /// holds entries past its confirmed LSN.
    pub fn resume_at(&mut self, lsn: u64) -> Option<u64> {
        let keep = lsn.max(self.confirmed_lsn());
        if keep >= self.appended_lsn {
            return None;
        }
        self.appended_lsn = keep;
        self.flushed_lsn = self.flushed_lsn.min(keep);
        self.applied_lsn = self.applied_lsn.min(keep);
        self.released_lsn = self.released_lsn.min(keep);
        Some(keep)
    }

    /// Entries up to `flushed_lsn` are durable in the log and visible up to `applied_lsn`
    /// (which may be ahead: a store applies before its fdatasync).
    pub fn durable(&mut self, flushed_lsn: u64, applied_lsn: u64) -> ReplicaAction {
        self.flushed_lsn = self.flushed_lsn.max(flushed_lsn.min(self.appended_lsn));
        self.applied_lsn = self.applied_lsn.max(applied_lsn.min(self.appended_lsn));
        self.settle();
        self.ack()
    }

    /// An ack that claims nothing (LSN 0): it tells the primary this replica is alive
    /// through work that acks nothing (receiving and installing a snapshot), which would
    /// otherwise pass for a stalled link, and moves nothing there (no slot, no quorum).
    #[must_use]
    pub fn keepalive() -> Message {
        Message::Ack {
            flushed_lsn: 0,
            applied_lsn: 0,
            members_version: 0,
        }
    }

    /// The disk lost what was not durable (a crash): appending resumes after the log.
    pub fn restarted(&mut self) {
        self.appended_lsn = self.flushed_lsn;
        self.applied_lsn = self.applied_lsn.min(self.flushed_lsn);
        self.released_lsn = self.released_lsn.min(self.flushed_lsn);
        self.parts.clear();
        self.state = LinkState::Connecting;
    }

    fn ack(&self) -> ReplicaAction {
        ReplicaAction::Ack {
            flushed_lsn: self.flushed_lsn,
            applied_lsn: self.applied_lsn,
            members_version: self.members_version,
        }
    }

    /// Streaming once readers see all the primary has (the replica's own fdatasync of the
    /// last entries may still run: they are durable on the primary).
    fn settle(&mut self) {
        self.primary_last_lsn = self.primary_last_lsn.max(self.appended_lsn);
        if matches!(self.state, LinkState::CatchingUp | LinkState::Streaming) {
            let caught_up = self.applied_lsn.max(self.flushed_lsn);
            self.state = if caught_up >= self.primary_last_lsn {
                LinkState::Streaming
            } else {
                LinkState::CatchingUp
            };
        }
    }

    /// Checks a batch whole before anything of it is appended: consecutive LSNs after the
    /// log (repeats of what it already holds are skipped), epochs never going back, and
    /// none past `durable_lsn` unless this machine holds back.
    fn accept(
        &mut self,
        payloads: Vec<Vec<u8>>,
        durable_lsn: u64,
    ) -> Result<Vec<ReplicaAction>, ReplicationError> {
        if !matches!(self.state, LinkState::CatchingUp | LinkState::Streaming) {
            return Err(ReplicationError::Protocol(
                "entries before the stream started".into(),
            ));
        }
        let mut next = self.appended_lsn + 1;
        let mut epoch = self.entry_epoch;
        let mut fresh = Vec::with_capacity(payloads.len());
        for payload in payloads {
            let (Some(lsn), Some(entry_epoch)) = (payload_lsn(&payload), payload_epoch(&payload))
            else {
                return Err(ReplicationError::Protocol("a truncated entry".into()));
            };
            if lsn < next && fresh.is_empty() {
                continue;
            }
            if lsn != next {
                return Err(ReplicationError::Protocol(format!(
                    "entry {lsn} arrived where {next} was expected"
                )));
            }
            if entry_epoch < epoch {
                return Err(ReplicationError::Protocol(format!(
                    "entry {lsn} is from epoch {entry_epoch}, older than the entry before it \
                     (epoch {epoch}): a log's epochs never go back"
                )));
            }
            if entry_epoch > self.epoch {
                return Err(ReplicationError::Protocol(format!(
                    "entry {lsn} is from epoch {entry_epoch}, newer than its primary's ({})",
                    self.epoch
                )));
            }
            if lsn > durable_lsn && !self.holds_back {
                return Err(ReplicationError::Protocol(format!(
                    "entry {lsn} is not durable at the primary yet (durable up to \
                     {durable_lsn}), and this replica does not hold entries back"
                )));
            }
            epoch = entry_epoch;
            next += 1;
            fresh.push(payload);
        }
        if fresh.is_empty() {
            // Only repeats of what it holds: say so, or the primary (whose sent position
            // moved past them) hears nothing until the next heartbeat.
            return Ok(vec![self.ack()]);
        }
        self.appended_lsn = next - 1;
        self.entry_epoch = epoch;
        self.primary_last_lsn = self.primary_last_lsn.max(self.appended_lsn);
        #[cfg(test)]
        if self.planted == Planted::AckBeforeFsync {
            let early = ReplicaAction::Ack {
                flushed_lsn: self.appended_lsn,
                applied_lsn: self.applied_lsn,
                members_version: self.members_version,
            };
            return Ok(vec![ReplicaAction::Append(fresh), early]);
        }
        Ok(vec![ReplicaAction::Append(fresh)])
    }

    /// Adds a part of an entry too large for one frame; returns the entry once whole.
    fn part(
        &mut self,
        total: u64,
        offset: u64,
        data: &[u8],
        lsn: u64,
    ) -> Result<Option<Vec<u8>>, ReplicationError> {
        let total = usize::try_from(total)
            .ok()
            .filter(|t| *t <= MAX_RECORD_BYTES);
        let Some(total) = total else {
            return Err(ReplicationError::Protocol(
                "an entry part claims an impossible size".into(),
            ));
        };
        // A part of another entry that happens to continue at the right offset (a repeat
        // or a reordered frame) must not be glued on: its LSN gives it away (its size too,
        // from a primary that sends no LSN).
        let another_entry =
            !self.parts.is_empty() && (total != self.parts_total || lsn != self.parts_lsn);
        if another_entry
            || offset != self.parts.len() as u64
            || self.parts.len() + data.len() > total
        {
            self.parts.clear();
            return Err(ReplicationError::Protocol(
                "entry parts out of order".into(),
            ));
        }
        self.parts_total = total;
        self.parts_lsn = lsn;
        self.parts.extend_from_slice(data);
        Ok((self.parts.len() == total).then(|| std::mem::take(&mut self.parts)))
    }
}

#[cfg(test)]
#[path = "replica_tests.rs"]
mod tests;
