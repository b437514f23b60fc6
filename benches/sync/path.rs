//! The physical path a sync write cannot avoid, measured two ways: its three steps taken
//! in a row by one thread ([`Local::measure`]), and the same steps as the simplest program
//! that replicates with them would take them ([`HandRolled`]): the writer commits, sends
//! the entry over a blocking loopback socket to a thread that appends it durably to its
//! follower store and replies. The second shows what the first leaves out (a thread
//! woken on each side, the disk idle while the entry travels), so a sync write's overhead
//! over the path is ours, not the machine's.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use replikv::codec::{encode_key, KeyRef, Op};
use replikv::log::{LogPosition, RawEntry};
use replikv::store::{Store, StoreOptions};

pub type Outcome<T = ()> = Result<T, Box<dyn std::error::Error>>;
/// What the hand-rolled replica's thread ends with.
type ThreadOutcome = Result<(), Box<dyn std::error::Error + Send + Sync>>;

pub fn op(i: usize) -> Op {
    Op {
        table: "consent".into(),
        key: encode_key(KeyRef::Str(&format!("user{i:011}@x"))),
        value: Some(vec![0xa5; 100]),
    }
}

/// The median of `samples`, in microseconds.
pub fn median_us(samples: &[Duration]) -> f64 {
    let mut micros: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    median(&mut micros)
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    values[values.len() / 2]
}

pub fn time_each(count: usize, mut f: impl FnMut(usize) -> Outcome) -> Outcome<Vec<Duration>> {
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let started = Instant::now();
        f(i)?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

/// A plain store and a follower store, side by side on one disk.
pub struct Local {
    pub store: Store,
    pub follower: Store,
    position: LogPosition,
}

impl Local {
    pub fn open(dir: &Path, replica_dir: &Path) -> Outcome<Self> {
        Ok(Self {
            store: Store::open(dir.join("local"), StoreOptions::default())?,
            follower: Store::open(replica_dir.join("follower"), follower_options())?,
            position: LogPosition::after(0),
        })
    }

    /// `count` times, in a row as a sync write takes them: a local durable commit, the
    /// follower's durable append of that entry and a round trip on `echo`. Returns the
    /// median of each step and the median of their per-write sums, in microseconds: two
    /// fdatasyncs in a row on one disk, like a sync write's, with the same spread.
    pub fn measure(&mut self, count: usize, echo: &mut Echo) -> Outcome<Steps> {
        let (mut commits, mut appends, mut trips, mut paths) = (vec![], vec![], vec![], vec![]);
        for i in 0..count {
            let (commit, entry) = commit_one(&self.store, &mut self.position, i)?;
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
pub struct Steps {
    pub commit: f64,
    pub append: f64,
    pub rtt: f64,
    /// The median of the per-write sums of the three steps.
    pub path: f64,
}

/// A loopback TCP connection to an echo thread.
pub struct Echo {
    client: TcpStream,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Echo {
    pub fn start() -> Outcome<Self> {
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

    pub fn stop(self) {
        drop(self.client);
        let _ = self.thread.join();
    }
}

/// Sync replication written by hand over one loopback connection: the writer's store
/// commits durably, then the writer sends the entry (a length and the payload) and waits
/// for the replica's thread to reply once it appended the entry durably.
pub struct HandRolled {
    store: Store,
    position: LogPosition,
    client: TcpStream,
    thread: JoinHandle<ThreadOutcome>,
}

impl HandRolled {
    /// Its stores: `local` in `dir`, the follower `follower` in `replica_dir`.
    pub fn start(dir: &Path, replica_dir: &Path) -> Outcome<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let follower = Store::open(replica_dir.join("hand-follower"), follower_options())?;
        let thread = std::thread::spawn(move || -> ThreadOutcome {
            let (mut peer, _) = listener.accept()?;
            peer.set_nodelay(true)?;
            let mut length = [0u8; 4];
            while peer.read_exact(&mut length).is_ok() {
                let mut payload = vec![0u8; usize::try_from(u32::from_le_bytes(length))?];
                peer.read_exact(&mut payload)?;
                follower.append_replicated(&[payload])?;
                let lsn = follower.sync_replicated()?;
                peer.write_all(&lsn.to_le_bytes())?;
            }
            follower.close()?;
            Ok(())
        });
        let client = TcpStream::connect(address)?;
        client.set_nodelay(true)?;
        Ok(Self {
            store: Store::open(dir.join("hand-local"), StoreOptions::default())?,
            position: LogPosition::after(0),
            client,
            thread,
        })
    }

    /// The median of `count` replicated writes, in microseconds.
    pub fn measure(&mut self, count: usize) -> Outcome<f64> {
        let mut writes = Vec::with_capacity(count);
        for i in 0..count {
            let (commit, entry) = commit_one(&self.store, &mut self.position, i)?;
            let started = Instant::now();
            let mut frame = u32::try_from(entry.payload.len())?.to_le_bytes().to_vec();
            frame.extend_from_slice(&entry.payload);
            self.client.write_all(&frame)?;
            let mut lsn = [0u8; 8];
            self.client.read_exact(&mut lsn)?;
            writes.push(commit + started.elapsed());
        }
        Ok(median_us(&writes))
    }

    pub fn stop(self) -> Outcome {
        drop(self.client);
        self.thread
            .join()
            .map_err(|_| "the hand-rolled replica panicked")?
            .map_err(|e| e.to_string())?;
        self.store.close()?;
        Ok(())
    }
}

/// Commits write `i` durably to `store`; returns how long that took and the entry, read
/// back from the log at `position` outside the timing (a replica receives the entry, it
/// does not read it).
fn commit_one(
    store: &Store,
    position: &mut LogPosition,
    i: usize,
) -> Outcome<(Duration, RawEntry)> {
    let started = Instant::now();
    store.commit(vec![op(i)], None)?;
    let commit = started.elapsed();
    let entry = store
        .read_log_raw(position, 1, usize::MAX)?
        .pop()
        .ok_or("the committed entry did not read back")?;
    Ok((commit, entry))
}

fn follower_options() -> StoreOptions {
    StoreOptions {
        follower: true,
        ..StoreOptions::default()
    }
}
