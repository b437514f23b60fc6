//! A member: its durable log, epoch history and highest epoch seen, and what it does as a
//! follower: grant a candidate's epoch (the real `grants`), and take a primary's stream
//! only if its epoch is not older than any it has seen and their logs do not fork (the
//! real `fork_lsn`).

use super::super::disk::chain;
use super::candidate::Candidacy;
use super::primary::Leading;
use crate::replication::machine::promotion::{grants, Answer, MemberLog, View};
use crate::store::{fork_lsn, EpochHistory};

/// One entry of a log: where it is, whose epoch wrote it, which write it carries, and a
/// hash chained over every entry before it, so that two logs with equal hashes at one LSN
/// hold the same entries up to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub lsn: u64,
    pub epoch: u64,
    pub write: u64,
    /// The chain hash of the entry before it in the log it was written to.
    pub parent: u64,
    pub chain: u64,
}

impl Entry {
    /// The entry a primary of `epoch` appends after `previous` for `write`.
    pub fn after(previous: Option<&Entry>, epoch: u64, write: u64) -> Self {
        let parent = previous.map_or(0, |e| e.chain);
        let lsn = previous.map_or(1, |e| e.lsn + 1);
        let mut bytes = [0u8; 24];
        for (slot, value) in bytes.chunks_exact_mut(8).zip([lsn, epoch, write]) {
            slot.copy_from_slice(&value.to_le_bytes());
        }
        Self {
            lsn,
            epoch,
            write,
            parent,
            chain: chain(parent, &bytes),
        }
    }
}

/// A primary's stream as one message: its epoch, where its log stands, and entries.
#[derive(Debug, Clone)]
pub(super) struct Ship {
    pub epoch: u64,
    pub history: EpochHistory,
    pub last_lsn: u64,
    pub entries: Vec<Entry>,
}

/// A member's answer to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ShipReply {
    /// It has seen `seen`, newer than the stream's epoch (or it leads that epoch itself).
    Fenced { seen: u64 },
    /// Its log forks from the primary's at `fork_lsn`: it appended nothing.
    Diverged { fork_lsn: u64 },
    /// Its log, a prefix of the primary's, durably ends at `flushed_lsn`.
    Ack { flushed_lsn: u64 },
}

/// What a member is doing besides holding its log (lost in a crash).
#[derive(Debug, Clone)]
pub(super) enum Role {
    Follower,
    Candidate(Box<Candidacy>),
    Primary(Leading),
}

/// One member of the cluster.
#[derive(Debug, Clone)]
pub(super) struct Member {
    pub name: String,
    /// Durable: the log.
    pub log: Vec<Entry>,
    /// Durable: the epochs the log went through.
    pub history: EpochHistory,
    /// Durable: the highest epoch seen.
    pub seen: u64,
    pub up: bool,
    /// Rises at every crash, so that timers of an earlier life are ignored.
    pub incarnation: u64,
    pub role: Role,
}

impl Member {
    pub fn new(index: usize) -> Self {
        Self {
            name: format!("m{index}"),
            log: Vec::new(),
            history: EpochHistory::default(),
            seen: 1,
            up: true,
            incarnation: 0,
            role: Role::Follower,
        }
    }

    pub fn last_lsn(&self) -> u64 {
        self.log.len() as u64
    }

    /// Its log as it reports it to a candidate.
    pub fn report(&self) -> MemberLog {
        MemberLog {
            name: self.name.clone(),
            flushed_lsn: self.last_lsn(),
            history: self.history.clone(),
            counted: true,
            // Its membership never changes: the candidate's rule is the only one.
            view: View::default(),
            store_id: 0,
        }
    }

    /// The epoch it leads, while it is a primary.
    pub fn leads(&self) -> Option<u64> {
        match &self.role {
            Role::Primary(leading) => Some(leading.epoch),
            _ => None,
        }
    }

    /// Durably records that `epoch` exists. A primary or candidate of an older epoch
    /// steps down; returns whether a primary was deposed.
    pub fn hear(&mut self, epoch: u64) -> bool {
        self.seen = self.seen.max(epoch);
        let stale = match &self.role {
            Role::Primary(leading) => Some((true, leading.epoch)),
            Role::Candidate(candidacy) => Some((false, candidacy.epoch)),
            Role::Follower => None,
        };
        match stale {
            Some((was_primary, own)) if own < self.seen => {
                self.role = Role::Follower;
                was_primary
            }
            _ => false,
        }
    }

    /// Its answer to a candidate asking for `epoch`, raised durably before it answers.
    pub fn grant(&mut self, epoch: u64, grant_equal: bool) -> Answer {
        let granted = grants(self.seen, epoch) || (grant_equal && epoch == self.seen);
        if !granted {
            return Answer::Refused { seen: self.seen };
        }
        self.hear(epoch);
        Answer::Granted(self.report())
    }

    /// Takes a primary's stream: fenced if older than what it has seen (or if it leads
    /// that epoch itself), diverged if their logs fork, else appended after its log.
    pub fn follow(&mut self, ship: &Ship, skip_fork_check: bool) -> ShipReply {
        self.hear(ship.epoch);
        if ship.epoch < self.seen || self.leads().is_some() {
            return ShipReply::Fenced { seen: self.seen };
        }
        if !skip_fork_check {
            let fork = fork_lsn(&ship.history, ship.last_lsn, &self.history, self.last_lsn());
            if let Some(fork_lsn) = fork {
                return ShipReply::Diverged { fork_lsn };
            }
        }
        // A candidate that hears a primary of its own epoch has nothing left to win.
        self.role = Role::Follower;
        for entry in &ship.entries {
            if entry.lsn == self.last_lsn() + 1 && !self.append(*entry) {
                return ShipReply::Diverged {
                    fork_lsn: entry.lsn,
                };
            }
        }
        ShipReply::Ack {
            flushed_lsn: self.last_lsn(),
        }
    }

    /// Appends an entry taken from another log, a newer epoch recorded in the history
    /// first. As the store's `append_replicated`, it refuses an entry older than the last
    /// epoch of its history (one it began may hold no entry yet): returns false then.
    pub fn append(&mut self, entry: Entry) -> bool {
        let own = self.history.last_epoch();
        if entry.epoch < own {
            return false;
        }
        if entry.epoch > own {
            self.history.begin(entry.epoch, entry.lsn);
        }
        self.log.push(entry);
        true
    }

    /// Loses everything but the durable state.
    pub fn crash(&mut self) {
        self.up = false;
        self.incarnation += 1;
        self.role = Role::Follower;
    }
}
