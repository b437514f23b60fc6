//! The simulator's own promises: thousands of seeds of promotion keep the invariants
//! under every fault, forced promotions are told apart, each planted bug is caught within
//! a bounded number of seeds, and a seed replays exactly.
//!
//! `REPLIKV_SIM_SEEDS=N` sets the number of seeds per cluster shape.

use super::*;

/// Seeds of each cluster shape in a CI run.
const CI_SEEDS: u64 = 500;

/// Seeds within which a planted bug must be caught.
const CATCH_WITHIN: u64 = 400;

fn seeds() -> u64 {
    std::env::var("REPLIKV_SIM_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CI_SEEDS)
}

fn shape(members: usize, quorum: usize, candidates: usize, force: bool) -> Config {
    Config {
        members,
        quorum,
        candidates,
        force,
        ..Config::default()
    }
}

/// Runs every seed of each shape; returns what they did, summed.
fn all_pass(configs: &[Config]) -> Report {
    let mut sum = Report::default();
    for config in configs {
        for seed in 0..seeds() {
            let report =
                Simulation::run(seed, config).unwrap_or_else(|failure| panic!("{failure}"));
            sum.writes += report.writes;
            sum.sync_acked += report.sync_acked;
            sum.promotions += report.promotions;
            sum.outbid += report.outbid;
            sum.too_few += report.too_few;
            sum.forked += report.forked;
            sum.deposed += report.deposed;
            sum.diverged += report.diverged;
            sum.fenced += report.fenced;
            sum.partitions += report.partitions;
            sum.split_brain |= report.split_brain;
            sum.forced_losses += report.forced_losses;
            for (point, count) in report.crashes {
                *sum.crashes.entry(point).or_default() += count;
            }
        }
    }
    sum
}

fn first_failure(config: &Config) -> Failure {
    (0..CATCH_WITHIN)
        .find_map(|seed| Simulation::run(seed, config).err())
        .expect("the planted bug is caught within the bound")
}

#[test]
fn promotions_under_partitions_and_crashes_lose_no_acked_write_and_merge_no_fork() {
    let sum = all_pass(&[
        shape(3, 2, 2, false),
        shape(3, 3, 2, false),
        shape(4, 3, 2, false),
        shape(5, 3, 2, false),
        shape(5, 4, 2, false),
        shape(3, 1, 1, false),
    ]);
    // Every kind of event struck: a simulator that injects nothing proves nothing.
    for (what, count) in [
        ("sync writes acknowledged", sum.sync_acked),
        ("epochs begun", sum.promotions),
        ("promotions outbid", sum.outbid),
        ("promotions with too few grants", sum.too_few),
        ("promotions refused a forked newer log", sum.forked),
        ("primaries deposed", sum.deposed),
        ("streams refused as diverged", sum.diverged),
        ("streams fenced", sum.fenced),
        ("partitions", sum.partitions),
    ] {
        assert!(count > 0, "no {what} in {sum:?}");
    }
    assert!(sum.split_brain, "no split brain in {sum:?}");
    for point in CrashPoint::ALL {
        assert!(sum.crashes.contains_key(&point), "no crash at {point:?}");
    }
    assert_eq!(sum.forced_losses, 0);
}

#[test]
fn two_candidates_never_both_win_one_epoch_when_the_quorum_is_every_member() {
    // Seed 10 of this shape found it: `needed` asked for `members - quorum + 1` = 1
    // grant, both candidates won epoch 2 alone, and m0 appended one's entries after the
    // other's (their epoch histories were equal, so `fork_lsn` saw no fork).
    Simulation::run(10, &shape(3, 3, 2, false)).unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn a_forced_promotion_may_lose_acked_writes_but_fences_and_merges_nothing() {
    let sum = all_pass(&[shape(3, 2, 1, true), shape(5, 3, 1, true)]);
    assert!(sum.promotions > 0, "{sum:?}");
    // The loss force reports happens, and the sim counts it rather than failing.
    assert!(
        sum.forced_losses > 0,
        "no forced promotion lost a write: {sum:?}"
    );
}

#[test]
fn a_member_that_grants_an_epoch_it_has_seen_is_caught() {
    let mut config = shape(3, 2, 2, false);
    config.planted.grant_equal = true;
    let failure = first_failure(&config);
    assert!(
        matches!(
            failure.invariant,
            Invariant::OnePrimaryPerEpoch | Invariant::NoSilentMerge
        ),
        "{failure}"
    );
}

#[test]
fn a_candidate_that_wins_with_one_grant_too_few_is_caught() {
    // One candidate: with two, both could win one epoch and merge first.
    let mut config = shape(3, 2, 1, false);
    config.planted.one_grant_short = true;
    let failure = first_failure(&config);
    assert_eq!(failure.invariant, Invariant::NoAckedWriteLost, "{failure}");
}

#[test]
fn a_member_that_appends_without_the_fork_check_is_caught() {
    let mut config = shape(3, 2, 2, false);
    config.planted.skip_fork_check = true;
    let failure = first_failure(&config);
    assert_eq!(failure.invariant, Invariant::NoSilentMerge, "{failure}");
}

#[test]
fn a_member_that_keeps_its_highest_epoch_seen_only_in_memory_is_caught() {
    let mut config = shape(3, 2, 2, false);
    config.planted.volatile_seen = true;
    let failure = first_failure(&config);
    assert_eq!(failure.invariant, Invariant::EpochsNeverGoDown, "{failure}");
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

#[test]
fn a_failure_names_its_seed_and_the_command_that_replays_it() {
    let mut config = shape(3, 2, 2, false);
    config.planted.skip_fork_check = true;
    let failure = first_failure(&config);
    let again = Simulation::run(failure.seed, &config).expect_err("it fails again");
    assert_eq!(again, failure);
    assert!(failure
        .replay
        .contains(&format!("--start {}", failure.seed)));
    assert!(failure.to_string().contains(&failure.replay));
}
