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
                last_lsn, epoch, ..
            } => {
                self.check_sender(epoch)?;
                self.primary_last_lsn = self.primary_last_lsn.max(last_lsn);
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
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;

    fn entry(lsn: u64, epoch: u64) -> Vec<u8> {
        let body = crate::codec::encode_ops(&[]);
        let mut record = Vec::new();
        crate::codec::frame_record(&mut record, lsn, epoch, 0, &body, crc32c::crc32c(&body));
        record.split_off(crate::codec::RECORD_HEADER_LEN)
    }

    /// Entries of `epoch`, sent by a primary of `epoch` (the newest a test uses: 2).
    fn entries(lsns: std::ops::RangeInclusive<u64>, epoch: u64) -> Message {
        Message::Entries {
            payloads: lsns.map(|l| ByteBuf::from(entry(l, epoch))).collect(),
            epoch: 2,
            durable_lsn: u64::MAX,
        }
    }

    fn streaming() -> ReplicaMachine {
        let mut m = ReplicaMachine::new(0, 0, 1, 0);
        m.welcomed(2, 0, false).unwrap();
        m
    }

    #[test]
    fn acks_carry_only_what_is_durable() {
        let mut m = streaming();
        let actions = m.receive(entries(1..=3, 1)).unwrap();
        assert!(matches!(&actions[..], [ReplicaAction::Append(p)] if p.len() == 3));
        assert_eq!(
            m.receive(beat(3)).unwrap(),
            vec![ReplicaAction::Ack {
                flushed_lsn: 0,
                applied_lsn: 0
            }]
        );
        assert_eq!(
            m.durable(3, 3),
            ReplicaAction::Ack {
                flushed_lsn: 3,
                applied_lsn: 3
            }
        );
        assert_eq!(m.state(), LinkState::Streaming);
        // A disk that claims more than was appended is held to what was.
        m.durable(9, 9);
        assert_eq!(m.flushed_lsn(), 3);
    }

    #[test]
    fn a_gap_or_epochs_going_back_are_refused_whole_and_repeats_are_skipped() {
        let mut m = streaming();
        m.receive(entries(1..=2, 1)).unwrap();
        assert!(m.receive(entries(4..=5, 1)).is_err(), "a gap");
        assert!(
            matches!(
                m.receive(entries(3..=3, 0)),
                Err(ReplicationError::Protocol(_))
            ),
            "an entry of an older epoch than the one before it"
        );
        assert!(
            matches!(
                m.receive(entries(3..=3, 3)),
                Err(ReplicationError::Protocol(_))
            ),
            "an entry of a newer epoch than its primary's"
        );
        m.durable(2, 2);
        assert_eq!(
            m.receive(entries(1..=2, 1)).unwrap(),
            vec![ReplicaAction::Ack {
                flushed_lsn: 2,
                applied_lsn: 2
            }],
            "a batch of repeats only is acknowledged at once"
        );
        let actions = m.receive(entries(1..=4, 2)).unwrap();
        let [ReplicaAction::Append(fresh)] = &actions[..] else {
            panic!("{actions:?}")
        };
        let lsns: Vec<_> = fresh.iter().map(|p| payload_lsn(p).unwrap()).collect();
        assert_eq!(lsns, vec![3, 4], "1 and 2 are held already");
    }

    #[test]
    fn a_crash_forgets_what_was_not_durable_and_a_resume_repeats_it() {
        let mut m = streaming();
        m.receive(entries(1..=4, 1)).unwrap();
        m.durable(2, 2);
        m.restarted();
        m.welcomed(2, 4, false).unwrap();
        let actions = m.receive(entries(3..=4, 1)).unwrap();
        assert!(matches!(&actions[..], [ReplicaAction::Append(p)] if p.len() == 2));
    }

    #[test]
    fn a_deposed_primary_is_fenced_at_the_welcome() {
        let mut m = ReplicaMachine::new(5, 5, 3, 2);
        assert!(matches!(
            m.welcomed(2, 9, false),
            Err(ReplicationError::Fenced { epoch: 3, .. })
        ));
    }

    #[test]
    fn frames_from_a_primary_of_an_older_epoch_are_fenced() {
        // A replica that has seen epoch 3 (welcomed by a newer primary before), handed
        // frames that a primary of epoch 2 sends.
        let mut m = ReplicaMachine::new(0, 0, 3, 0);
        m.welcomed(3, 0, false).unwrap();
        let old = Message::Entries {
            payloads: vec![ByteBuf::from(entry(1, 2))],
            epoch: 2,
            durable_lsn: u64::MAX,
        };
        assert!(matches!(
            m.receive(old),
            Err(ReplicationError::Fenced { epoch: 3, .. })
        ));
        assert!(matches!(
            m.receive(beat(1)),
            Err(ReplicationError::Fenced { epoch: 3, .. })
        ));
        assert_eq!(m.flushed_lsn(), 0, "nothing of it was taken");
        // A new primary of epoch 3 ships the old epoch's entries, then its own.
        let mut m = ReplicaMachine::new(0, 0, 3, 0);
        m.welcomed(3, 2, false).unwrap();
        let catch_up = Message::Entries {
            payloads: vec![ByteBuf::from(entry(1, 2)), ByteBuf::from(entry(2, 3))],
            epoch: 3,
            durable_lsn: u64::MAX,
        };
        assert!(
            matches!(&m.receive(catch_up).unwrap()[..], [ReplicaAction::Append(p)] if p.len() == 2)
        );
    }

    /// Found by the simulator (seed 13453 of the first version): the head of entry 160,
    /// then the tail of an earlier, larger entry repeated late at the same offset, were
    /// glued into one "entry 160" and appended.
    #[test]
    fn a_part_of_another_entry_is_never_glued_onto_the_one_in_progress() {
        let mut m = streaming();
        let (first, other) = (entry(1, 1), entry(7, 1));
        let mut longer = other.clone();
        longer.extend_from_slice(&[0; 14]);
        let head = Message::EntryPart {
            total: first.len() as u64,
            offset: 0,
            data: ByteBuf::from(first[..20].to_vec()),
            lsn: 0,
            durable_lsn: u64::MAX,
        };
        let tail_of_another = Message::EntryPart {
            total: longer.len() as u64,
            offset: 20,
            data: ByteBuf::from(longer[20..].to_vec()),
            lsn: 0,
            durable_lsn: u64::MAX,
        };
        assert!(m.receive(head).unwrap().is_empty());
        assert!(
            m.receive(tail_of_another).is_err(),
            "refused, never appended"
        );
    }

    /// With the LSN on every part, even a slice of an entry of the very same size is told
    /// apart (the size alone cannot).
    #[test]
    fn a_part_of_an_equal_size_entry_is_refused_by_its_lsn() {
        let mut m = streaming();
        let (first, second) = (entry(1, 1), entry(2, 1));
        assert_eq!(first.len(), second.len());
        let part = |payload: &[u8], lsn: u64, from: usize, to: usize| Message::EntryPart {
            total: payload.len() as u64,
            offset: from as u64,
            data: ByteBuf::from(payload[from..to].to_vec()),
            lsn,
            durable_lsn: u64::MAX,
        };
        assert!(m.receive(part(&first, 1, 0, 20)).unwrap().is_empty());
        assert!(m.receive(part(&second, 2, 20, second.len())).is_err());
        let mut m = streaming();
        assert!(m.receive(part(&first, 1, 0, 20)).unwrap().is_empty());
        assert_eq!(
            m.receive(part(&first, 1, 20, first.len())).unwrap(),
            vec![ReplicaAction::Append(vec![first.clone()])]
        );
    }

    #[test]
    fn parts_reassemble_in_order_and_refuse_anything_else() {
        let whole = entry(1, 1);
        let (a, b) = whole.split_at(10);
        let total = whole.len() as u64;
        let mut m = streaming();
        let part = |offset: usize, data: &[u8]| Message::EntryPart {
            total,
            offset: offset as u64,
            data: ByteBuf::from(data.to_vec()),
            lsn: 1,
            durable_lsn: u64::MAX,
        };
        assert!(m.receive(part(0, a)).unwrap().is_empty());
        assert_eq!(
            m.receive(part(10, b)).unwrap(),
            vec![ReplicaAction::Append(vec![whole.clone()])]
        );
        let mut m = streaming();
        assert!(m.receive(part(10, b)).is_err(), "a gap");
        let impossible = Message::EntryPart {
            total: u64::MAX,
            offset: 0,
            data: ByteBuf::from(vec![1]),
            lsn: 1,
            durable_lsn: u64::MAX,
        };
        assert!(streaming().receive(impossible).is_err());
    }

    fn holding() -> ReplicaMachine {
        let mut m = ReplicaMachine::new(0, 0, 1, 0).holding_back(0);
        m.welcomed(2, 0, false).unwrap();
        m
    }

    fn confirmed_by(durable_lsn: u64, lsns: std::ops::RangeInclusive<u64>) -> Message {
        Message::Entries {
            payloads: lsns.map(|l| ByteBuf::from(entry(l, 1))).collect(),
            epoch: 2,
            durable_lsn,
        }
    }

    fn beat(last_lsn: u64) -> Message {
        Message::Heartbeat {
            last_lsn,
            oldest_missing_ms: 0,
            now_ms: 0,
            epoch: 2,
            quorum: 0,
            members: 0,
            peers: Vec::new(),
            settings: None,
        }
    }

    #[test]
    fn a_replica_that_holds_back_shows_entries_only_once_the_primary_says_they_are_durable() {
        let mut m = holding();
        let actions = m.receive(confirmed_by(1, 1..=3)).unwrap();
        assert!(
            matches!(&actions[..], [ReplicaAction::Append(p), ReplicaAction::Release(1)] if p.len() == 3),
            "{actions:?}"
        );
        m.durable(3, 1);
        assert_eq!(
            (m.flushed_lsn(), m.applied_lsn()),
            (3, 1),
            "acked as durable here, shown only as far as it is there"
        );
        assert_eq!(
            m.receive(beat(3)).unwrap(),
            vec![ReplicaAction::Release(3)],
            "acked once shown, not before"
        );
        assert_eq!(
            m.durable(3, 3),
            ReplicaAction::Ack {
                flushed_lsn: 3,
                applied_lsn: 3
            }
        );
        assert_eq!(m.confirmed_lsn(), 3);
        // A primary durable past what it holds releases only what it holds.
        m.receive(beat(9)).unwrap();
        let actions = m.receive(confirmed_by(9, 4..=4)).unwrap();
        assert!(
            matches!(
                &actions[..],
                [ReplicaAction::Append(_), ReplicaAction::Release(4)]
            ),
            "{actions:?}"
        );
    }

    #[test]
    fn a_replica_that_does_not_hold_back_refuses_entries_not_durable_at_the_primary() {
        let mut m = streaming();
        assert!(matches!(
            m.receive(confirmed_by(1, 1..=2)),
            Err(ReplicationError::Protocol(_))
        ));
        assert_eq!(m.flushed_lsn(), 0, "nothing of the batch was taken");
        let actions = m.receive(confirmed_by(2, 1..=2)).unwrap();
        assert!(
            matches!(&actions[..], [ReplicaAction::Append(_)]),
            "{actions:?}"
        );
    }

    #[test]
    fn a_handshake_cuts_only_what_the_primary_never_confirmed() {
        let mut m = holding();
        m.receive(confirmed_by(2, 1..=5)).unwrap();
        m.durable(5, 2);
        m.disconnected();
        m.welcomed(2, 3, false).unwrap();
        // The primary lost 4 and 5 (its log matches up to 3): they are cut.
        assert_eq!(m.resume_at(3), Some(3));
        assert_eq!((m.flushed_lsn(), m.applied_lsn()), (3, 2));
        // A resume point below the confirmed LSN never cuts what readers may have seen.
        let mut m = holding();
        m.receive(confirmed_by(4, 1..=5)).unwrap();
        assert_eq!(m.resume_at(1), Some(4));
        assert_eq!(m.resume_at(4), None, "nothing past it any more");
        // A machine that does not hold back holds nothing unconfirmed.
        let mut m = streaming();
        m.receive(entries(1..=3, 1)).unwrap();
        assert_eq!(m.resume_at(1), None);
    }

    #[test]
    fn a_restarted_store_shows_what_it_kept_as_confirmed_and_holds_the_rest() {
        let mut m = ReplicaMachine::new(5, 3, 1, 1).holding_back(3);
        assert_eq!((m.applied_lsn(), m.confirmed_lsn()), (3, 3));
        m.welcomed(1, 5, false).unwrap();
        assert_eq!(m.receive(beat(5)).unwrap()[0], ReplicaAction::Release(5));
    }

    /// A snapshot may replace only an empty store, or one of the same history holding no
    /// entry past the snapshot: any other would throw away entries. An empty store takes
    /// any history; no snapshot may come from an epoch after its primary's.
    #[test]
    fn a_snapshot_of_another_history_or_older_than_the_log_is_refused_as_diverged() {
        let mut machine = ReplicaMachine::new(10, 10, 1, 1);
        machine.welcomed(2, 30, true).unwrap();
        machine.snapshot_begins(10, 1, 7, 7).unwrap();
        machine.snapshot_begins(25, 2, 7, 7).unwrap();
        for (lsn, lineage) in [(25, 8), (9, 7), (3, 8)] {
            let err = machine.snapshot_begins(lsn, 1, lineage, 7).unwrap_err();
            assert!(
                matches!(err, ReplicationError::Diverged { .. }),
                "at {lsn} of {lineage}: {err}"
            );
        }
        let err = machine.snapshot_begins(25, 3, 7, 7).unwrap_err();
        assert!(matches!(err, ReplicationError::Protocol(_)), "{err}");
        let mut empty = ReplicaMachine::new(0, 0, 1, 0);
        empty.welcomed(2, 30, true).unwrap();
        empty.snapshot_begins(3, 2, 8, 7).unwrap();
    }
}
