//! The simulator's own promises: thousands of seeds keep DESIGN's promises 3 and 5, a
//! planted bug is caught within the seeds CI runs, and a seed replays exactly.
//!
//! `REPLIKV_SIM_SEEDS=N` raises the number of seeds (the other worlds run a share of N).

use super::*;

/// Seeds of the default world in a CI run: about 25 s in a debug build on one core.
const CI_SEEDS: u64 = 2_000;

fn seeds() -> u64 {
    std::env::var("REPLIKV_SIM_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CI_SEEDS)
}

/// Runs every seed; returns the faults they met, summed.
fn all_pass(config: &Config, seeds: std::ops::Range<u64>) -> FaultCounts {
    let mut met = FaultCounts::default();
    for seed in seeds {
        let faults = match Simulation::run(seed, config) {
            Ok(report) => report.faults,
            Err(failure) => panic!("{failure}replay: {}", config.replay_command(seed)),
        };
        met.cuts += faults.cuts;
        met.partitions += faults.partitions;
        met.crashes += faults.crashes;
        met.stale_frames += faults.stale_frames;
        met.stale_acks += faults.stale_acks;
        met.misordered += faults.misordered;
        met.refused += faults.refused;
        met.dropped += faults.dropped;
    }
    met
}

fn first_failure(config: &Config) -> Failure {
    (0..seeds())
        .find_map(|seed| Simulation::run(seed, config).err())
        .expect("the planted bug is caught within the CI seeds")
}

#[test]
fn sync_writes_are_on_a_quorum_and_replicas_match_the_primary_under_every_fault() {
    let met = all_pass(&Config::default(), 0..seeds());
    // Every kind of fault struck: a simulator that injects nothing proves nothing.
    for (fault, count) in [
        ("cuts", met.cuts),
        ("partitions", met.partitions),
        ("crashes", met.crashes),
        ("stale acks", met.stale_acks),
        ("misordered frames", met.misordered),
        ("refused frames", met.refused),
        ("dropped links", met.dropped),
    ] {
        assert!(count > 0, "no {fault} in {met:?}");
    }
}

#[test]
fn one_replica_with_quorum_one_keeps_the_promises() {
    let config = Config {
        replicas: 1,
        quorum: 1,
        lazy_replicas: 0,
        consumers: 0,
        ..Config::default()
    };
    all_pass(&config, 0..seeds());
}

#[test]
fn five_replicas_with_quorum_three_and_two_consumers_keep_the_promises() {
    let config = Config {
        replicas: 5,
        quorum: 3,
        lazy_replicas: 0,
        consumers: 2,
        ..Config::default()
    };
    all_pass(&config, 0..seeds() / 4);
}

#[test]
fn a_replica_that_acks_before_its_fsync_is_caught() {
    let mut config = Config::default();
    config.planted.ack_before_fsync = true;
    let failure = first_failure(&config);
    assert_eq!(failure.invariant, Invariant::AckOnlyFsynced, "{failure}");
}

#[test]
fn a_primary_that_counts_consumers_and_lazy_replicas_toward_the_quorum_is_caught() {
    let mut config = Config::default();
    config.planted.count_everyone = true;
    let failure = first_failure(&config);
    assert_eq!(failure.invariant, Invariant::SyncWriteDurable, "{failure}");
}

#[test]
fn a_seed_replays_exactly() {
    let config = Config::default();
    for seed in [0, 1, 2] {
        let first = Simulation::run(seed, &config).expect("passes");
        assert_eq!(Simulation::run(seed, &config).expect("passes"), first);
    }
    let hash = |seed| Simulation::run(seed, &config).expect("passes").trace_hash;
    assert_ne!(hash(0), hash(1), "the trace hash tells runs apart");
}
