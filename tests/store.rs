//! Behaviour of the public `Store` API: commits and LSNs, reopening and recovery, checksums,
//! log replay, transactions, group commit, waiting for an LSN, and damaged files.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use replikv::codec::{encode_key, KeyRef, Op};
use replikv::error::{LogError, StoreError};
use replikv::log::LogPosition;
use replikv::store::{Store, StoreOptions};
use replikv::Error;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn key(text: &str) -> Vec<u8> {
    encode_key(KeyRef::Str(text))
}

fn put(table: &str, text: &str, value: &[u8]) -> Op {
    Op {
        table: table.to_owned(),
        key: key(text),
        value: Some(value.to_vec()),
    }
}

fn delete(table: &str, text: &str) -> Op {
    Op {
        table: table.to_owned(),
        key: key(text),
        value: None,
    }
}

fn get(store: &Store, table: &str, text: &str) -> Option<Vec<u8>> {
    store
        .get_with(table, &key(text), |value| value.map(<[u8]>::to_vec))
        .expect("reading an open store succeeds")
}

/// Options whose checkpoints come only from `checkpoint_entries`, never from the clock, so a
/// test knows which entries the tables hold durably.
fn options_checkpoint_every(entries: u64) -> StoreOptions {
    StoreOptions {
        checkpoint_entries: entries,
        checkpoint_interval: Duration::from_secs(3600),
        ..StoreOptions::default()
    }
}

/// Copies the store's files while it is open: what a kill -9 leaves behind (the OS page cache
/// is kept, the process's memory is lost). Dropping a `Store` does not simulate that: redb's own
/// drop makes its non-durable commits durable.
fn crash_image(dir: &Path, image: &Path) {
    std::fs::create_dir_all(image.join("log")).expect("the image directory is created");
    std::fs::copy(dir.join("tables.redb"), image.join("tables.redb"))
        .expect("tables.redb is copied");
    for segment in segment_files(dir) {
        let name = segment.file_name().expect("a segment file name");
        std::fs::copy(&segment, image.join("log").join(name)).expect("a segment is copied");
    }
}

