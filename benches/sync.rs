//! What a synchronous write costs against the physical path it cannot avoid, measured in
//! one run on one machine:
//!
//! * the physical serial path a sync write cannot avoid, taken in a row per write: a local
//!   durable commit (append + fdatasync + apply), a replica's durable append of that entry
//!   and one loopback TCP round trip (each step's median is shown too),
//! * a sync write with quorum 1 (the primary and the replica in this process), with the
//!   primary shipping the entry as soon as it is written (`PrimaryOptions::ship_ahead`, the
//!   default), so that its fdatasync and the replica's overlap: the replica shows the entry,
//!   and the write returns, once the primary's next frame says it is durable there,
//! * the same with `ship_ahead` off (entries leave once durable here), in the same rounds,
//!
//! and how 16 concurrent sync writers compare with one on the default primary (acks are
//! cumulative, so one round trip releases many writers). Run with
//! `cargo bench --no-default-features --bench sync` (`-- --quick` for a smoke run). Both
//! replicas' stores (the path's and the served one) sit beside the primary's, on one disk,
//! where the two fdatasyncs of a sync write queue; `-- --replica-dir DIR` puts them in
//! `DIR` (another disk, or tmpfs standing in for another machine's).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use replikv::codec::{encode_key, KeyRef, Op};
use replikv::log::LogPosition;
use replikv::replication::primary::{Primary, PrimaryOptions};
use replikv::replication::quorum::SyncOptions;
use replikv::replication::replica::{OnDiverge, Replica, ReplicaOptions};
use replikv::store::{Durability, Store, StoreOptions};

type Outcome<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn op(i: usize) -> Op {
    Op {
        table: "consent".into(),
        key: encode_key(KeyRef::Str(&format!("user{i:011}@x"))),
        value: Some(vec![0xa5; 100]),
    }
}

/// The median of `samples`, in microseconds.
fn median_us(samples: &[Duration]) -> f64 {
    let mut micros: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    median(&mut micros)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    values[values.len() / 2]
}

