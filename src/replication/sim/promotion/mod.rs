//! A deterministic simulation of promotion and fencing (DESIGN §1; promises 3, 4 and 6):
//! members with durable logs, epoch histories and "highest epoch seen", a primary of
//! epoch 1 issuing sync and async writes, then a primary that crashes or is cut off while
//! it keeps writing (split brain), and one or two candidates promoting themselves
//! concurrently, crashing at every step of it, over a network that delays, loses and cuts.
//!
//! The model is at the level of logs and epochs, but every decision is the real one: a
//! member grants with [`grants`](crate::replication::machine::promotion::grants), a
//! candidate counts with [`Election`](crate::replication::machine::promotion::Election),
//! logs carry real [`EpochHistory`](crate::store::EpochHistory) values, and a member
//! checks a primary's stream with the real [`fork_lsn`](crate::store::fork_lsn) and
//! reports itself diverged instead of appending.
//!
//! Every source of change is drawn from one seed, so a failing seed replays exactly; the
//! invariants ([`Invariant`]) are checked after every step.
//!
//! ```
//! use replikv::replication::sim::promotion::{Config, Simulation};
//!
//! let report = Simulation::run(7, &Config::default()).expect("seed 7 keeps every promise");
//! assert_eq!(report, Simulation::run(7, &Config::default()).unwrap());
//! ```

mod candidate;
mod invariants;
mod member;
mod network;
mod primary;
mod trace;
mod world;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use invariants::Invariant;

use crate::replication::machine::Micros;

/// The shape of a simulated cluster and how long it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Members, the first the primary of epoch 1. Each fsyncs and counts toward the
    /// quorum, the primary included (DESIGN's n replicas and quorum q are `members - 1`
    /// and `quorum - 1` here, which leaves `members - quorum + 1` unchanged).
    pub members: usize,
    /// Members that must durably hold a sync write before it is acknowledged
    /// (1..=`members`).
    pub quorum: usize,
    /// Members that start a promotion once the primary fails: 1, or 2 at once.
    pub candidates: usize,
    /// Whether the candidate forces its promotion once it stops waiting: acknowledged
    /// writes may then be lost (and are counted, not flagged). Only with one candidate:
    /// two forced promotions can both win one epoch, and no rule could stop them.
    pub force: bool,
    /// How long a run lasts, in simulated microseconds: writers write and faults strike
    /// until its end.
    pub run_for: Micros,
    /// Rules broken on purpose, to prove the simulator catches each.
    #[cfg(test)]
    pub(crate) planted: Planted,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            members: 3,
            quorum: 2,
            candidates: 2,
            force: false,
            run_for: 60_000,
            #[cfg(test)]
            planted: Planted::default(),
        }
    }
}

impl Config {
    /// The command that replays `seed` of this configuration.
    #[must_use]
    pub fn replay_command(&self, seed: u64) -> String {
        super::cli::replay_command(
            "simulate_promotion",
            seed,
            &[
                ("members", self.members as u64),
                ("quorum", self.quorum as u64),
                ("candidates", self.candidates as u64),
                ("force", u64::from(self.force)),
            ],
        )
    }
}

/// Rules broken on purpose, to show that the simulator catches each (only tests can
/// plant them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // independent switches, one per planted bug
pub(crate) struct Planted {
    /// A member grants an epoch equal to the newest it has seen.
    pub grant_equal: bool,
    /// A candidate counts against one grant fewer than `needed` says.
    pub one_grant_short: bool,
    /// A member appends a primary's entries without checking where their logs fork.
    pub skip_fork_check: bool,
    /// A member keeps its highest epoch seen only in memory: a crash takes it back to
    /// the last epoch of its history.
    pub volatile_seen: bool,
}

