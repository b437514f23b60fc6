//! A deterministic simulation of replication, in the manner of `FoundationDB` and
//! `TigerBeetle`'s VOPR: a primary, replicas, replicas that do not fsync and consumers, driven
//! through the real state machines ([`PrimaryMachine`](super::machine::PrimaryMachine),
//! [`ReplicaMachine`](super::machine::ReplicaMachine)) over a simulated network, clock and
//! disk, with writers issuing sync and async writes while connections are cut, peers are
//! partitioned and crash, and frames are duplicated or reordered. Some replicas hold entries
//! back from their readers, so the primary ships them entries before its own fsync ends;
//! the primary loses power now and then, losing what it had not fsynced, and restarts.
//!
//! Every source of change is drawn from one seed, so a run is a pure function of it: a
//! failing seed replays exactly. After every step the invariants of DESIGN §3 (promises 3
//! and 5) are checked; a run without a lost primary must also end with every peer caught
//! up within a bounded simulated time after the faults stop.
//!
//! ```
//! use replikv::replication::sim::{Config, Simulation};
//!
//! let report = Simulation::run(42, &Config::default()).expect("seed 42 keeps every promise");
//! assert_eq!(report, Simulation::run(42, &Config::default()).unwrap());
//! ```

pub mod cli;
mod clock;
mod disk;
mod faults;
mod invariants;
mod network;
mod peer;
mod primary;
pub mod promotion;
mod report;
mod seeded;
mod trace;
mod world;

#[cfg(test)]
mod seeds;
#[cfg(test)]
mod tests;

pub use clock::{SimRng, Timeline};
pub use disk::SimDisk;
pub use invariants::Invariant;

use crate::replication::machine::Micros;
#[cfg(test)]
use crate::replication::machine::Planted;

/// The shape of a simulated deployment and how long it is shaken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Replicas that fsync (the only ones that count toward the quorum).
    pub replicas: usize,
    /// Replicas with `fsync=False`: they ack what their page cache holds.
    pub lazy_replicas: usize,
    /// Consumers (cache nodes, readers of changes): they ack and never count.
    pub consumers: usize,
    /// Counting replicas that must hold a sync write before it returns (1..=`replicas`).
    pub quorum: usize,
    /// How long writers write and faults strike, in simulated microseconds.
    pub run_for: Micros,
    /// How long after the faults stop every peer has to catch up.
    pub catch_up_within: Micros,
    /// Bugs planted on purpose, to prove the simulator catches them.
    #[cfg(test)]
    pub(crate) planted: Planted,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            replicas: 3,
            lazy_replicas: 1,
            consumers: 1,
            quorum: 2,
            run_for: 150_000,
            catch_up_within: 2_000_000,
            #[cfg(test)]
            planted: Planted::default(),
        }
    }
}

impl Config {
    /// The command that replays `seed` of this configuration.
    #[must_use]
    pub fn replay_command(&self, seed: u64) -> String {
        cli::replay_command(
            "simulate",
            seed,
            &[
                ("replicas", self.replicas as u64),
                ("quorum", self.quorum as u64),
                ("lazy", self.lazy_replicas as u64),
                ("consumers", self.consumers as u64),
            ],
        )
    }
}

/// What a run that kept every promise did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The seed it ran from.
    pub seed: u64,
    /// Events processed.
    pub steps: u64,
    /// Simulated time at the end, in microseconds.
    pub ended_at: Micros,
    /// Writes committed on the primary.
    pub writes: u64,
    /// Sync writes returned to their writers.
    pub sync_returned: u64,
    /// Whether the run ended with the primary lost (promise 3 was then checked on the
    /// replicas' durable logs).
    pub primary_lost: bool,
    /// The faults injected.
    pub faults: FaultCounts,
    /// A hash of every step and its outcome: equal for equal seeds.
    pub trace_hash: u64,
}

/// How many faults of each kind a run injected or met.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Connections cut.
    pub cuts: u64,
    /// Peers partitioned from the primary for a while.
    pub partitions: u64,
    /// Peers that crashed and lost their page cache.
    pub crashes: u64,
    /// Frames of an old connection that arrived after it was replaced or closed.
    pub stale_frames: u64,
    /// Of those, acks handed to the primary's machine under the closed link's id.
    pub stale_acks: u64,
    /// Entry frames duplicated or reordered within one connection.
    pub misordered: u64,
    /// Links a peer dropped because a frame was refused.
    pub refused: u64,
    /// Links the primary dropped (stalled or replaced).
    pub dropped: u64,
    /// Power losses of the primary, which lost what it had not fsynced and restarted.
    pub primary_crashes: u64,
    /// Handshakes that cut a replica's log back to where it matches the primary's: the
    /// entries it held back were lost with the primary's page cache.
    pub held_cut: u64,
}

/// A broken promise of this simulator: the seed and step that replay it, the last steps
/// before it, and the command that replays it.
pub type Failure = report::Failure<Invariant>;

/// Runs seeded simulations.
#[derive(Debug, Clone, Copy)]
pub struct Simulation;

impl Simulation {
    /// Runs the world of `config` from `seed` until the primary is lost or every peer
    /// caught up after the faults stopped.
    ///
    /// # Errors
    /// The first invariant that failed, with the seed and step that replay it.
    ///
    /// # Panics
    /// If `config.quorum` is not in `1..=config.replicas` (no run could satisfy it).
    pub fn run(seed: u64, config: &Config) -> Result<Report, Failure> {
        assert!(
            (1..=config.replicas).contains(&config.quorum),
            "the quorum must be between 1 and the number of replicas that fsync"
        );
        world::World::new(seed, config.clone()).run()
    }
}
