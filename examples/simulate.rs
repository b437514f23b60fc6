//! Runs many seeds of the replication simulator (on every core, one seed per thread at a
//! time: each run is single-threaded and deterministic) and reports seeds per second; on
//! a failure prints the broken promise, the trace before it and the command that replays it.
//!
//! ```text
//! cargo run --release --no-default-features --example simulate -- --seeds 1000000
//! cargo run --release --no-default-features --example simulate -- --seeds 1 --start 4711 --replicas 5 --quorum 3
//! ```

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use replikv::replication::sim::cli::Seeds;
use replikv::replication::sim::{Config, Failure, Simulation};

const USAGE: &str = "usage: simulate [--seeds N] [--start S] [--replicas K] [--quorum Q] \
                     [--lazy L] [--consumers C] [--threads T]";

/// What the command line asked for.
struct Args {
    seeds: Seeds<Config>,
    threads: usize,
}

fn parse() -> Result<Args, ExitCode> {
    let mut threads = std::thread::available_parallelism().map_or(1, usize::from);
    let flag = |config: &mut Config, flag: &str, number: u64| {
        match flag {
            "--threads" => threads = (number as usize).max(1),
            "--replicas" => config.replicas = number as usize,
            "--quorum" => config.quorum = number as usize,
            "--lazy" => config.lazy_replicas = number as usize,
            "--consumers" => config.consumers = number as usize,
            _ => return false,
        }
        true
    };
    let check = |config: &Config| {
        if (1..=config.replicas).contains(&config.quorum) {
            Ok(())
        } else {
            Err("--quorum must be between 1 and --replicas".into())
        }
    };
    let seeds = Seeds::from_args(USAGE, flag, check)?;
    Ok(Args { seeds, threads })
}

/// What the workers share: the next seed to run, totals, and the lowest failing seed.
struct Shared {
    next: AtomicU64,
    done: AtomicU64,
    writes: AtomicU64,
    primary_lost: AtomicU64,
    slowest_catch_up: AtomicU64,
    stop: AtomicBool,
    failure: Mutex<Option<Failure>>,
}

fn work(shared: &Shared, config: &Config, end: u64) {
    while !shared.stop.load(Ordering::Relaxed) {
        let seed = shared.next.fetch_add(1, Ordering::Relaxed);
        if seed >= end {
            return;
        }
        match Simulation::run(seed, config) {
            Ok(report) => {
                shared.writes.fetch_add(report.writes, Ordering::Relaxed);
                if report.primary_lost {
                    shared.primary_lost.fetch_add(1, Ordering::Relaxed);
                } else {
                    let catch_up = report.ended_at.saturating_sub(config.run_for);
                    shared
                        .slowest_catch_up
                        .fetch_max(catch_up, Ordering::Relaxed);
                }
                shared.done.fetch_add(1, Ordering::Relaxed);
            }
            Err(failure) => {
                shared.stop.store(true, Ordering::Relaxed);
                let mut first = shared.failure.lock().expect("no worker panics holding it");
                if first.as_ref().is_none_or(|f| failure.seed < f.seed) {
                    *first = Some(failure);
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(code) => return code,
    };
    let config = &args.seeds.config;
    let (start, end) = (args.seeds.start, args.seeds.range().end);
    println!(
        "seeds {start}..{end} on {} threads: {} replicas (quorum {}), {} without fsync, {} consumers",
        args.threads,
        config.replicas,
        config.quorum,
        config.lazy_replicas,
        config.consumers
    );
    let shared = Shared {
        next: AtomicU64::new(start),
        done: AtomicU64::new(0),
        writes: AtomicU64::new(0),
        primary_lost: AtomicU64::new(0),
        slowest_catch_up: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        failure: Mutex::new(None),
    };
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..args.threads)
            .map(|_| scope.spawn(|| work(&shared, config, end)))
            .collect();
        let mut last_progress = Instant::now();
        while !workers
            .iter()
            .all(std::thread::ScopedJoinHandle::is_finished)
        {
            std::thread::sleep(Duration::from_millis(50));
            if last_progress.elapsed() >= Duration::from_secs(2) {
                last_progress = Instant::now();
                let done = shared.done.load(Ordering::Relaxed);
                println!("{done} seeds, {:.0} seeds/s", rate(done, started));
            }
        }
    });
    if let Some(failure) = shared.failure.into_inner().expect("no worker panicked") {
        eprintln!("{failure}");
        return ExitCode::FAILURE;
    }
    let done = shared.done.load(Ordering::Relaxed);
    println!(
        "{done} seeds passed in {:.1?}: {:.0} seeds/s; {} writes; the primary lost in {}; \
         slowest catch-up after the faults stopped: {} ms of simulated time",
        started.elapsed(),
        rate(done, started),
        shared.writes.load(Ordering::Relaxed),
        shared.primary_lost.load(Ordering::Relaxed),
        shared.slowest_catch_up.load(Ordering::Relaxed) / 1_000
    );
    ExitCode::SUCCESS
}

#[allow(clippy::cast_precision_loss)] // a rate to print
fn rate(seeds: u64, since: Instant) -> f64 {
    seeds as f64 / since.elapsed().as_secs_f64().max(1e-9)
}
