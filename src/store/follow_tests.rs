//! A follower applies a batch before its fdatasync: its readers see the entries at once,
//! its log's readers and its acks only once they are durable, and its tables are never
//! durable past its log.

use std::time::Duration;

use super::{Store, StoreOptions};
use crate::codec::{encode_key, KeyRef, Op};
use crate::log::memfs::MemFs;
use crate::log::{Log, LogOptions, LogPosition};

pub(super) fn put(key: &str) -> Vec<Op> {
    vec![Op {
        table: "t".to_owned(),
        key: encode_key(KeyRef::Str(key)),
        value: Some(b"\xc3".to_vec()),
    }]
}

/// The payloads of `count` entries committed one by one on a primary at `path`.
fn primary_entries(path: &std::path::Path, count: usize) -> Vec<Vec<u8>> {
    entries_named(path, "key-", count)
}

/// The payloads of `count` entries committed one by one on a primary at `path`, whose
/// keys start with `prefix`.
pub(super) fn entries_named(path: &std::path::Path, prefix: &str, count: usize) -> Vec<Vec<u8>> {
    let primary = Store::open(path, StoreOptions::default()).unwrap();
    for i in 0..count {
        primary.commit(put(&format!("{prefix}{i}")), None).unwrap();
    }
    let mut position = LogPosition::after(0);
    let entries = primary
        .read_log_raw(&mut position, count, usize::MAX)
        .unwrap();
    primary.close().unwrap();
    assert_eq!(entries.len(), count);
    entries.into_iter().map(|e| e.payload).collect()
}

/// A follower whose log lives in `fs`, so that what a power loss would keep can be read.
fn follower_on(dir: &std::path::Path, fs: &MemFs, options: &StoreOptions) -> Store {
    let log_fs = fs.clone();
    Store::open_with(
        &dir.join("follower"),
        StoreOptions {
            follower: true,
            ..options.clone()
        },
        |_| Ok(Box::new(log_fs)),
    )
    .unwrap()
}

/// The last LSN a power loss would leave in the log of `fs`.
fn durable_log_lsn(fs: &MemFs) -> u64 {
    let mut last = 0;
    drop(
        Log::open(
            Box::new(fs.power_loss_image()),
            LogOptions::default(),
            0,
            |entry| {
                last = entry.lsn();
                Ok(())
            },
        )
        .unwrap(),
    );
    last
}

#[test]
fn a_follower_shows_entries_before_its_fdatasync_and_ships_them_after() {
    let dir = tempfile::tempdir().unwrap();
    let payloads = primary_entries(&dir.path().join("primary"), 10);
    let fs = MemFs::default();
    let follower = follower_on(dir.path(), &fs, &StoreOptions::default());
    assert_eq!(follower.append_replicated(&payloads[..6]).unwrap(), 6);
    // Readable at once: the rows and the readable LSN.
    assert_eq!(follower.readable_lsn(), 6);
    let key = encode_key(KeyRef::Str("key-5"));
    assert!(follower.contains("t", &key).unwrap());
    // Not durable: a power loss would keep none of it, and neither the log's readers nor
    // the durable position see it.
    assert_eq!(durable_log_lsn(&fs), 0);
    assert_eq!(follower.last_lsn(), 0);
    let mut position = LogPosition::after(0);
    let read = follower.read_log_raw(&mut position, 100, usize::MAX);
    assert!(
        read.unwrap().is_empty(),
        "the log's readers stop at what is durable"
    );
    // A sync makes it durable and visible to them.
    assert_eq!(follower.sync_replicated().unwrap(), 6);
    assert_eq!(durable_log_lsn(&fs), 6);
    let read = follower
        .read_log_raw(&mut position, 100, usize::MAX)
        .unwrap();
    assert_eq!(read.len(), 6);
    follower.append_replicated(&payloads[6..]).unwrap();
    follower.close().unwrap();
    assert_eq!(durable_log_lsn(&fs), 10, "a close syncs what was applied");
}

#[test]
fn a_followers_tables_are_never_durable_past_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let payloads = primary_entries(&dir.path().join("primary"), 400);
    let fs = MemFs::default();
    // Checkpoints (durable commits of the tables) after every other entry.
    let busy = StoreOptions {
        checkpoint_entries: 2,
        checkpoint_interval: Duration::from_millis(1),
        ..StoreOptions::default()
    };
    let follower = follower_on(dir.path(), &fs, &busy);
    let mut checkpointed = 0;
    for chunk in payloads.chunks(4) {
        follower.append_replicated(chunk).unwrap();
        // The tables' durable LSN first: the log's durable end only grows after it.
        let tables = follower
            .with_open(|open| Ok(open.tables.durable_lsn()))
            .unwrap();
        let log = durable_log_lsn(&fs);
        assert!(
            tables <= log,
            "the tables are durable at LSN {tables}, the log only up to {log}"
        );
        checkpointed = checkpointed.max(tables);
    }
    assert!(
        checkpointed > 0,
        "no checkpoint ran: the test proved nothing"
    );
    follower.close().unwrap();
}
