//! Runs many seeds of the replication simulator and reports seeds per second; on a
//! failure prints the broken promise, the trace before it and the command that replays it.
//!
//! ```text
//! cargo run --release --no-default-features --example simulate -- --seeds 100000
//! cargo run --release --no-default-features --example simulate -- --seeds 1 --start 4711 --replicas 5 --quorum 3
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use replikv::replication::sim::{Config, Simulation};

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
            "--replicas" => args.config.replicas = number as usize,
            "--quorum" => args.config.quorum = number as usize,
            "--lazy" => args.config.lazy_replicas = number as usize,
            "--consumers" => args.config.consumers = number as usize,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if !(1..=args.config.replicas).contains(&args.config.quorum) {
        return Err("--quorum must be between 1 and --replicas".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(problem) => {
            eprintln!(
                "{problem}\nusage: simulate [--seeds N] [--start S] [--replicas K] [--quorum Q] \
                 [--lazy L] [--consumers C]"
            );
            return ExitCode::from(2);
        }
    };
    let config = &args.config;
    println!(
        "seeds {}..{}: {} replicas (quorum {}), {} without fsync, {} consumers",
        args.start,
        args.start + args.seeds,
        config.replicas,
        config.quorum,
        config.lazy_replicas,
        config.consumers
    );
    let started = Instant::now();
    let mut last_progress = started;
    let (mut writes, mut primary_lost) = (0, 0);
    for (done, seed) in (args.start..args.start + args.seeds).enumerate() {
        match Simulation::run(seed, config) {
            Ok(report) => {
                writes += report.writes;
                primary_lost += u64::from(report.primary_lost);
            }
            Err(failure) => {
                eprintln!("{failure}");
                eprintln!("replay: {}", config.replay_command(seed));
                return ExitCode::FAILURE;
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            println!(
                "{} seeds, {:.0} seeds/s",
                done + 1,
                rate(done as u64 + 1, started)
            );
        }
    }
    println!(
        "{} seeds passed ({writes} writes, the primary lost in {primary_lost}) in {:.1?}: \
         {:.0} seeds/s",
        args.seeds,
        started.elapsed(),
        rate(args.seeds, started)
    );
    ExitCode::SUCCESS
}

#[allow(clippy::cast_precision_loss)] // a rate to print
fn rate(seeds: u64, since: Instant) -> f64 {
    seeds as f64 / since.elapsed().as_secs_f64().max(1e-9)
}
