//! Reopening a store's files as a crash left them: the tables of the last checkpoint, and
//! a log whose entries after it are replayed.

use std::path::Path;

use super::{Store, StoreOptions};
use crate::codec::{encode_key, EncodedOps, KeyRef, Op};

/// A copy of a store's files as a crash would leave them (the page cache is kept).
pub(super) fn crash_image(dir: &Path, image: &Path) {
    copy_tables(dir, image);
    copy_log(dir, image);
}

fn copy_tables(dir: &Path, image: &Path) {
    std::fs::create_dir_all(image).unwrap();
    std::fs::copy(dir.join("tables.redb"), image.join("tables.redb")).unwrap();
}

fn copy_log(dir: &Path, image: &Path) {
    std::fs::create_dir_all(image.join("log")).unwrap();
    for segment in std::fs::read_dir(dir.join("log")).unwrap() {
        let segment = segment.unwrap().path();
        std::fs::copy(
            &segment,
            image.join("log").join(segment.file_name().unwrap()),
        )
        .unwrap();
    }
}

fn key(i: usize) -> Vec<u8> {
    encode_key(KeyRef::Str(&format!("user{i:08}@example.com")))
}

fn put(i: usize, value: Vec<u8>) -> Op {
    Op {
        table: "subs".into(),
        key: key(i),
        value: Some(value),
    }
}

fn value(store: &Store, i: usize) -> Option<Vec<u8>> {
    store
        .get_with("subs", &key(i), |v| v.map(<[u8]>::to_vec))
        .unwrap()
}

/// A bulk load far larger than the log reads whole at recovery (its record is replayed
/// in pieces, on a thread of its own), between smaller entries: a crash before the
/// checkpoint after it gives back every row, with the same sums.
#[test]
fn a_crash_before_the_checkpoint_after_a_bulk_load_replays_it_whole() {
    const ROWS: usize = 40_000;
    let dir = tempfile::tempdir().unwrap();
    let (path, image) = (dir.path().join("store"), dir.path().join("image"));
    let options = StoreOptions {
        checkpoint_entries: u64::MAX,
        checkpoint_interval: std::time::Duration::from_secs(3600),
        ..StoreOptions::default()
    };
    let store = Store::open(&path, options.clone()).unwrap();
    store
        .commit(vec![put(0, b"before".to_vec())], None)
        .unwrap();
    store.checkpoint().unwrap();
    copy_tables(&path, &image);
    let rows: Vec<Op> = (1..=ROWS)
        .map(|i| put(i, vec![(i % 251) as u8; 700 + i % 300]))
        .collect();
    let mut chunks = rows.chunks(4096).map(|chunk| {
        let mut ops = EncodedOps::default();
        ops.extend(chunk);
        ops
    });
    let mut load = store.begin_streamed(chunks.next().unwrap(), None).unwrap();
    for chunk in chunks {
        load.push(chunk).unwrap();
    }
    load.commit().unwrap();
    let mut after = vec![put(7, b"after".to_vec())];
    after.push(Op {
        value: None,
        ..put(8, Vec::new())
    });
    store.commit(after, None).unwrap();
    let sums = store.checksum().unwrap();
    copy_log(&path, &image);

    let reopened = Store::open(&image, options).unwrap();
    assert_eq!(reopened.last_lsn(), store.last_lsn());
    assert_eq!(reopened.checksum().unwrap(), sums);
    assert_eq!(value(&reopened, 0), Some(b"before".to_vec()));
    assert_eq!(value(&reopened, 7), Some(b"after".to_vec()));
    assert_eq!(value(&reopened, 8), None);
    assert_eq!(
        value(&reopened, ROWS),
        Some(vec![(ROWS % 251) as u8; 700 + ROWS % 300])
    );
}