/// White-box precondition for the recovery tests: the `applied_lsn` that redb holds durably,
/// read from a scratch copy of the file (so that redb's own repair does not touch the file the
/// store will open). If it already covers every entry, reopening has nothing to replay.
fn durable_applied_lsn(dir: &Path) -> u64 {
    use redb::{ReadableDatabase, TableDefinition};
    const META: TableDefinition<&str, u64> = TableDefinition::new("__meta");
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let copy = scratch.path().join("tables.redb");
    std::fs::copy(dir.join("tables.redb"), &copy).expect("tables.redb is copied");
    let db = redb::Database::open(&copy).expect("the redb file opens");
    let txn = db.begin_read().expect("a read transaction begins");
    let meta = txn
        .open_table(META)
        .expect("the store's metadata table exists");
    let applied = meta
        .get("applied_lsn")
        .expect("the metadata table is readable")
        .expect("applied_lsn is recorded")
        .value();
    applied
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .expect("the log directory is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

/// Opens without letting a panic escape, so that "an error, not a panic" is what is checked.
fn open_without_panic(dir: &Path, options: StoreOptions) -> replikv::Result<Store> {
    catch_unwind(AssertUnwindSafe(|| Store::open(dir, options))).unwrap_or_else(|_| {
        panic!(
            "Store::open panicked on a damaged store at {}",
            dir.display()
        )
    })
}

#[test]
fn test_put_get_delete_round_trip_with_dense_lsns_from_one() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let store = Store::open(tmp.path().join("db"), StoreOptions::default())?;
    assert_eq!(store.last_lsn(), 0, "a new store has committed nothing");
    assert_eq!(
        get(&store, "subscribers", "ana"),
        None,
        "a table never written reads as empty"
    );

    assert_eq!(
        store
            .commit(vec![put("subscribers", "ana", b"\x81\xa1n\xa3Ana")], None)?
            .lsn,
        1
    );
    assert_eq!(store.last_lsn(), 1);
    assert_eq!(
        store
            .commit(vec![put("subscribers", "bo", b"bo-1")], None)?
            .lsn,
        2
    );
    assert_eq!(store.last_lsn(), 2);
    let two_ops = vec![put("subscribers", "bo", b"bo-2"), put("events", "e1", b"")];
    assert_eq!(
        store.commit(two_ops, None)?.lsn,
        3,
        "a transaction of several ops takes one LSN"
    );
    assert_eq!(store.last_lsn(), 3);

    assert_eq!(
        get(&store, "subscribers", "ana"),
        Some(b"\x81\xa1n\xa3Ana".to_vec())
    );
    assert_eq!(
        get(&store, "subscribers", "bo"),
        Some(b"bo-2".to_vec()),
        "the later put wins"
    );
    assert_eq!(
        get(&store, "events", "e1"),
        Some(Vec::new()),
        "an empty value is a value"
    );
    assert_eq!(
        get(&store, "events", "bo"),
        None,
        "tables do not share keys"
    );

    assert_eq!(
        store.commit(vec![delete("subscribers", "ana")], None)?.lsn,
        4
    );
    assert_eq!(store.last_lsn(), 4);
    assert_eq!(
        get(&store, "subscribers", "ana"),
        None,
        "a deleted key reads as None"
    );
    assert_eq!(get(&store, "subscribers", "bo"), Some(b"bo-2".to_vec()));
    assert_eq!(
        store
            .commit(vec![delete("subscribers", "never-written")], None)?
            .lsn,
        5,
        "deleting a missing key is still a committed entry"
    );
    assert_eq!(
        store.tables()?,
        vec!["events".to_owned(), "subscribers".to_owned()]
    );
    store.close()?;
    Ok(())
}

#[test]
fn test_reopen_after_close_keeps_data_and_continues_lsns_and_a_second_opener_is_locked_out(
) -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("db");
    let store = Store::open(&dir, StoreOptions::default())?;

    match Store::open(&dir, StoreOptions::default()) {
        Err(Error::Store(StoreError::Locked {
            path,
            owner,
            command,
            holder,
        })) => {
            assert_eq!(path, dir);
            assert_eq!(command, None, "the holder is this process: no command line");
            assert_eq!(
                owner,
                Some(std::process::id()),
                "the error names the owning pid"
            );
            assert!(
                holder.is_some_and(|h| h.contains("exclusive")),
                "{holder:?}"
            );
        }
        other => panic!("a second open of an open store must be Locked, got {other:?}"),
    }

    for i in 1..=5u8 {
        let lsn = store
            .commit(vec![put("templates", &format!("t{i}"), &[i; 3])], None)?
            .lsn;
        assert_eq!(
            lsn,
            u64::from(i),
            "the refused opener did not disturb the owner"
        );
    }
    store.commit(vec![delete("templates", "t2")], None)?;
    let before = store.checksum()?;

    // A clone outlives close(): close() itself, not the last handle, must release the files.
    let clone = store.clone();
    store.close()?;
    assert!(clone.is_closed());
    assert!(
        matches!(
            clone.get_with("templates", &key("t1"), |_| ()),
            Err(Error::Store(StoreError::Closed { .. }))
        ),
        "a closed store refuses reads"
    );
    assert!(
        matches!(
            clone.commit(vec![put("templates", "late", b"x")], None),
            Err(Error::Store(StoreError::Closed { .. }))
        ),
        "a closed store refuses writes"
    );

    let reopened = Store::open(&dir, StoreOptions::default())?;
    assert_eq!(reopened.last_lsn(), 6);
    assert_eq!(reopened.checksum()?, before);
    for i in [1u8, 3, 4, 5] {
        assert_eq!(
            get(&reopened, "templates", &format!("t{i}")),
            Some(vec![i; 3])
        );
    }
    assert_eq!(
        get(&reopened, "templates", "t2"),
        None,
        "the delete survived the reopen"
    );
    assert_eq!(
        get(&reopened, "templates", "late"),
        None,
        "the refused write left no trace"
    );
    assert_eq!(
        reopened
            .commit(vec![put("templates", "t7", b"7")], None)?
            .lsn,
        7,
        "LSNs continue densely"
    );
    drop(clone);
    reopened.close()?;
    Ok(())
}

