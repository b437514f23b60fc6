//! A sync writer's entry leaves from the thread that made it visible, over the socket the
//! link's task streams on: real sockets on 127.0.0.1, with the task's own frames
//! (heartbeats every few milliseconds, async writers' entries, entries larger than a socket
//! may take at once) on the same connections at the same time. What a thread
//! leaves unsent is covered deterministically by `outbox`'s unit tests.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{put, start_replica, TestResult};
use replikv::replication::primary::PrimaryOptions;
use replikv::replication::quorum::SyncOptions;
use replikv::store::Durability;

#[test]
fn frames_from_writers_threads_and_from_the_task_never_reorder_duplicate_or_drop() -> TestResult {
    let dir = tempfile::tempdir()?;
    let options = PrimaryOptions {
        ship_interval: Duration::ZERO,
        heartbeat_interval: Duration::from_millis(3),
        sync: SyncOptions {
            quorum: 2,
            // A bound for a hung test (a debug build applies megabytes slowly).
            sync_timeout: Duration::from_secs(60),
            ..SyncOptions::default()
        },
        ..PrimaryOptions::default()
    };
    let (store, primary) = common::primary_in(dir.path(), options)?;
    let replicas = [
        start_replica(dir.path(), &primary, "r1")?,
        start_replica(dir.path(), &primary, "r2")?,
    ];
    common::eventually("both replicas to register", || {
        primary.status().replicas.len() == 2
    });
    let store = Arc::new(store);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || -> replikv::Result<()> {
                for i in 0..120 {
                    // Every third writer is async; one in 40 writes is 256 KiB, more than
                    // a loopback socket may take at once. (Larger ones kept a debug
                    // build's replica from acking within the stall timeout of these 3 ms
                    // heartbeats, 1 s, on a loaded machine: the primary then drops the link.)
                    let size = if i % 40 == 7 { 256 << 10 } else { 64 };
                    let value = vec![u8::try_from(w * 31 + i % 200).unwrap_or(0); size];
                    let durability = if w % 3 == 2 {
                        Durability::Async
                    } else {
                        Durability::Sync
                    };
                    let receipt =
                        store.commit(put(&format!("w{w}-{i}"), value), Some(durability))?;
                    if durability == Durability::Sync {
                        assert!(receipt.acked_by.len() >= 2, "{receipt:?}");
                    }
                }
                Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.join().map_err(|_| "a writer panicked")??;
    }
    let last = store.last_lsn();
    for replica in &replicas {
        common::eventually("the replica to catch up", || {
            replica.store().last_lsn() == last
        });
        assert_eq!(replica.store().checksum()?, store.checksum()?);
        let state = replica.state();
        assert_eq!(state.connections, 1, "the link never broke: {state:?}");
        assert_eq!(state.last_error, None);
    }
    assert_eq!(primary.status().rejected, 0);
    for replica in replicas {
        replica.close()?;
    }
    primary.close();
    Ok(())
}