/// Where a member crashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CrashPoint {
    /// The first primary fails by crashing.
    PrimaryFails,
    /// A fault struck a member at a random moment.
    Random,
    /// A candidate, before it durably raised its own epoch.
    BeforeOwnEpoch,
    /// A candidate, after it durably raised its own epoch, before asking anyone.
    AfterOwnEpoch,
    /// A candidate, having asked some members but not all.
    WhileAsking,
    /// A member asked for an epoch, before raising it durably.
    BeforeGrant,
    /// A member asked for an epoch, after raising it durably, before answering.
    AfterGrant,
    /// A candidate that won, before fetching what it lacks.
    AfterWinning,
    /// A candidate, part of the fetched entries appended.
    MidFetch,
    /// A candidate holding the adopted log, before its epoch is durable in its history.
    BeforeBegin,
    /// A new primary, just after its epoch became durable in its history.
    AfterBegin,
}

impl CrashPoint {
    /// Every point, in order.
    pub const ALL: [CrashPoint; 11] = [
        CrashPoint::PrimaryFails,
        CrashPoint::Random,
        CrashPoint::BeforeOwnEpoch,
        CrashPoint::AfterOwnEpoch,
        CrashPoint::WhileAsking,
        CrashPoint::BeforeGrant,
        CrashPoint::AfterGrant,
        CrashPoint::AfterWinning,
        CrashPoint::MidFetch,
        CrashPoint::BeforeBegin,
        CrashPoint::AfterBegin,
    ];
}

/// What a run that kept every promise did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The seed it ran from.
    pub seed: u64,
    /// Events processed.
    pub steps: u64,
    /// Writes appended by a primary (of any epoch).
    pub writes: u64,
    /// Sync writes acknowledged to their writers.
    pub sync_acked: u64,
    /// Epochs begun by a promotion.
    pub promotions: u64,
    /// Promotions lost to a newer or equal epoch.
    pub outbid: u64,
    /// Promotions lost for too few grants.
    pub too_few: u64,
    /// Promotions lost because a newer log forked from the candidate's.
    pub forked: u64,
    /// Primaries deposed on hearing of a newer epoch.
    pub deposed: u64,
    /// Streams a member refused as diverged (`fork_lsn` found a fork).
    pub diverged: u64,
    /// Streams a member refused as fenced (an older epoch than it has seen).
    pub fenced: u64,
    /// Members that crashed, by where.
    pub crashes: BTreeMap<CrashPoint, u64>,
    /// Members cut off from the others for a while.
    pub partitions: u64,
    /// Whether the first primary was cut off and kept running (else it crashed).
    pub split_brain: bool,
    /// Acknowledged sync writes missing from a forced primary's log: the loss `force`
    /// reports, which the no-loss invariant does not count.
    pub forced_losses: u64,
    /// A hash of every step and its outcome: equal for equal seeds.
    pub trace_hash: u64,
}

/// A broken promise of this simulator: the seed and step that replay it, the last steps
/// before it, and the command that replays it.
pub type Failure = super::report::Failure<Invariant>;

/// Runs seeded simulations of promotion.
#[derive(Debug, Clone, Copy)]
pub struct Simulation;

impl Simulation {
    /// Runs the cluster of `config` from `seed` for `config.run_for`.
    ///
    /// # Errors
    /// The first invariant that failed, with the seed and step that replay it.
    ///
    /// # Panics
    /// If the quorum is not in `1..=members`, `candidates` is not 1 or 2 (or not 1 with
    /// `force`), or there are fewer than 2 members.
    pub fn run(seed: u64, config: &Config) -> Result<Report, Failure> {
        assert!(config.members >= 2, "a promotion needs a member to promote");
        assert!(
            (1..=config.members).contains(&config.quorum),
            "the quorum must be between 1 and the number of members"
        );
        assert!(
            (1..=2).contains(&config.candidates) && config.candidates < config.members,
            "one or two candidates, besides the first primary"
        );
        assert!(
            !config.force || config.candidates == 1,
            "force is an operator's override for one candidate"
        );
        world::World::new(seed, config.clone()).run()
    }
}