#[test]
fn test_reopen_after_drop_without_close_or_a_crash_replays_the_log_after_the_last_checkpoint(
) -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("db");
    let image = tmp.path().join("crashed");
    let store = Store::open(&dir, options_checkpoint_every(3))?;
    for i in 0..11u8 {
        let op = match i % 4 {
            3 => delete("subscribers", &format!("s{}", i - 1)),
            _ => put("subscribers", &format!("s{}", i % 5), &[i; 16]),
        };
        store.commit(vec![op, put("events", &format!("e{i}"), &[i])], None)?;
    }
    let rows: Vec<_> = (0..5)
        .map(|i| get(&store, "subscribers", &format!("s{i}")))
        .collect();
    let before = store.checksum()?;
    assert_eq!(before.lsn, 11);
    crash_image(&dir, &image);
    // No close(): only the log and redb's own drop stand behind the last entries.
    drop(store);

    let durable = durable_applied_lsn(&image);
    assert!(
        durable < 11,
        "precondition: the crashed tables ({durable}) must lag the log (11)"
    );

    for reopen_dir in [&dir, &image] {
        let reopened = Store::open(reopen_dir, options_checkpoint_every(3))?;
        let at = reopen_dir.display();
        assert_eq!(reopened.last_lsn(), 11, "{at}");
        assert_eq!(
            reopened.checksum()?,
            before,
            "{at}: the tables equal the tables before the drop"
        );
        let rows_after: Vec<_> = (0..5)
            .map(|i| get(&reopened, "subscribers", &format!("s{i}")))
            .collect();
        assert_eq!(rows_after, rows, "{at}");
        for i in 0..11u8 {
            assert_eq!(
                get(&reopened, "events", &format!("e{i}")),
                Some(vec![i]),
                "{at}"
            );
        }
        assert_eq!(
            reopened
                .commit(vec![put("events", "after", b"x")], None)?
                .lsn,
            12,
            "{at}: LSNs continue densely"
        );
        reopened.close()?;
    }
    Ok(())
}

#[test]
fn test_checksums_are_equal_for_equal_ops_differ_on_a_changed_value_and_ignore_order() -> TestResult
{
    let tmp = tempfile::tempdir()?;
    let ops = [
        vec![
            put("subscribers", "ana", b"1"),
            put("subscribers", "bo", b"2"),
        ],
        vec![put("templates", "welcome", b"hello")],
        vec![
            put("subscribers", "ana", b"1b"),
            delete("subscribers", "bo"),
        ],
        vec![
            put("subscribers", "cy", b"3"),
            delete("templates", "missing"),
        ],
    ];
    let a = Store::open(tmp.path().join("a"), StoreOptions::default())?;
    let b = Store::open(tmp.path().join("b"), StoreOptions::default())?;
    for transaction in &ops {
        a.commit(transaction.clone(), None)?;
        b.commit(transaction.clone(), None)?;
    }
    let sum_a = a.checksum()?;
    assert_eq!(sum_a.lsn, 4);
    assert_eq!(
        sum_a.tables["subscribers"].rows, 2,
        "ana and cy are live; bo was deleted"
    );
    assert_eq!(sum_a.tables["templates"].rows, 1);
    assert_eq!(sum_a.tables, b.checksum()?.tables);
    assert_eq!(a.table_sum("subscribers")?, sum_a.tables["subscribers"]);

    b.commit(vec![put("subscribers", "cy", b"3-changed")], None)?;
    let sum_b = b.checksum()?;
    assert_ne!(
        sum_a.tables["subscribers"], sum_b.tables["subscribers"],
        "one changed value changes the sum"
    );
    assert_eq!(
        sum_b.tables["subscribers"].rows, 2,
        "an overwrite does not add a row"
    );
    assert_eq!(
        sum_a.tables["templates"], sum_b.tables["templates"],
        "other tables are unaffected"
    );

    let ab = Store::open(tmp.path().join("ab"), StoreOptions::default())?;
    let ba = Store::open(tmp.path().join("ba"), StoreOptions::default())?;
    ab.commit(vec![put("t", "a", b"va")], None)?;
    ab.commit(vec![put("t", "b", b"vb")], None)?;
    ba.commit(vec![put("t", "b", b"vb")], None)?;
    ba.commit(vec![put("t", "a", b"va")], None)?;
    assert_eq!(
        ab.checksum()?.tables,
        ba.checksum()?.tables,
        "insertion order does not matter"
    );
    assert_ne!(ab.table_sum("t")?.checksum, 0);

    for store in [a, b, ab, ba] {
        store.close()?;
    }
    Ok(())
}

