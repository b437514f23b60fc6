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

use replikv::replication::sim::promotion::{Config, Simulation};

const USAGE: &str = "usage: simulate_promotion [--seeds N] [--start S] [--members M] \
                     [--quorum Q] [--candidates 1|2] [--force 0|1]";

/// What the command line asked for.
struct Args {
    seeds: u64,
    start: u64,
    config: Config,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seeds: 1_000,
        start: 0,
        config: Config::default(),
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let value = words
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let number: u64 = value
            .parse()
            .map_err(|_| format!("{flag} wants a number, got {value:?}"))?;
        match flag.as_str() {
            "--seeds" => args.seeds = number,
            "--start" => args.start = number,
            "--members" => args.config.members = number as usize,
            "--quorum" => args.config.quorum = number as usize,
            "--candidates" => args.config.candidates = number as usize,
            "--force" => args.config.force = number != 0,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let config = &args.config;
    if config.members < 2 || !(1..=config.members).contains(&config.quorum) {
        return Err("--members must be at least 2, --quorum between 1 and --members".into());
    }
    if !(1..=2).contains(&config.candidates) || config.candidates >= config.members {
        return Err("--candidates is 1 or 2, and fewer than --members".into());
    }
    if config.force && config.candidates != 1 {
        return Err("--force 1 runs one candidate".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(problem) => {
            eprintln!("{problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = &args.config;
    let end = args.start + args.seeds;
    println!("seeds {}..{end}: {config:?}", args.start);
    let started = Instant::now();
    let (mut promotions, mut acked, mut forced_losses) = (0, 0, 0);
    for seed in args.start..end {
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
