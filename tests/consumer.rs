//! A `Follower` feeds a primary's log to a consumer that keeps no store (what a cache's
//! invalidator will be), over real TCP on 127.0.0.1: it starts at the primary's current
//! LSN, resumes from its own position, resyncs on a fork and never counts toward a quorum.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use replikv::codec::{decode_entry, encode_key, record_crc, KeyRef};
use replikv::error::ReplicationError;
use replikv::follow::{LogConsumer, Position, Role, SnapshotSink, SnapshotStart};
use replikv::replication::primary::{Primary, PrimaryOptions};
use replikv::replication::replica::{Follower, FollowerOptions};
use replikv::replication::status::{LinkState, SyncRole};
use replikv::store::{Durability, Store, StoreOptions};
use replikv::Error;

mod common;

use common::{eventually, fast_primary, primary_options, put, TestResult};

/// What the recording consumer holds, all in memory as a cache's state would be.
#[derive(Debug, Default)]
struct Memory {
    lineage: u64,
    epoch: u64,
    /// Its position: the last LSN applied (or a snapshot's), and that entry's identity.
    lsn: u64,
    id: (u64, u32),
    /// The LSN of every entry applied, in order.
    applied: Vec<u64>,
    /// The `(table, encoded key)` of every op applied, in order.
    ops: Vec<(String, Vec<u8>)>,
    /// Every snapshot installed: its LSN and the rows it carried.
    snapshots: Vec<(u64, u64)>,
    resyncs: u64,
}

/// A consumer that records what it is fed.
#[derive(Default)]
struct Recorder {
    memory: Arc<Mutex<Memory>>,
    /// A faulty consumer whose resync forgets nothing: every follow forks again.
    forgets_nothing: bool,
}

impl Recorder {
    fn memory(&self) -> MutexGuard<'_, Memory> {
        self.memory
            .lock()
            .expect("no test thread panics holding it")
    }
}

fn refused(reason: String) -> Error {
    ReplicationError::Protocol(reason).into()
}

impl LogConsumer for Recorder {
    fn role(&self) -> Role {
        Role::Consumer
    }

    fn durable(&self) -> bool {
        false
    }

    fn position(&self) -> replikv::Result<Position> {
        let memory = self.memory();
        Ok(Position {
            flushed_lsn: memory.lsn,
            applied_lsn: memory.lsn,
            id: memory.id,
            lineage: memory.lineage,
            epoch: memory.epoch,
            history: Vec::new(),
            store_id: 0,
            held: None,
        })
    }

    fn join_lineage(&self, lineage: u64) -> replikv::Result<()> {
        self.memory().lineage = lineage;
        Ok(())
    }

    fn raise_epoch(&self, epoch: u64, _primary_last_lsn: u64) -> replikv::Result<()> {
        let mut memory = self.memory();
        memory.epoch = memory.epoch.max(epoch);
        Ok(())
    }

    fn apply(&self, payloads: &[Vec<u8>]) -> replikv::Result<(u64, u64)> {
        let mut memory = self.memory();
        for payload in payloads {
            let entry = decode_entry(payload)?;
            if entry.lsn != memory.lsn + 1 {
                return Err(refused(format!("entry {} after {}", entry.lsn, memory.lsn)));
            }
            memory.lsn = entry.lsn;
            memory.id = (entry.epoch, record_crc(payload));
            memory.applied.push(entry.lsn);
            memory
                .ops
                .extend(entry.ops.into_iter().map(|op| (op.table, op.key)));
        }
        Ok((memory.lsn, memory.lsn))
    }

    fn begin_snapshot(&self, start: SnapshotStart) -> replikv::Result<Box<dyn SnapshotSink>> {
        Ok(Box::new(RecordingSink {
            memory: Arc::clone(&self.memory),
            start,
            rows: 0,
        }))
    }

    fn resync(&self, _fork_lsn: u64, _primary: &str) -> replikv::Result<Option<PathBuf>> {
        let mut memory = self.memory();
        memory.resyncs += 1;
        if !self.forgets_nothing {
            let resyncs = memory.resyncs;
            *memory = Memory {
                resyncs,
                ..Memory::default()
            };
        }
        Ok(None)
    }
}