#[test]
fn test_replaying_read_log_from_zero_into_an_empty_store_reproduces_its_checksums() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let source = Store::open(tmp.path().join("source"), StoreOptions::default())?;
    for i in 0..40u8 {
        let mut ops = vec![put("events", &format!("e{i}"), &[i, i])];
        if i % 3 == 0 {
            ops.push(put("subscribers", &format!("s{}", i % 7), &[i; 40]));
        }
        if i % 5 == 4 {
            ops.push(delete("events", &format!("e{}", i - 2)));
        }
        source.commit(ops, None)?;
    }

    let copy = Store::open(tmp.path().join("copy"), StoreOptions::default())?;
    let mut position = LogPosition::after(0);
    let mut expected_lsn = 1;
    loop {
        // Small pages, so that the position is carried across calls.
        let entries = source.read_log(&mut position, 7, 1 << 20)?;
        if entries.is_empty() {
            break;
        }
        for entry in entries {
            assert_eq!(
                entry.lsn, expected_lsn,
                "read_log yields every LSN once, in order"
            );
            assert_eq!(
                copy.commit(entry.ops, None)?.lsn,
                entry.lsn,
                "the copy commits at the same LSN"
            );
            expected_lsn += 1;
        }
    }
    assert_eq!(expected_lsn, 41, "every committed entry was read");
    assert_eq!(position.next_lsn(), 41);
    assert_eq!(copy.checksum()?, source.checksum()?);
    source.close()?;
    copy.close()?;
    Ok(())
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario: each refusal is checked against the same LSN count
fn test_transaction_reads_own_writes_and_aborted_empty_or_refused_writes_take_no_lsn() -> TestResult
{
    let tmp = tempfile::tempdir()?;
    let options = StoreOptions {
        max_value_bytes: 1024,
        ..StoreOptions::default()
    };
    let store = Store::open(tmp.path().join("db"), options)?;
    store.commit(
        vec![
            put("subscribers", "ana", b"old"),
            put("subscribers", "bo", b"bo"),
        ],
        None,
    )?;

    let mut tx = store.begin()?;
    tx.put("subscribers", key("ana"), b"new".to_vec())?;
    tx.delete("subscribers", key("bo"))?;
    tx.put("subscribers", key("cy"), b"cy".to_vec())?;
    let read = |tx: &mut replikv::store::Transaction, text: &str| {
        tx.get_with("subscribers", &key(text), |v| v.map(<[u8]>::to_vec))
    };
    assert_eq!(
        read(&mut tx, "ana")?,
        Some(b"new".to_vec()),
        "a transaction sees its own put"
    );
    assert_eq!(
        read(&mut tx, "bo")?,
        None,
        "a transaction sees its own delete"
    );
    assert_eq!(read(&mut tx, "cy")?, Some(b"cy".to_vec()));
    assert_eq!(read(&mut tx, "dee")?, None);
    assert_eq!(
        get(&store, "subscribers", "ana"),
        Some(b"old".to_vec()),
        "others see nothing before commit"
    );
    assert_eq!(tx.len(), 3);
    drop(tx);
    assert_eq!(store.last_lsn(), 1, "an aborted transaction takes no LSN");
    assert_eq!(get(&store, "subscribers", "ana"), Some(b"old".to_vec()));
    assert_eq!(get(&store, "subscribers", "bo"), Some(b"bo".to_vec()));
    assert_eq!(get(&store, "subscribers", "cy"), None);

    let empty = store.begin()?;
    assert!(empty.is_empty());
    assert_eq!(
        empty.commit(None)?.lsn,
        1,
        "an empty commit returns the visible LSN"
    );
    assert_eq!(store.last_lsn(), 1, "an empty commit takes no LSN");
    assert_eq!(store.commit(Vec::new(), None)?.lsn, 1);

    let long_name = "t".repeat(65);
    for bad in ["__x", "", "a b", long_name.as_str()] {
        let refused = store.commit(
            vec![put("subscribers", "ok", b"ok"), put(bad, "k", b"v")],
            None,
        );
        assert!(
            matches!(refused, Err(Error::Store(StoreError::InvalidTable { ref name, .. })) if name == bad),
            "table name {bad:?} must be refused, got {refused:?}"
        );
        let mut tx = store.begin()?;
        assert!(
            matches!(
                tx.put(bad, key("k"), b"v".to_vec()),
                Err(Error::Store(StoreError::InvalidTable { .. }))
            ),
            "a transaction refuses table name {bad:?} at the put"
        );
        assert!(matches!(
            tx.delete(bad, key("k")),
            Err(Error::Store(StoreError::InvalidTable { .. }))
        ));
        assert!(tx.is_empty(), "a refused op is not recorded");
        assert_eq!(tx.commit(None)?.lsn, 1);
    }
    assert!(
        store
            .commit(vec![put(&"t".repeat(64), "k", b"v")], None)
            .is_ok(),
        "64 characters are allowed"
    );
    assert_eq!(store.last_lsn(), 2);

    let big_key = Op {
        table: "subscribers".to_owned(),
        key: vec![b'k'; StoreOptions::default().max_key_bytes + 1],
        value: Some(b"v".to_vec()),
    };
    assert!(matches!(
        store.commit(vec![big_key], None),
        Err(Error::Store(StoreError::TooLarge { what: "key", .. }))
    ));
    assert!(matches!(
        store.commit(vec![put("subscribers", "big", &[0u8; 1025])], None),
        Err(Error::Store(StoreError::TooLarge { what: "value", .. }))
    ));
    let mut tx = store.begin()?;
    assert!(matches!(
        tx.put("subscribers", key("big"), vec![0u8; 1025]),
        Err(Error::Store(StoreError::TooLarge { what: "value", .. }))
    ));
    drop(tx);
    assert!(
        store
            .commit(vec![put("subscribers", "max", &[0u8; 1024])], None)
            .is_ok(),
        "the limit itself is allowed"
    );

    assert_eq!(store.last_lsn(), 3, "refused writes took no LSN");
    assert_eq!(
        get(&store, "subscribers", "ok"),
        None,
        "a refused transaction applied none of its ops"
    );
    assert_eq!(get(&store, "subscribers", "big"), None);
    assert_eq!(
        store
            .commit(vec![put("subscribers", "last", b"x")], None)?
            .lsn,
        4,
        "LSNs stay dense"
    );
    let entries = store.read_log(&mut LogPosition::after(0), usize::MAX, usize::MAX)?;
    let lsns: Vec<u64> = entries.iter().map(|e| e.lsn).collect();
    assert_eq!(
        lsns,
        vec![1, 2, 3, 4],
        "the log holds only the committed entries"
    );
    store.close()?;
    Ok(())
}

