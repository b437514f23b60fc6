//! The promises checked after every step (DESIGN §3, promises 3 and 6), and what the
//! checks remember between steps.

use std::collections::BTreeMap;
use std::fmt;

use super::member::Member;
use super::world::World;

/// A promise as this simulator checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invariant {
    /// A sync write acknowledged by a primary of any epoch is in the log of every primary
    /// of a later epoch once it has begun (unless a promotion in between was forced).
    NoAckedWriteLost,
    /// At most one member, as primary of an epoch, ever gets a sync write acknowledged in
    /// that epoch.
    OnePrimaryPerEpoch,
    /// No member appends entries on top of a log that forked from the sender's: every
    /// entry follows, hash-chained, the entry before it in the log it was written to.
    NoSilentMerge,
    /// A member's epoch history names the epoch of every entry of its log.
    HistoryMatchesLog,
    /// The highest epoch a member has seen never goes down.
    EpochsNeverGoDown,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invariant::NoAckedWriteLost => "no acknowledged sync write is lost",
            Invariant::OnePrimaryPerEpoch => "at most one primary per epoch acknowledges",
            Invariant::NoSilentMerge => "no diverged log is merged silently",
            Invariant::HistoryMatchesLog => "the epoch history matches the log",
            Invariant::EpochsNeverGoDown => "epochs seen never go down",
        })
    }
}

/// An invariant that failed, and what was seen.
pub(super) type Violation = super::super::report::Violation<Invariant>;

/// A sync write acknowledged to its writer.
#[derive(Debug, Clone, Copy)]
struct Acked {
    epoch: u64,
    lsn: u64,
    write: u64,
}

/// An epoch a promotion began.
#[derive(Debug, Clone, Copy)]
struct Began {
    member: usize,
    epoch: u64,
    forced: bool,
}

/// What the checks remember between steps.
#[derive(Debug)]
pub(super) struct Shadow {
    /// Each member's highest epoch seen at the last check.
    seen: Vec<u64>,
    /// How many entries of each member's log are checked.
    checked: Vec<usize>,
    acked: Vec<Acked>,
    began: Vec<Began>,
    /// The member that got a sync write acknowledged in each epoch.
    acked_by: BTreeMap<u64, usize>,
}

impl Shadow {
    pub fn new(members: &[Member]) -> Self {
        Self {
            seen: members.iter().map(|m| m.seen).collect(),
            checked: vec![0; members.len()],
            acked: Vec::new(),
            began: Vec::new(),
            acked_by: BTreeMap::new(),
        }
    }
}

impl World {
    /// Primary `member` of `epoch` acknowledges the sync write `write` at `lsn`.
    pub(super) fn sync_acked(
        &mut self,
        member: usize,
        epoch: u64,
        lsn: u64,
        write: u64,
    ) -> Result<(), Violation> {
        self.report.sync_acked += 1;
        let first = *self.shadow.acked_by.entry(epoch).or_insert(member);
        if first != member {
            return Err(Violation {
                invariant: Invariant::OnePrimaryPerEpoch,
                detail: format!(
                    "{} acknowledged write {write} at LSN {lsn} in epoch {epoch}, whose \
                     primary {} acknowledged writes too",
                    self.members[member].name, self.members[first].name
                ),
            });
        }
        let acked = Acked { epoch, lsn, write };
        self.shadow.acked.push(acked);
        for began in self.shadow.began.clone() {
            self.kept(acked, began)?;
        }
        Ok(())
    }

    /// `member` began `epoch` (`forced`: past the rule).
    pub(super) fn began(
        &mut self,
        member: usize,
        epoch: u64,
        forced: bool,
    ) -> Result<(), Violation> {
        let began = Began {
            member,
            epoch,
            forced,
        };
        self.shadow.began.push(began);
        let (step, now) = (self.report.steps, self.sim.timeline.now());
        self.trace.began(step, now, member, epoch);
        for acked in self.shadow.acked.clone() {
            self.kept(acked, began)?;
        }
        Ok(())
    }

    /// Whether the primary that `began` holds the write `acked` it must hold. A forced
    /// promotion between the two excuses a loss; one forced by that primary is counted.
    fn kept(&mut self, acked: Acked, began: Began) -> Result<(), Violation> {
        if began.epoch <= acked.epoch {
            return Ok(());
        }
        let primary = &self.members[began.member];
        let held = primary.log.get(acked.lsn as usize - 1).map(|e| e.write);
        if held == Some(acked.write) {
            return Ok(());
        }
        let excused = self
            .shadow
            .began
            .iter()
            .any(|b| b.forced && acked.epoch < b.epoch && b.epoch <= began.epoch);
        if excused {
            if began.forced {
                self.report.forced_losses += 1;
            }
            return Ok(());
        }
        Err(Violation {
            invariant: Invariant::NoAckedWriteLost,
            detail: format!(
                "write {} acknowledged at LSN {} in epoch {} is not in the log of {}, \
                 primary of epoch {} (it holds {held:?} there, log ends at {}, history {:?})",
                acked.write,
                acked.lsn,
                acked.epoch,
                primary.name,
                began.epoch,
                primary.last_lsn(),
                primary.history.pairs()
            ),
        })
    }

    /// The invariants over every member's state: epochs seen never go down, and each
    /// entry appended since the last check follows the one before it and has the epoch
    /// its history names.
    pub(super) fn check(&mut self) -> Result<(), Violation> {
        for (index, member) in self.members.iter().enumerate() {
            if member.seen < self.shadow.seen[index] {
                return Err(Violation {
                    invariant: Invariant::EpochsNeverGoDown,
                    detail: format!(
                        "{} had seen epoch {} and now says {}",
                        member.name, self.shadow.seen[index], member.seen
                    ),
                });
            }
            self.shadow.seen[index] = member.seen;
            let checked = self.shadow.checked[index];
            if member.log.len() < checked {
                return Err(merge(member, checked, "its log lost entries"));
            }
            for position in checked..member.log.len() {
                let entry = member.log[position];
                let parent = position.checked_sub(1).map_or(0, |p| member.log[p].chain);
                if entry.lsn != position as u64 + 1 || entry.parent != parent {
                    return Err(merge(member, position, "appended after another log"));
                }
            }
            for entry in &member.log[checked.saturating_sub(1)..] {
                if member.history.epoch_at(entry.lsn) != entry.epoch {
                    return Err(Violation {
                        invariant: Invariant::HistoryMatchesLog,
                        detail: format!(
                            "{}'s entry {} is of epoch {}, its history {:?} says {}",
                            member.name,
                            entry.lsn,
                            entry.epoch,
                            member.history.pairs(),
                            member.history.epoch_at(entry.lsn)
                        ),
                    });
                }
            }
            self.shadow.checked[index] = member.log.len();
        }
        Ok(())
    }
}

fn merge(member: &Member, position: usize, what: &str) -> Violation {
    let around: Vec<_> = member
        .log
        .iter()
        .skip(position.saturating_sub(2))
        .take(4)
        .map(|e| (e.lsn, e.epoch, e.write))
        .collect();
    Violation {
        invariant: Invariant::NoSilentMerge,
        detail: format!(
            "{}: {what} at LSN {} (lsn, epoch, write around it: {around:?}; history {:?})",
            member.name,
            position + 1,
            member.history.pairs()
        ),
    }
}
