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

/// The payload of entry `lsn` (epoch 1) holding `ops`, committed at `timestamp_ms`.
fn forged(lsn: u64, timestamp_ms: u64, ops: &[Op]) -> Vec<u8> {
    let mut payload = Vec::new();
    for word in [lsn, 1, timestamp_ms] {
        payload.extend_from_slice(&word.to_le_bytes());
    }
    payload.extend(crate::codec::encode_ops(ops));
    payload
}

/// An entry from a primary that a local write could never make (a table name that is
/// empty, reserved or invalid), or with a commit time past year 9999, is refused whole,
/// before anything of its batch is appended: the store reopens as it was (a table named
/// "" made redb panic, and the store could not be opened again).
#[test]
fn entries_a_local_write_could_not_make_are_refused_with_nothing_appended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("follower");
    let options = StoreOptions {
        follower: true,
        ..StoreOptions::default()
    };
    let store = Store::open(&path, options.clone()).unwrap();
    let good = put("k")[0].clone();
    store
        .append_replicated(&[forged(1, 1, std::slice::from_ref(&good))])
        .unwrap();
    assert_eq!(store.sync_replicated().unwrap(), 1);
    let op = |table: &str, key: Vec<u8>, value: &[u8]| Op {
        table: table.to_owned(),
        key,
        value: Some(value.to_vec()),
    };
    let key = encode_key(KeyRef::Str("k2"));
    let bad = [
        (1, op("", key.clone(), b"\xc3")),
        (1, op("__meta", key.clone(), b"\xc3")),
        (1, op("a b", key.clone(), b"\xc3")),
        (u64::MAX, good.clone()),
    ];
    for (timestamp_ms, op) in bad {
        let batch = [
            forged(2, 1, std::slice::from_ref(&good)),
            forged(3, timestamp_ms, std::slice::from_ref(&op)),
        ];
        let err = store.append_replicated(&batch).unwrap_err();
        assert!(
            matches!(
                err,
                crate::Error::Replication(crate::error::ReplicationError::Protocol(_))
            ),
            "{op:?} at {timestamp_ms}: {err}"
        );
        let last = store.sync_replicated().unwrap();
        assert_eq!(last, 1, "{op:?}: nothing of its batch is appended");
    }
    store.close().unwrap();
    let reopened = Store::open(&path, options).unwrap();
    assert_eq!(reopened.last_lsn(), 1);
    assert_eq!(reopened.tables().unwrap(), vec!["t".to_owned()]);
}
