//! What a synchronous write costs against the physical path it cannot avoid, measured in
//! one run on one machine:
//!
//! * the physical serial path, taken in a row per write: a local durable commit (append +
//!   fdatasync + apply), a replica's durable append of that entry and one loopback TCP
//!   round trip (each step's median is shown too); and the same three steps as a
//!   hand-rolled replication takes them, with a thread on each side of a socket (see
//!   [`path`]),
//! * a sync write with quorum 1 (the primary and the replica in this process), with
//!   `ship_ahead` off (the default: entries leave once durable here),
//! * the same with `PrimaryOptions::ship_ahead`, in the same rounds: entries ship as soon
//!   as they are written, so that the primary's fdatasync and the replica's overlap; the
//!   write returns once it is durable on both, and the replica shows it once the
//!   primary's next frame says it is durable there; with the replica's store on a disk
//!   of its own (`--replica-dir`), it approaches the larger of the two paths,
//!
//! and how 16 concurrent sync writers compare with one on the default primary (acks are
//! cumulative, so one round trip releases many writers). Run with
//! `cargo bench --no-default-features --bench sync` (`-- --quick` for a smoke run). Every
//! replica's store sits beside the primaries', on one disk, where the two fdatasyncs of a
//! sync write queue; `-- --replica-dir DIR` puts them in `DIR` (another disk, or tmpfs
//! standing in for another machine's).

mod path;

use std::sync::Arc;
use std::time::{Duration, Instant};

use path::{median, median_us, op, time_each, Echo, HandRolled, Local, Outcome};
use replikv::replication::primary::{Primary, PrimaryOptions};
use replikv::replication::quorum::SyncOptions;
use replikv::replication::replica::{OnDiverge, Replica, ReplicaOptions};
use replikv::store::{Durability, Store, StoreOptions};

struct Served {
    store: Store,
    primary: Primary,
    replica: Replica,
}

/// A primary in `dir` whose replica keeps its store in `replica_dir`; both named `name`.
fn serve(
    (dir, replica_dir): (&std::path::Path, &std::path::Path),
    name: &str,
    ship_ahead: bool,
) -> Outcome<Served> {
    let store = Store::open(dir.join(name), StoreOptions::default())?;
    let primary = Primary::start(
        store.clone(),
        PrimaryOptions {
            ship_interval: Duration::ZERO,
            sync: SyncOptions::default(),
            ship_ahead,
            ..PrimaryOptions::default()
        },
    )?;
    let replica = Replica::start(
        replica_dir.join(name),
        ReplicaOptions {
            primary: primary.address().to_string(),
            token: None,
            name: "r1".into(),
            max_backoff: Duration::from_millis(100),
            store: StoreOptions::default(),
            on_diverge: OnDiverge::Stop,
            listen: None,
        },
    )?;
    // The first sync write waits until the replica registered.
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.commit(vec![op(0)], Some(Durability::Sync)).is_err() {
        if Instant::now() > deadline {
            return Err("the replica never registered".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Served {
        store,
        primary,
        replica,
    })
}

/// Sync writes per second from `writers` threads, each committing `each` writes.
fn sync_throughput(store: &Store, writers: usize, each: usize) -> Outcome<f64> {
    let store = Arc::new(store.clone());
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || -> replikv::Result<()> {
                for i in 0..each {
                    store.commit(vec![op(w * each + i)], Some(Durability::Sync))?;
                }
                Ok(())
            })
        })
        .collect();
    for thread in threads {
        thread.join().map_err(|_| "a writer panicked")??;
    }
    let total = u32::try_from(writers * each)?;
    Ok(f64::from(total) / started.elapsed().as_secs_f64())
}

impl Served {
    /// The median latency of `count` sync writes, one at a time; keys start at `first`.
    fn sync_median(&self, first: usize, count: usize) -> Outcome<f64> {
        let samples = time_each(count, |i| {
            self.store
                .commit(vec![op(first + i)], Some(Durability::Sync))?;
            Ok(())
        })?;
        Ok(median_us(&samples))
    }

    fn close(self) -> Outcome {
        self.primary.close();
        self.replica.close()?;
        self.store.close()?;
        Ok(())
    }
}