#[test]
fn test_group_commit_from_eight_threads_gives_unique_dense_lsns_and_every_write_is_readable(
) -> TestResult {
    const THREADS: usize = 8;
    const COMMITS: usize = 50;
    let tmp = tempfile::tempdir()?;
    let store = Store::open(tmp.path().join("db"), StoreOptions::default())?;
    let mut lsns: Vec<u64> = thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = &store;
                scope.spawn(move || {
                    (0..COMMITS)
                        .map(|i| {
                            let name = format!("w{t}-{i}");
                            store
                                .commit(vec![put("events", &name, name.as_bytes())], None)
                                .expect("a commit succeeds")
                                .lsn
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a writer thread finished"))
            .collect()
    });
    lsns.sort_unstable();
    let expected: Vec<u64> = (1..=(THREADS * COMMITS) as u64).collect();
    assert_eq!(lsns, expected, "LSNs are unique and dense");
    assert_eq!(store.last_lsn(), expected.len() as u64);
    for t in 0..THREADS {
        for i in 0..COMMITS {
            let name = format!("w{t}-{i}");
            assert_eq!(
                get(&store, "events", &name),
                Some(name.clone().into_bytes()),
                "{name} is readable"
            );
        }
    }
    assert_eq!(store.table_sum("events")?.rows, expected.len() as u64);
    store.close()?;
    Ok(())
}

#[test]
fn test_visibility_listener_hears_each_batch_once_with_no_store_lock_held() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let store = Store::open(tmp.path().join("db"), StoreOptions::default())?;
    let heard = Arc::new(Mutex::new(Vec::new()));
    let subscription = {
        let (heard, store) = (Arc::clone(&heard), store.clone());
        store.clone().on_visible(move |lsn| {
            // Reading the store here would deadlock if the leader still held its lock.
            assert!(store.last_lsn() >= lsn, "told before {lsn} was visible");
            heard.lock().expect("no panic while holding it").push(lsn);
        })
    };
    for key in ["a", "b", "c"] {
        store.commit(vec![put("events", key, b"x")], None)?;
    }
    assert_eq!(*heard.lock().expect("not poisoned"), [1, 2, 3]);

    // Concurrent writers share batches: at most one call per batch, never one per writer
    // beyond that, and the last call reaches the last LSN.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            thread::spawn(move || {
                for i in 0..50 {
                    store
                        .commit(vec![put("events", &format!("{w}-{i}"), b"x")], None)
                        .expect("the store is open");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("the writer finished");
    }
    let calls = heard.lock().expect("not poisoned").clone();
    assert!(calls.len() <= 403, "{} calls for 403 commits", calls.len());
    assert_eq!(calls.iter().max(), Some(&store.last_lsn()));

    drop(subscription);
    store.commit(vec![put("events", "after", b"x")], None)?;
    assert_eq!(
        heard.lock().expect("not poisoned").len(),
        calls.len(),
        "unsubscribed"
    );
    store.close()?;
    Ok(())
}

/// Flips one byte in the middle of the written part of the first segment; returns its name
/// and its new content.
fn damage_first_segment(dir: &Path) -> (String, Vec<u8>) {
    let segments = segment_files(dir);
    assert!(
        segments.len() >= 3,
        "precondition: several segments, got {}",
        segments.len()
    );
    let first = &segments[0];
    let mut bytes = std::fs::read(first).expect("the first segment is readable");
    let written = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    assert!(
        written > 1024,
        "precondition: the first segment holds records"
    );
    bytes[written / 2] ^= 0xff;
    std::fs::write(first, &bytes).expect("the first segment is writable");
    let name = first
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a UTF-8 segment name");
    (name.to_owned(), bytes)
}

#[test]
fn test_corruption_in_a_non_last_segment_is_an_error_not_a_panic() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("db");
    let image = tmp.path().join("crashed");
    let options = StoreOptions {
        segment_bytes: 4096,
        ..options_checkpoint_every(u64::MAX)
    };
    let store = Store::open(&dir, options.clone())?;
    for i in 0..64u8 {
        store.commit(vec![put("events", &format!("e{i}"), &[i; 200])], None)?;
    }
    crash_image(&dir, &image);
    drop(store);

    // After a crash no checkpoint covers the first segment: recovery must read through it.
    assert_eq!(
        durable_applied_lsn(&image),
        0,
        "precondition: no checkpoint covers the first segment"
    );
    let (damaged, bytes) = damage_first_segment(&image);
    for attempt in 0..2 {
        match open_without_panic(&image, options.clone()) {
            Err(Error::Log(LogError::Corrupt { segment, .. })) => {
                assert_eq!(segment, damaged, "the error names the damaged segment");
            }
            other => panic!("open #{attempt} of a store with a damaged middle segment must fail as Corrupt, got {other:?}"),
        }
    }
    assert_eq!(
        std::fs::read(image.join("log").join(&damaged))?,
        bytes,
        "a failed open does not rewrite the segment"
    );

    // After a drop the tables cover the whole log, so the open may skip the damaged segment,
    // but reading the log through it must still report it.
    let (damaged, _) = damage_first_segment(&dir);
    match open_without_panic(&dir, options) {
        Err(Error::Log(LogError::Corrupt { segment, .. })) => assert_eq!(segment, damaged),
        Ok(store) => {
            let read = catch_unwind(AssertUnwindSafe(|| {
                store.read_log(&mut LogPosition::after(0), usize::MAX, usize::MAX)
            }))
            .expect("read_log does not panic on a damaged segment");
            assert!(
                matches!(&read, Err(Error::Log(LogError::Corrupt { segment, .. })) if *segment == damaged),
                "reading through a damaged segment must fail as Corrupt, got {read:?}"
            );
            store.close()?;
        }
        Err(other) => panic!("a damaged segment must be reported as Corrupt, got {other:?}"),
    }
    Ok(())
}