/// Counts the rows it is given and, at the end, moves the consumer to the snapshot's LSN.
struct RecordingSink {
    memory: Arc<Mutex<Memory>>,
    start: SnapshotStart,
    rows: u64,
}

impl SnapshotSink for RecordingSink {
    fn add(&mut self, _table: &str, rows: Vec<(Vec<u8>, Vec<u8>)>) -> replikv::Result<()> {
        self.rows += rows.len() as u64;
        Ok(())
    }

    fn rows(&self) -> u64 {
        self.rows
    }

    fn finish(self: Box<Self>, _expected: &[(String, u64, u64)]) -> replikv::Result<()> {
        let mut memory = self
            .memory
            .lock()
            .expect("no test thread panics holding it");
        memory.lsn = self.start.lsn;
        memory.id = self.start.id;
        memory.lineage = self.start.lineage;
        memory.epoch = memory.epoch.max(self.start.epoch);
        memory.snapshots.push((self.start.lsn, self.rows));
        Ok(())
    }
}

/// A store at `<dir>/<name>` opened with `store`, and a primary serving it with `options`.
fn serve(
    dir: &Path,
    name: &str,
    store: StoreOptions,
    options: PrimaryOptions,
) -> replikv::Result<(Store, Primary)> {
    let store = Store::open(dir.join(name), store)?;
    let primary = Primary::start(store.clone(), options)?;
    Ok((store, primary))
}

fn follower_options(address: &str) -> FollowerOptions {
    FollowerOptions {
        primary: address.to_owned(),
        token: None,
        name: "cache".to_owned(),
        max_backoff: Duration::from_millis(200),
    }
}

/// Starts a follower of `primary` feeding `consumer`.
fn follow(primary: &Primary, consumer: &Arc<Recorder>) -> replikv::Result<Follower> {
    let consumer: Arc<dyn LogConsumer> = Arc::clone(consumer) as _;
    Follower::start(consumer, follower_options(&primary.address().to_string()))
}

/// A primary on a new store `name` under `dir` (default options) holding `count`
/// entries, keys `{prefix}0`, `{prefix}1`...
fn serve_with(
    dir: &Path,
    name: &str,
    prefix: &str,
    count: usize,
) -> replikv::Result<(Store, Primary)> {
    let (store, primary) = serve(dir, name, StoreOptions::default(), primary_options(None))?;
    for i in 0..count {
        commit(&store, &format!("{prefix}{i}"))?;
    }
    Ok((store, primary))
}

/// Commits one entry putting `key` (in table `t`); returns its LSN.
fn commit(store: &Store, key: &str) -> replikv::Result<u64> {
    Ok(store.commit(put(key, vec![0x01]), None)?.lsn)
}

fn keys(names: impl IntoIterator<Item = String>) -> Vec<(String, Vec<u8>)> {
    names
        .into_iter()
        .map(|name| ("t".to_owned(), encode_key(KeyRef::Str(&name))))
        .collect()
}

#[test]
fn a_fresh_consumer_starts_after_the_current_lsn_and_then_gets_every_new_entry_in_order(
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = serve_with(dir.path(), "primary", "old", 20)?;
    let consumer = Arc::new(Recorder::default());
    let follower = follow(&primary, &consumer)?;
    eventually("the snapshot's header", || {
        !consumer.memory().snapshots.is_empty()
    });
    assert_eq!(
        consumer.memory().snapshots,
        vec![(20, 0)],
        "a header, no rows"
    );
    eventually("streaming", || {
        follower.state().state == LinkState::Streaming
    });
    for i in 0..10 {
        commit(&store, &format!("new{i}"))?;
    }
    eventually("the new entries", || consumer.memory().lsn == 30);
    {
        let memory = consumer.memory();
        assert_eq!(memory.applied, (21..=30).collect::<Vec<u64>>());
        assert_eq!(memory.ops, keys((0..10).map(|i| format!("new{i}"))));
    }
    assert_eq!(follower.state().snapshots, 1);
    assert!(primary.slots().is_empty(), "a consumer holds no slot");
    follower.close();
    primary.close();
    Ok(())
}

