//! The simulator's own promises: thousands of seeds keep DESIGN's promises 3 and 5, a
//! planted bug is caught within the seeds CI runs, and a seed replays exactly.
//!
//! `REPLIKV_SIM_SEEDS=N` raises the number of seeds (the other worlds run a share of N).

use super::seeds::{add_up, every_kind_struck, replays_exactly};
use super::*;

/// Seeds of the default world in a CI run: about 25 s in a debug build on one core.
const CI_SEEDS: u64 = 2_000;

fn seeds() -> u64 {
    super::seeds::seeds(CI_SEEDS)
}

/// Runs every seed; returns the faults they met, summed.
fn all_pass(config: &Config, seeds: std::ops::Range<u64>) -> FaultCounts {
    let mut met = FaultCounts::default();
    super::seeds::all_pass(
        seeds,
        |seed| Simulation::run(seed, config),
        |report| {
            let faults = report.faults;
            add_up!(met, faults; cuts, partitions, crashes, stale_frames, stale_acks, misordered,
                refused, dropped, primary_crashes, held_cut);
        },
    );
    met
}

/// Asserts that the default world with `planted` breaks one of `broken` within the CI
/// seeds.
fn caught(planted: Planted, broken: &[Invariant]) {
    let config = Config {
        planted,
        ..Config::default()
    };
    super::seeds::caught(seeds(), |seed| Simulation::run(seed, &config), broken);
}

#[test]
fn sync_writes_are_on_a_quorum_and_replicas_match_the_primary_under_every_fault() {
    let met = all_pass(&Config::default(), 0..seeds());
    every_kind_struck!(met; cuts, partitions, crashes, stale_acks, misordered, refused, dropped,
        primary_crashes, held_cut);
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
    caught(Planted::AckBeforeFsync, &[Invariant::AckOnlyFsynced]);
}

#[test]
fn a_primary_that_counts_consumers_and_lazy_replicas_toward_the_quorum_is_caught() {
    // Counted before they fsync, and before they show it.
    caught(
        Planted::CountEveryone,
        &[Invariant::SyncWriteDurable, Invariant::SyncWriteApplied],
    );
}

#[test]
fn a_replica_that_shows_entries_before_the_primary_said_they_are_durable_is_caught() {
    caught(Planted::ReleaseHeld, &[Invariant::AppliedOnlyDurable]);
}

#[test]
fn a_handshake_that_keeps_entries_the_primary_lost_is_caught() {
    caught(Planted::TrustHeld, &[Invariant::PrefixOfPrimaryLog]);
}

#[test]
fn a_replica_that_shows_its_whole_log_after_a_restart_is_caught() {
    // It shows entries its primary never made durable, or, once the primary wrote others
    // at those LSNs, entries that differ from the primary's.
    caught(
        Planted::ReplayHeld,
        &[Invariant::AppliedOnlyDurable, Invariant::EqualChecksums],
    );
}

#[test]
fn a_replica_that_never_marks_what_was_shipped_ahead_is_caught() {
    // Restarted, it shows entries its primary never made durable, or that differ.
    caught(
        Planted::NeverMarkUnconfirmed,
        &[Invariant::AppliedOnlyDurable, Invariant::EqualChecksums],
    );
}

#[test]
fn a_replica_that_hides_what_it_showed_after_a_restart_is_caught() {
    caught(
        Planted::AlwaysMarkUnconfirmed,
        &[Invariant::ShownStaysShown],
    );
}

#[test]
fn a_primary_that_counts_a_replica_before_every_member_knows_it_joined_is_caught() {
    caught(Planted::CountJoiners, &[Invariant::MembersKnowWhoCounts]);
}

#[test]
fn a_primary_that_restarts_forgetting_which_replicas_were_joining_is_caught() {
    caught(Planted::ForgetJoining, &[Invariant::MembersKnowWhoCounts]);
}

#[test]
fn a_seed_replays_exactly() {
    replays_exactly(&Config::default(), Simulation::run, |r| r.trace_hash);
}