#[test]
fn test_a_garbage_or_foreign_tables_file_is_an_error_not_a_panic() -> TestResult {
    let tmp = tempfile::tempdir()?;

    let garbage: Vec<u8> = (0..16_384u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
        .collect();
    for (name, content) in [
        ("noise", garbage.as_slice()),
        ("short", b"not a redb file".as_slice()),
    ] {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir)?;
        std::fs::write(dir.join("tables.redb"), content)?;
        let result = open_without_panic(&dir, StoreOptions::default());
        assert!(
            matches!(result, Err(Error::Store(_))),
            "{name}: a garbage tables.redb must be refused, got {result:?}"
        );
        assert_eq!(
            std::fs::read(dir.join("tables.redb"))?,
            content,
            "{name}: the file is left as it was"
        );
    }

    // A valid redb file that some other program wrote is not a replikv store.
    let dir = tmp.path().join("foreign");
    std::fs::create_dir(&dir)?;
    {
        let db = redb::Database::create(dir.join("tables.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(redb::TableDefinition::<&str, &str>::new("theirs"))?
            .insert("k", "v")?;
        txn.commit()?;
    }
    let result = open_without_panic(&dir, StoreOptions::default());
    assert!(
        matches!(result, Err(Error::Store(StoreError::Corrupt { .. }))),
        "a foreign redb file must be refused as Corrupt, got {result:?}"
    );
    Ok(())
}

#[test]
fn test_reopening_with_a_smaller_transaction_limit_never_drops_a_committed_entry() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("db");
    let image = tmp.path().join("crashed");
    let store = Store::open(&dir, options_checkpoint_every(u64::MAX))?;
    store.commit(vec![put("events", "small", b"s")], None)?;
    assert_eq!(
        store
            .commit(vec![put("templates", "big", &[7u8; 100_000])], None)?
            .lsn,
        2
    );
    crash_image(&dir, &image);
    drop(store);

    let smaller = StoreOptions {
        max_transaction_bytes: 64 << 10,
        ..options_checkpoint_every(u64::MAX)
    };
    // Refusing to open is acceptable; cutting the durable entry as a "torn tail" is not.
    match open_without_panic(&image, smaller) {
        Ok(reopened) => {
            assert_eq!(
                reopened.last_lsn(),
                2,
                "the committed LSN 2 must survive the reopen"
            );
            assert_eq!(get(&reopened, "templates", "big"), Some(vec![7u8; 100_000]));
            reopened.close()?;
        }
        Err(err) => eprintln!("refused with a smaller limit: {err}"),
    }
    let original = Store::open(&image, options_checkpoint_every(u64::MAX))?;
    assert_eq!(
        original.last_lsn(),
        2,
        "the entry is still there with the original limit"
    );
    assert_eq!(get(&original, "templates", "big"), Some(vec![7u8; 100_000]));
    original.close()?;
    Ok(())
}
