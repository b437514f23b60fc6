//! The simulator's own promises: thousands of seeds of promotion keep the invariants
//! under every fault, forced promotions are told apart, each planted bug is caught within
//! a bounded number of seeds, and a seed replays exactly.
//!
//! `REPLIKV_SIM_SEEDS=N` sets the number of seeds per cluster shape.

use super::super::seeds::{add_up, every_kind_struck, replays_exactly, seeds};
use super::*;

/// Seeds of each cluster shape in a CI run.
const CI_SEEDS: u64 = 500;

/// Seeds within which a planted bug must be caught.
const CATCH_WITHIN: u64 = 400;

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
        super::super::seeds::all_pass(
            0..seeds(CI_SEEDS),
            |seed| Simulation::run(seed, config),
            |report| {
                add_up!(sum, report; writes, sync_acked, promotions, outbid, too_few, forked,
                    deposed, diverged, fenced, partitions, forced_losses);
                sum.split_brain |= report.split_brain;
                for (point, count) in report.crashes {
                    *sum.crashes.entry(point).or_default() += count;
                }
            },
        );
    }
    sum
}

/// Asserts that `config` with `plant` planted breaks one of `broken` within
/// `CATCH_WITHIN` seeds; returns how.
fn caught(mut config: Config, plant: impl FnOnce(&mut Planted), broken: &[Invariant]) -> Failure {
    plant(&mut config.planted);
    super::super::seeds::caught(CATCH_WITHIN, |seed| Simulation::run(seed, &config), broken)
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
    every_kind_struck!(sum; sync_acked, promotions, outbid, too_few, forked, deposed, diverged,
        fenced, partitions);
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

/// A test for each planted bug: the cluster it is planted in, its switch in [`Planted`],
/// and the promises it may break.
macro_rules! planted_bugs_are_caught {
    ($($(#[$doc:meta])* $test:ident: $shape:expr, $bug:ident => $($broken:ident)|+;)+) => {$(
        $(#[$doc])*
        #[test]
        fn $test() {
            caught($shape, |p| p.$bug = true, &[$(Invariant::$broken),+]);
        }
    )+};
}

planted_bugs_are_caught! {
    a_member_that_grants_an_epoch_it_has_seen_is_caught:
        shape(3, 2, 2, false), grant_equal => OnePrimaryPerEpoch | NoSilentMerge;
    /// One candidate: with two, both could win one epoch and merge first.
    a_candidate_that_wins_with_one_grant_too_few_is_caught:
        shape(3, 2, 1, false), one_grant_short => NoAckedWriteLost;
    a_member_that_appends_without_the_fork_check_is_caught:
        shape(3, 2, 2, false), skip_fork_check => NoSilentMerge;
    a_member_that_keeps_its_highest_epoch_seen_only_in_memory_is_caught:
        shape(3, 2, 2, false), volatile_seen => EpochsNeverGoDown;
}

#[test]
fn a_seed_replays_exactly() {
    replays_exactly(&Config::default(), Simulation::run, |r| r.trace_hash);
}

#[test]
fn a_failure_names_its_seed_and_the_command_that_replays_it() {
    let mut config = shape(3, 2, 2, false);
    config.planted.skip_fork_check = true;
    let failure = caught(config.clone(), |_| {}, &[Invariant::NoSilentMerge]);
    let again = Simulation::run(failure.seed, &config).expect_err("it fails again");
    assert_eq!(again, failure);
    assert!(failure
        .replay
        .contains(&format!("--start {}", failure.seed)));
    assert!(failure.to_string().contains(&failure.replay));
}