fn time_each(count: usize, mut f: impl FnMut(usize) -> Outcome) -> Outcome<Vec<Duration>> {
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let started = Instant::now();
        f(i)?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

/// A plain store and a follower store, side by side on one disk.
struct Local {
    store: Store,
    follower: Store,
    position: LogPosition,
}

impl Local {
    fn open(dir: &std::path::Path, replica_dir: &std::path::Path) -> Outcome<Self> {
        let follower = StoreOptions {
            follower: true,
            ..StoreOptions::default()
        };
        Ok(Self {
            store: Store::open(dir.join("local"), StoreOptions::default())?,
            follower: Store::open(replica_dir.join("follower"), follower)?,
            position: LogPosition::after(0),
        })
    }

    /// `count` times, in a row as a sync write takes them: a local durable commit, the
    /// follower's durable append of that entry and a round trip on `echo`. Returns the
    /// median of each step and the median of their per-write sums, in microseconds: two
    /// fdatasyncs in a row on one disk, like a sync write's, with the same spread.
    fn measure(&mut self, count: usize, echo: &mut Echo) -> Outcome<Steps> {
        let (mut commits, mut appends, mut trips, mut paths) = (vec![], vec![], vec![], vec![]);
        for i in 0..count {
            let started = Instant::now();
            self.store.commit(vec![op(i)], None)?;
            let commit = started.elapsed();
            // Read outside the timing: a replica receives the entry, it does not read it.
            let entry = self
                .store
                .read_log_raw(&mut self.position, 1, usize::MAX)?
                .pop()
                .ok_or("the committed entry did not read back")?;
            // Durable, as an ack needs it: the follower applies first, then syncs.
            let started = Instant::now();
            self.follower.append_replicated(&[entry.payload])?;
            self.follower.sync_replicated()?;
            let append = started.elapsed();
            let trip = echo.round_trip()?;
            commits.push(commit);
            appends.push(append);
            trips.push(trip);
            paths.push(commit + append + trip);
        }
        Ok(Steps {
            commit: median_us(&commits),
            append: median_us(&appends),
            rtt: median_us(&trips),
            path: median_us(&paths),
        })
    }
}

/// The medians of one round of the physical path, in microseconds.
struct Steps {
    commit: f64,
    append: f64,
    rtt: f64,
    /// The median of the per-write sums of the three steps.
    path: f64,
}

/// A loopback TCP connection to an echo thread.
struct Echo {
    client: TcpStream,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Echo {
    fn start() -> Outcome<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let thread = std::thread::spawn(move || -> std::io::Result<()> {
            let (mut peer, _) = listener.accept()?;
            peer.set_nodelay(true)?;
            let mut buffer = [0u8; 64];
            while peer.read_exact(&mut buffer).is_ok() {
                peer.write_all(&buffer)?;
            }
            Ok(())
        });
        let client = TcpStream::connect(address)?;
        client.set_nodelay(true)?;
        Ok(Self { client, thread })
    }

    /// One round trip of 64 bytes each way.
    fn round_trip(&mut self) -> Outcome<Duration> {
        let mut buffer = [7u8; 64];
        let started = Instant::now();
        self.client.write_all(&buffer)?;
        self.client.read_exact(&mut buffer)?;
        Ok(started.elapsed())
    }

    fn stop(self) {
        drop(self.client);
        let _ = self.thread.join();
    }
}

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
    let replica_dir = match args.iter().position(|a| a == "--replica-dir") {
        Some(at) => {
            tempfile::tempdir_in(args.get(at + 1).ok_or("--replica-dir needs a directory")?)?
        }
        None => tempfile::tempdir_in(dir.path())?,
    };
    println!("replicas' stores in {}", replica_dir.path().display());
    let dirs = (dir.path(), replica_dir.path());
    let mut local = Local::open(dir.path(), replica_dir.path())?;
    let mut echo = Echo::start()?;
    let ahead = serve(dirs, "ahead", true)?;
    let serial = serve(dirs, "serial", false)?;
    // Rounds interleave the path and both kinds of sync writes, so that the disk's drift
    // over the run (about 20% here) weighs on all alike.
    let (mut commit, mut append, mut rtt, mut path) = (vec![], vec![], vec![], vec![]);
    let (mut sync, mut sync_serial) = (vec![], vec![]);
    for round in 0..rounds {
        let steps = local.measure(count, &mut echo)?;
        commit.push(steps.commit);
        append.push(steps.append);
        rtt.push(steps.rtt);
        path.push(steps.path);
        sync.push(ahead.sync_median(round * count, count)?);
        sync_serial.push(serial.sync_median(round * count, count)?);
    }
    echo.stop();
    let (commit_us, append_us) = (median(&mut commit), median(&mut append));
    let (rtt_us, path_us) = (median(&mut rtt), median(&mut path));
    let (sync_us, serial_us) = (median(&mut sync), median(&mut sync_serial));
    let sum_us = commit_us + append_us + rtt_us;
    println!("medians of {rounds} interleaved rounds of {count}");
    println!("local durable commit        {commit_us:9.1} us");
    println!("replica durable append      {append_us:9.1} us");
    println!("loopback round trip         {rtt_us:9.1} us");
    println!("sum of the three medians    {sum_us:9.1} us");
    println!("physical serial path        {path_us:9.1} us   (median of the per-write sums)");
    for (what, us) in [("(default)", serial_us), ("ship_ahead", sync_us)] {
        println!(
            "sync write, {what:<15} {us:9.1} us   {:.2}x the path (target <= 1.2x), {:.2}x the sum of medians",
            us / path_us,
            us / sum_us
        );
    }
    let each = if quick { 20 } else { 200 };
    let one = sync_throughput(&serial.store, 1, each * 4)?;
    let sixteen = sync_throughput(&serial.store, 16, each)?;
    println!("default primary:");
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
