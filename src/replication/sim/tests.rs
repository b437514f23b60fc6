//! Seeds, planted bugs and determinism.

use super::*;

#[test]
fn probe() {
    let started = std::time::Instant::now();
    let mut totals = FaultCounts::default();
    let mut steps = 0;
    for seed in 0..200 {
        match Simulation::run(seed, &Config::default()) {
            Ok(r) => {
                steps += r.steps;
                totals.cuts += r.faults.cuts;
                totals.crashes += r.faults.crashes;
                totals.partitions += r.faults.partitions;
                totals.stale_frames += r.faults.stale_frames;
                totals.misordered += r.faults.misordered;
                totals.refused += r.faults.refused;
                totals.dropped += r.faults.dropped;
            }
            Err(f) => panic!("{f}"),
        }
    }
    eprintln!("{:?} steps={steps} {totals:?}", started.elapsed());
}
