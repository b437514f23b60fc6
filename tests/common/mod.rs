//! Helpers shared by the replication tests over real TCP on 127.0.0.1.
// Each test crate compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use replikv::codec::{encode_key, KeyRef, Op};
use replikv::replication::primary::{Primary, PrimaryOptions};
use replikv::replication::replica::{OnDiverge, Replica, ReplicaOptions};
use replikv::store::StoreOptions;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A one-op transaction that puts `value` at `key` in table `t`.
pub fn put(key: &str, value: Vec<u8>) -> Vec<Op> {
    vec![Op {
        table: "t".to_owned(),
        key: encode_key(KeyRef::Str(key)),
        value: Some(value),
    }]
}

pub fn primary_options(token: Option<&str>) -> PrimaryOptions {
    PrimaryOptions {
        token: token.map(str::to_owned),
        ship_interval: Duration::from_millis(5),
        ..PrimaryOptions::default()
    }
}

pub fn replica_options(primary: &Primary, token: Option<&str>, name: &str) -> ReplicaOptions {
    ReplicaOptions {
        primary: primary.address().to_string(),
        token: token.map(str::to_owned),
        name: name.to_owned(),
        max_backoff: Duration::from_millis(200),
        store: StoreOptions::default(),
        on_diverge: OnDiverge::Stop,
        listen: None,
    }
}

/// Polls `check` for up to 30 s (a bound for a hung test, not a speed target).
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A replica named `name` of `primary` (no token), in `<dir>/<name>`.
pub fn start_replica(
    dir: &std::path::Path,
    primary: &Primary,
    name: &str,
) -> replikv::Result<Replica> {
    Replica::start(dir.join(name), replica_options(primary, None, name))
}

/// A replica named `name` of `primary` (no token), in `<dir>/<name>`, that answers other
/// members on a port of its own (so that a promotion or a switchover can reach it).
pub fn start_member(
    dir: &std::path::Path,
    primary: &Primary,
    name: &str,
) -> replikv::Result<Replica> {
    let options = ReplicaOptions {
        listen: Some("127.0.0.1:0".to_owned()),
        ..replica_options(primary, None, name)
    };
    Replica::start(dir.join(name), options)
}

/// A primary with `options` serving a new store in `<dir>/primary`.
pub fn primary_in(
    dir: &std::path::Path,
    options: PrimaryOptions,
) -> replikv::Result<(replikv::store::Store, Primary)> {
    let store = replikv::store::Store::open(dir.join("primary"), StoreOptions::default())?;
    let primary = Primary::start(store.clone(), options)?;
    Ok((store, primary))
}

/// A primary serving `<dir>/primary` with sync `quorum`, whose heartbeats (which tell
/// replicas the quorum and the members) come every 20 ms.
pub fn fast_primary(
    dir: &std::path::Path,
    quorum: usize,
) -> replikv::Result<(replikv::store::Store, Primary)> {
    let options = PrimaryOptions {
        heartbeat_interval: Duration::from_millis(20),
        sync: replikv::replication::quorum::SyncOptions {
            quorum,
            ..replikv::replication::quorum::SyncOptions::default()
        },
        ..primary_options(None)
    };
    primary_in(dir, options)
}
