//! Runs many seeds of the promotion simulator (promotion and fencing under partitions,
//! crashes and concurrent candidates) and reports what they did; on a failure prints the
//! broken promise, the trace before it and the command that replays it.
//!
//! ```text
//! cargo run --release --no-default-features --example simulate_promotion -- --seeds 100000
//! cargo run --release --no-default-features --example simulate_promotion -- --seeds 1 --start 54 --members 3 --quorum 3
//! ```

use std::process::ExitCode;
use std::time::Instant;

use replikv::replication::sim::cli::Seeds;
use replikv::replication::sim::promotion::{Config, Simulation};

const USAGE: &str = "usage: simulate_promotion [--seeds N] [--start S] [--members M] \
                     [--quorum Q] [--candidates 1|2] [--force 0|1]";

fn flag(config: &mut Config, flag: &str, number: u64) -> bool {
    match flag {
        "--members" => config.members = number as usize,
        "--quorum" => config.quorum = number as usize,
        "--candidates" => config.candidates = number as usize,
        "--force" => config.force = number != 0,
        _ => return false,
    }
    true
}

fn check(config: &Config) -> Result<(), String> {
    if config.members < 2 || !(1..=config.members).contains(&config.quorum) {
        return Err("--members must be at least 2, --quorum between 1 and --members".into());
    }
    if !(1..=2).contains(&config.candidates) || config.candidates >= config.members {
        return Err("--candidates is 1 or 2, and fewer than --members".into());
    }
    if config.force && config.candidates != 1 {
        return Err("--force 1 runs one candidate".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match Seeds::from_args(USAGE, flag, check) {
        Ok(args) => args,
        Err(code) => return code,
    };
    let config = &args.config;
    println!("seeds {:?}: {config:?}", args.range());
    let started = Instant::now();
    let (mut promotions, mut acked, mut forced_losses) = (0, 0, 0);
    for seed in args.range() {
        match Simulation::run(seed, config) {
            Ok(report) => {
                promotions += report.promotions;
                acked += report.sync_acked;
                forced_losses += report.forced_losses;
                if args.seeds == 1 {
                    println!("{report:?}");
                }
            }
            Err(failure) => {
                eprintln!("{failure}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "{} seeds passed in {:.1?}: {promotions} epochs begun, {acked} sync writes \
         acknowledged, {forced_losses} of them missing after a forced promotion",
        args.seeds,
        started.elapsed()
    );
    ExitCode::SUCCESS
}