#[test]
fn a_consumer_that_reconnects_resumes_from_its_position_without_a_snapshot() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = serve_with(dir.path(), "primary", "before", 5)?;
    let consumer = Arc::new(Recorder::default());
    let follower = follow(&primary, &consumer)?;
    eventually("the snapshot's header", || {
        !consumer.memory().snapshots.is_empty()
    });
    for i in 0..5 {
        commit(&store, &format!("first{i}"))?;
    }
    eventually("the first entries", || consumer.memory().lsn == 10);
    follower.close();
    for i in 0..5 {
        commit(&store, &format!("away{i}"))?;
    }
    let again = follow(&primary, &consumer)?;
    eventually("the entries committed while it was away", || {
        consumer.memory().lsn == 15
    });
    assert_eq!(
        consumer.memory().snapshots,
        vec![(5, 0)],
        "no second snapshot"
    );
    assert_eq!(consumer.memory().applied, (6..=15).collect::<Vec<u64>>());
    assert_eq!(again.state().snapshots, 0);
    again.close();
    primary.close();
    Ok(())
}

#[test]
fn a_consumer_whose_position_left_the_log_gets_a_header_only_snapshot() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = serve(
        dir.path(),
        "primary",
        StoreOptions {
            segment_bytes: 4096,
            ..StoreOptions::default()
        },
        PrimaryOptions {
            retain_bytes: Some(8192),
            ..primary_options(None)
        },
    )?;
    for i in 0..3 {
        commit(&store, &format!("before{i}"))?;
    }
    let consumer = Arc::new(Recorder::default());
    let follower = follow(&primary, &consumer)?;
    eventually("the first snapshot", || {
        !consumer.memory().snapshots.is_empty()
    });
    for i in 0..2 {
        commit(&store, &format!("seen{i}"))?;
    }
    eventually("the entries after it", || consumer.memory().lsn == 5);
    follower.close();
    for i in 0..300 {
        store.commit(put(&format!("missed{i}"), vec![0xa5; 30]), None)?;
    }
    primary.retain()?;
    assert!(store.oldest_lsn()? > 6, "the log no longer holds LSN 6");
    let again = follow(&primary, &consumer)?;
    eventually("the second snapshot", || {
        consumer.memory().snapshots.len() == 2
    });
    assert_eq!(consumer.memory().snapshots, vec![(3, 0), (305, 0)]);
    let last = commit(&store, "after")?;
    eventually("the entry after it", || consumer.memory().lsn == last);
    assert_eq!(consumer.memory().applied, vec![4, 5, last]);
    assert_eq!(again.state().snapshots, 1);
    again.close();
    primary.close();
    Ok(())
}

#[test]
fn a_consumer_never_counts_toward_wait_for_or_a_sync_quorum() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = fast_primary(dir.path(), 1)?;
    commit(&store, "before")?;
    let consumer = Arc::new(Recorder::default());
    let follower = follow(&primary, &consumer)?;
    let lsn = commit(&store, "async")?;
    eventually("the consumer's ack", || {
        primary.status().replicas.iter().any(|r| r.acked_lsn == lsn)
    });
    assert_eq!(primary.wait_for(lsn, 1, Duration::from_millis(100)), 0);
    assert_eq!(primary.status().replicas[0].sync_state, SyncRole::Async);
    let refused = store.commit(put("sync", vec![0x02]), Some(Durability::Sync));
    assert!(
        matches!(
            refused,
            Err(Error::Replication(ReplicationError::SyncUnavailable(_)))
        ),
        "{refused:?}"
    );
    follower.close();
    primary.close();
    Ok(())
}