fn main() -> Outcome {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let (rounds, count) = if quick { (2, 25) } else { (7, 100) };
    let dir = tempfile::tempdir()?;
    let replica_at = args.iter().position(|a| a == "--replica-dir");
    let own_disk = replica_at.is_some();
    let replica_dir = match replica_at {
        Some(at) => {
            tempfile::tempdir_in(args.get(at + 1).ok_or("--replica-dir needs a directory")?)?
        }
        None => tempfile::tempdir_in(dir.path())?,
    };
    println!("replicas' stores in {}", replica_dir.path().display());
    let dirs = (dir.path(), replica_dir.path());
    let mut local = Local::open(dir.path(), replica_dir.path())?;
    let mut echo = Echo::start()?;
    let mut hand = HandRolled::start(dir.path(), replica_dir.path())?;
    let ahead = serve(dirs, "ahead", true)?;
    let serial = serve(dirs, "serial", false)?;
    // Rounds interleave the path and both kinds of sync writes, so that the disk's drift
    // over the run (about 20% here) weighs on all alike.
    let (mut commit, mut append, mut rtt, mut path) = (vec![], vec![], vec![], vec![]);
    let mut by_hand = vec![];
    let (mut sync, mut sync_serial) = (vec![], vec![]);
    for round in 0..rounds {
        let steps = local.measure(count, &mut echo)?;
        commit.push(steps.commit);
        append.push(steps.append);
        rtt.push(steps.rtt);
        path.push(steps.path);
        by_hand.push(hand.measure(count)?);
        sync.push(ahead.sync_median(round * count, count)?);
        sync_serial.push(serial.sync_median(round * count, count)?);
    }
    echo.stop();
    hand.stop()?;
    let (commit_us, append_us) = (median(&mut commit), median(&mut append));
    let (rtt_us, path_us) = (median(&mut rtt), median(&mut path));
    let (sync_us, serial_us) = (median(&mut sync), median(&mut sync_serial));
    let sum_us = commit_us + append_us + rtt_us;
    let hand_us = median(&mut by_hand);
    println!("medians of {rounds} interleaved rounds of {count}");
    println!("local durable commit        {commit_us:9.1} us");
    println!("replica durable append      {append_us:9.1} us");
    println!("loopback round trip         {rtt_us:9.1} us");
    println!("sum of the three medians    {sum_us:9.1} us");
    println!("physical serial path        {path_us:9.1} us   (median of the per-write sums)");
    println!(
        "hand-rolled replication     {hand_us:9.1} us   {:.2}x the path (the same steps, a thread on each side)",
        hand_us / path_us
    );
    for (what, us) in [("(default)", serial_us), ("ship_ahead", sync_us)] {
        println!(
            "sync write, {what:<15} {us:9.1} us   {:.2}x the path (target <= 1.2x), {:.2}x the sum of medians, {:.2}x hand-rolled",
            us / path_us,
            us / sum_us,
            us / hand_us
        );
    }
    // What overlapping the fdatasyncs can approach (the stretch of the issue): the longer
    // of the local commit and the replica's side of the path.
    let longer_us = commit_us.max(append_us + rtt_us);
    let queue = if own_disk {
        ""
    } else {
        " (on one disk the two fdatasyncs queue: see --replica-dir)"
    };
    println!(
        "longer of the two paths     {longer_us:9.1} us   ship_ahead at {:.2}x it{queue}",
        sync_us / longer_us
    );
    // One writer and sixteen alternate over the rounds too: a single pair of runs swung
    // the ratio by a third with the disk's mood.
    let each = if quick { 20 } else { 100 };
    let (mut ones, mut sixteens) = (vec![], vec![]);
    for _ in 0..rounds {
        ones.push(sync_throughput(&serial.store, 1, each * 4)?);
        sixteens.push(sync_throughput(&serial.store, 16, each)?);
    }
    let (one, sixteen) = (median(&mut ones), median(&mut sixteens));
    println!("default primary, medians of {rounds} interleaved rounds:");
    println!("1 sync writer               {one:9.0} writes/s");
    println!(
        "16 sync writers             {sixteen:9.0} writes/s   {:.1}x one writer (target >= 5x)",
        sixteen / one
    );
    ahead.close()?;
    serial.close()?;
    local.store.close()?;
    local.follower.close()?;
    Ok(())
}
