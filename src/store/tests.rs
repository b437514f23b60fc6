//! Reading the newest entries while commits run, and a failed fdatasync that closes the
//! store for good (over an in-memory log).

use super::*;
use crate::codec::{encode_key, KeyRef, Op};
use crate::error::Error;
use crate::log::memfs::MemFs;
use crate::log::{LogPosition, RawEntry};

fn put(key: &str) -> Vec<Op> {
    vec![Op {
        table: "t".to_owned(),
        key: encode_key(KeyRef::Str(key)),
        value: Some(b"\xc3".to_vec()),
    }]
}

/// Every raw entry of `store`, read in steps of `step` entries.
fn read_all(store: &Store, step: usize) -> Vec<RawEntry> {
    let mut position = LogPosition::after(0);
    let mut read = Vec::new();
    loop {
        let batch = store.read_log_raw(&mut position, step, usize::MAX).unwrap();
        if batch.is_empty() {
            return read;
        }
        read.extend(batch);
    }
}

/// Shipping reads the newest entries from memory: on a primary while commits run (never
/// past the visible LSN), and on a follower that appends a primary's entries, they are
/// the entries its files hold once reopened, across segment rolls.
#[test]
fn entries_read_while_committing_are_visible_and_equal_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let small = StoreOptions {
        segment_bytes: 4096,
        ..StoreOptions::default()
    };
    let primary = Store::open(dir.path().join("primary"), small.clone()).unwrap();
    let writer = {
        let primary = primary.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                primary.commit(put(&format!("key-{i}")), None).unwrap();
            }
        })
    };
    let mut position = LogPosition::after(0);
    let mut shipped = Vec::new();
    loop {
        let writing = !writer.is_finished();
        let batch = primary.read_log_raw(&mut position, 7, usize::MAX).unwrap();
        let visible = primary.last_lsn();
        assert!(
            batch.iter().all(|e| e.lsn <= visible),
            "read past {visible}"
        );
        if batch.is_empty() && !writing {
            break;
        }
        shipped.extend(batch);
    }
    writer.join().unwrap();
    assert_eq!(shipped.len(), 300);
    let follower = Store::open(
        dir.path().join("follower"),
        StoreOptions {
            follower: true,
            ..small.clone()
        },
    )
    .unwrap();
    for chunk in shipped.chunks(11) {
        let payloads: Vec<Vec<u8>> = chunk.iter().map(|e| e.payload.clone()).collect();
        follower.append_replicated(&payloads).unwrap();
    }
    // A follower's log readers see what is durable.
    follower.sync_replicated().unwrap();
    assert_eq!(read_all(&follower, 5), shipped);
    assert!(primary.log_segments().unwrap().len() > 3, "segments rolled");
    for (name, store) in [("primary", primary), ("follower", follower)] {
        store.close().unwrap();
        let reopened = Store::open(
            dir.path().join(name),
            StoreOptions {
                follower: name == "follower",
                ..small.clone()
            },
        )
        .unwrap();
        assert_eq!(read_all(&reopened, 300), shipped, "{name}");
    }
}

#[test]
fn a_failed_fdatasync_closes_the_store_and_is_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MemFs::default();
    let log_fs = fs.clone();
    let store = Store::open_with(&dir.path().join("db"), StoreOptions::default(), |_| {
        Ok(Box::new(log_fs))
    })
    .unwrap();
    assert_eq!(store.commit(put("a"), None).unwrap().lsn, 1);
    // The next write reaches the file, its fdatasync fails.
    fs.freeze_after(1);
    let failed = store.commit(put("b"), None).unwrap_err();
    assert!(failed.to_string().contains("fdatasync"), "{failed}");
    assert!(store.is_closed());
    assert_eq!(store.last_lsn(), 1, "the failed write never became visible");
    match store.commit(put("c"), None) {
        Err(Error::Store(StoreError::Closed {
            cause: Some(cause), ..
        })) => {
            assert!(cause.contains("fdatasync"), "{cause}");
        }
        other => panic!("expected a closed store naming the cause, got {other:?}"),
    }
    assert!(matches!(
        store.get_with("t", &encode_key(KeyRef::Str("a")), |v| v.is_some()),
        Err(Error::Store(StoreError::Closed { cause: Some(_), .. }))
    ));
}