#[test]
fn a_consumer_that_forked_resyncs_and_follows_the_new_primary_from_its_current_lsn() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_first, first_primary) = serve_with(dir.path(), "first", "first", 5)?;
    let consumer = Arc::new(Recorder::default());
    let follower = follow(&first_primary, &consumer)?;
    eventually("the first primary's log", || consumer.memory().lsn == 5);
    // Another store's history: everything the consumer holds is a fork of it.
    let (other, other_primary) = serve_with(dir.path(), "other", "other", 10)?;
    follower.follow(&other_primary.address().to_string());
    eventually("the resync and the new primary's header", || {
        let memory = consumer.memory();
        memory.resyncs == 1 && memory.snapshots == vec![(10, 0)]
    });
    let last = commit(&other, "after")?;
    eventually("the new primary's entries", || {
        consumer.memory().lsn == last
    });
    assert_eq!(consumer.memory().applied, vec![last]);
    let state = follower.state();
    assert_eq!(state.resyncs, 1);
    assert_eq!(
        state.last_resync.and_then(|resynced| resynced.report),
        None,
        "a consumer writes no report"
    );
    assert!(state.diverged.is_none());
    assert_eq!(follower.primary(), other_primary.address().to_string());
    follower.close();
    first_primary.close();
    other_primary.close();
    Ok(())
}

#[test]
fn a_consumer_that_forks_again_after_every_resync_is_retried_with_backoff_not_in_a_hot_loop(
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = serve_with(dir.path(), "primary", "", 0)?;
    commit(&store, "k")?;
    // It says it holds 5 entries of another lineage, and its resync forgets nothing.
    let consumer = Arc::new(Recorder {
        memory: Arc::new(Mutex::new(Memory {
            lineage: 7,
            lsn: 5,
            id: (1, 1),
            ..Memory::default()
        })),
        forgets_nothing: true,
    });
    let follower = follow(&primary, &consumer)?;
    eventually("a first resync", || consumer.memory().resyncs >= 1);
    std::thread::sleep(Duration::from_millis(1500));
    // The backoff doubles from 50 ms to the 200 ms cap: about ten attempts, not thousands.
    let resyncs = consumer.memory().resyncs;
    assert!((2..=20).contains(&resyncs), "{resyncs} resyncs in 1.5 s");
    assert_ne!(
        follower.state().state,
        LinkState::Failed,
        "a consumer never stops"
    );
    follower.close();
    primary.close();
    Ok(())
}

#[test]
fn closing_a_follower_returns_promptly_whether_it_streams_or_backs_off() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = serve_with(dir.path(), "primary", "", 0)?;
    commit(&store, "k")?;
    let consumer = Arc::new(Recorder::default());
    let follower = follow(&primary, &consumer)?;
    eventually("streaming", || {
        follower.state().state == LinkState::Streaming
    });
    let started = Instant::now();
    follower.close();
    follower.close();
    // A bound that catches a hang, far below the backoff it must not wait out.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let before = consumer.memory().lsn;
    commit(&store, "after close")?;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        consumer.memory().lsn,
        before,
        "nothing is applied after close"
    );
    // Nobody listens there: it backs off, for up to 10 s between attempts.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let options = FollowerOptions {
        max_backoff: Duration::from_secs(10),
        ..follower_options(&nowhere.to_string())
    };
    let lost = Follower::start(Arc::new(Recorder::default()), options)?;
    eventually("a failed attempt", || lost.state().last_error.is_some());
    let started = Instant::now();
    drop(lost);
    // A bound that catches a hang, far below the backoff it must not wait out.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    primary.close();
    Ok(())
}

#[test]
fn a_follower_refuses_a_consumer_that_keeps_a_copy_of_the_data() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_, primary) = serve_with(dir.path(), "primary", "", 0)?;
    let replica = Store::open(
        dir.path().join("replica"),
        StoreOptions {
            follower: true,
            ..StoreOptions::default()
        },
    )?;
    let refused = Follower::start(
        Arc::new(replica),
        follower_options(&primary.address().to_string()),
    );
    assert!(
        matches!(
            refused,
            Err(Error::Replication(ReplicationError::Refused { .. }))
        ),
        "a replica's store follows as a Replica"
    );
    primary.close();
    Ok(())
}
