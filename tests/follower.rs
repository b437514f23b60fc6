//! A follower store takes a primary's entries byte for byte and ends with its tables.

use replikv::codec::{encode_key, KeyRef, Op};
use replikv::error::{Error, ReadOnlyReason, StoreError};
use replikv::log::LogPosition;
use replikv::store::{Store, StoreOptions, Watched};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn put(table: &str, key: &str, value: &[u8]) -> Op {
    Op {
        table: table.to_owned(),
        key: encode_key(KeyRef::Str(key)),
        value: Some(value.to_vec()),
    }
}

fn follower_options() -> StoreOptions {
    StoreOptions {
        follower: true,
        ..StoreOptions::default()
    }
}

fn all_payloads(store: &Store) -> Result<Vec<Vec<u8>>, Error> {
    let mut position = LogPosition::after(0);
    Ok(store
        .read_log_raw(&mut position, usize::MAX, usize::MAX)?
        .into_iter()
        .map(|e| e.payload)
        .collect())
}

#[test]
fn a_follower_applying_the_primarys_entries_has_equal_checksums_and_entry_ids() -> TestResult {
    let dir = tempfile::tempdir()?;
    let primary = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    for i in 0..50 {
        primary.commit(
            vec![
                put("subscribers", &format!("s{i}"), b"\x81\xa1a\x01"),
                put("events", &format!("e{i}"), b"\xc0"),
            ],
            None,
        )?;
    }
    primary.commit(
        vec![Op {
            table: "subscribers".into(),
            key: encode_key(KeyRef::Str("s3")),
            value: None,
        }],
        None,
    )?;
    let follower = Store::open(dir.path().join("follower"), follower_options())?;
    let payloads = all_payloads(&primary)?;
    let (first, rest) = payloads.split_at(20);
    assert_eq!(follower.append_replicated(first)?, 20);
    assert_eq!(follower.append_replicated(rest)?, 51);
    assert_eq!(follower.checksum()?, primary.checksum()?);
    // Applied before the follower's own fdatasync: its log is read once that is done.
    assert_eq!(follower.sync_replicated()?, 51);
    for lsn in [0, 1, 20, 51] {
        assert_eq!(
            follower.entry_id(lsn)?,
            primary.entry_id(lsn)?,
            "entry {lsn}"
        );
    }
    assert_eq!(follower.entry_id(52)?, None);
    follower.close()?;
    let reopened = Store::open(dir.path().join("follower"), follower_options())?;
    assert_eq!(reopened.last_lsn(), 51);
    assert_eq!(reopened.checksum()?, primary.checksum()?);
    Ok(())
}

#[test]
fn a_follower_refuses_user_writes_and_entries_out_of_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    let primary = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    for i in 0..5 {
        primary.commit(vec![put("t", &format!("k{i}"), b"\x01")], None)?;
    }
    let follower = Store::open(dir.path().join("follower"), follower_options())?;
    assert!(matches!(
        follower.commit(vec![put("t", "x", b"\x01")], None),
        Err(Error::Store(StoreError::ReadOnly { .. }))
    ));
    assert!(matches!(
        follower.begin(),
        Err(Error::Store(StoreError::ReadOnly { .. }))
    ));
    let payloads = all_payloads(&primary)?;
    let gap = follower.append_replicated(&payloads[1..2]);
    assert!(
        matches!(
            gap,
            Err(Error::Store(StoreError::OutOfOrder {
                expected: 1,
                got: 2
            }))
        ),
        "{gap:?}"
    );
    assert_eq!(follower.append_replicated(&payloads[..2])?, 2);
    let repeat = follower.append_replicated(&payloads[1..2]);
    assert!(
        matches!(
            repeat,
            Err(Error::Store(StoreError::OutOfOrder {
                expected: 3,
                got: 2
            }))
        ),
        "{repeat:?}"
    );
    assert_eq!(follower.readable_lsn(), 2);
    let garbage = follower.append_replicated(&[vec![0xff; 40]]);
    assert!(
        garbage.is_err(),
        "a payload that does not decode is refused"
    );
    assert_eq!(follower.readable_lsn(), 2);
    assert!(
        matches!(
            primary.append_replicated(&payloads[..1]),
            Err(Error::Store(StoreError::ReadOnly { .. }))
        ),
        "a primary takes no replicated entries"
    );
    Ok(())
}

fn copy_snapshot(primary: &Store, follower: &Store) -> Result<u64, Error> {
    let view = primary.snapshot_view()?;
    let mut installer = follower.begin_install(view.start.clone())?;
    for table in view.sums.keys() {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = view.rows(table, after.as_deref(), 7)?;
            let Some((last, _)) = rows.last() else { break };
            after = Some(last.clone());
            installer.add(table, rows)?;
        }
    }
    installer.finish(&view.sums)?;
    Ok(view.start.lsn)
}

#[test]
fn a_snapshot_installs_every_table_at_one_lsn_and_streaming_continues_after_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let primary = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    for i in 0..40 {
        primary.commit(
            vec![
                put("subscribers", &format!("s{i}"), b"\x01"),
                put("events", &format!("e{i}"), b"\x02"),
            ],
            None,
        )?;
    }
    let follower = Store::open(dir.path().join("follower"), follower_options())?;
    let id = follower.store_id()?;
    assert_ne!(
        id,
        primary.store_id()?,
        "each directory has an id of its own"
    );
    follower.append_replicated(&all_payloads(&primary)?[..5])?;
    let lsn = copy_snapshot(&primary, &follower)?;
    assert_eq!(lsn, 40);
    assert_eq!(
        follower.store_id()?,
        id,
        "a snapshot keeps the directory's id"
    );
    assert_eq!(follower.last_lsn(), 40);
    assert_eq!(follower.checksum()?, primary.checksum()?);
    assert_eq!(
        follower.oldest_lsn()?,
        41,
        "the follower's log starts after the snapshot"
    );
    primary.commit(vec![put("events", "later", b"\x03")], None)?;
    let mut position = LogPosition::after(40);
    let later: Vec<Vec<u8>> = primary
        .read_log_raw(&mut position, 10, usize::MAX)?
        .into_iter()
        .map(|e| e.payload)
        .collect();
    assert_eq!(follower.append_replicated(&later)?, 41);
    assert_eq!(follower.checksum()?, primary.checksum()?);
    follower.close()?;
    let reopened = Store::open(dir.path().join("follower"), follower_options())?;
    assert_eq!(reopened.checksum()?, primary.checksum()?);
    assert_eq!(reopened.store_id()?, id);
    Ok(())
}

#[test]
fn a_visibility_listener_may_read_the_store_when_a_snapshot_is_swapped_in() -> TestResult {
    let dir = tempfile::tempdir()?;
    let primary = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    for i in 0..20 {
        primary.commit(vec![put("t", &format!("k{i}"), b"\x01")], None)?;
    }
    let follower = Store::open(dir.path().join("follower"), follower_options())?;
    let heard = Arc::new(Mutex::new(Vec::new()));
    let subscription = {
        let (heard, reader) = (Arc::clone(&heard), follower.clone());
        follower.on_visible(move |lsn| {
            // Needs the lock the swap holds: called under it, this waited forever.
            let oldest = reader.oldest_lsn().expect("the store is open");
            heard.lock().expect("not poisoned").push((lsn, oldest));
        })
    };
    let (done, installed) = mpsc::channel();
    let (from, into) = (primary.clone(), follower.clone());
    thread::spawn(move || done.send(copy_snapshot(&from, &into).map_err(|e| e.to_string())));
    let Ok(lsn) = installed.recv_timeout(Duration::from_secs(60)) else {
        // Unsubscribing would wait for the stuck listener.
        std::mem::forget(subscription);
        return Err("the install never finished: its listener waited on the store's lock".into());
    };
    let lsn = lsn?;
    drop(subscription);
    assert_eq!(lsn, 20);
    assert_eq!(
        *heard.lock().expect("not poisoned"),
        [(20, 21)],
        "told once, of the snapshot's LSN, with the log starting after it"
    );
    Ok(())
}

#[test]
fn a_snapshot_interrupted_before_its_commit_point_leaves_the_old_state() -> TestResult {
    let dir = tempfile::tempdir()?;
    let primary = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    for i in 0..10 {
        primary.commit(vec![put("t", &format!("k{i}"), b"\x01")], None)?;
    }
    let follower = Store::open(dir.path().join("follower"), follower_options())?;
    follower.append_replicated(&all_payloads(&primary)?[..3])?;
    let before = follower.checksum()?;
    let view = primary.snapshot_view()?;
    let mut installer = follower.begin_install(view.start.clone())?;
    installer.add("t", view.rows("t", None, 100)?)?;
    drop(installer);
    follower.close()?;
    assert!(
        dir.path().join("follower/incoming").exists(),
        "staged, not committed"
    );
    let reopened = Store::open(dir.path().join("follower"), follower_options())?;
    assert_eq!(reopened.checksum()?, before);
    assert!(
        !dir.path().join("follower/incoming").exists(),
        "the incomplete staging is removed"
    );
    Ok(())
}

#[test]
fn a_snapshot_whose_checksums_do_not_match_is_refused_and_nothing_changes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let primary = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    for i in 0..10 {
        primary.commit(vec![put("t", &format!("k{i}"), b"\x01")], None)?;
    }
    let follower = Store::open(dir.path().join("follower"), follower_options())?;
    let view = primary.snapshot_view()?;
    let mut installer = follower.begin_install(view.start.clone())?;
    installer.add("t", view.rows("t", None, 5)?)?;
    assert!(matches!(
        installer.finish(&view.sums),
        Err(Error::Store(StoreError::Corrupt { .. }))
    ));
    assert_eq!(follower.last_lsn(), 0);
    assert!(follower.checksum()?.tables.is_empty());
    Ok(())
}

fn is_read_only<T>(result: &Result<T, Error>, why: ReadOnlyReason) -> bool {
    matches!(result, Err(Error::Store(StoreError::ReadOnly { why: w, .. })) if *w == why)
}

#[test]
fn a_replicas_store_opened_as_a_plain_store_is_read_only_and_says_how_to_detach() -> TestResult {
    let dir = tempfile::tempdir()?;
    let primary = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    primary.commit(vec![put("t", "a", b"\x01")], None)?;
    // A new follower is marked in the transaction that creates its tables: even one that
    // never received an entry is a replica's.
    for (name, entries) in [("empty", 0), ("following", 1)] {
        let path = dir.path().join(name);
        let follower = Store::open(&path, follower_options())?;
        follower.append_replicated(&all_payloads(&primary)?[..entries])?;
        follower.close()?;
        let plain = Store::open(&path, StoreOptions::default())?;
        assert_eq!(
            plain.read_only_reason(),
            Some(ReadOnlyReason::BelongsToReplica)
        );
        let refused = plain.commit(vec![put("t", "b", b"\x02")], None);
        let message = refused.as_ref().map_err(ToString::to_string).unwrap_err();
        assert!(
            message.contains("belongs to a replica") && message.contains("replikv detach"),
            "{message}"
        );
        assert!(is_read_only(&refused, ReadOnlyReason::BelongsToReplica));
        assert!(plain.begin().is_err(), "transactions are refused too");
        assert_eq!(plain.last_lsn(), entries as u64, "nothing was written");
        assert_eq!(
            plain.get_with("t", &encode_key(KeyRef::Str("a")), |v| v.is_some())?,
            entries == 1,
            "reads work"
        );
        plain.close()?;
        // Opened as a follower again, it resumes where it was.
        let follower = Store::open(&path, follower_options())?;
        assert_eq!(follower.last_lsn(), entries as u64);
        follower.close()?;
    }
    Ok(())
}

#[test]
fn a_detached_replica_store_is_writable_with_a_lineage_of_its_own() -> TestResult {
    let dir = tempfile::tempdir()?;
    let primary = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    primary.commit(vec![put("t", "a", b"\x01")], None)?;
    let path = dir.path().join("replica");
    let follower = Store::open(&path, follower_options())?;
    follower.adopt_lineage(primary.lineage()?)?;
    follower.append_replicated(&all_payloads(&primary)?)?;
    assert!(
        matches!(
            Store::detach(&path),
            Err(Error::Store(StoreError::Locked { .. }))
        ),
        "a running replica is never detached under it"
    );
    follower.close()?;
    assert!(Store::detach(&path)?, "it was a replica's store");
    assert!(!Store::detach(&path)?, "detaching twice changes nothing");
    let detached = Store::open(&path, StoreOptions::default())?;
    assert_eq!(detached.read_only_reason(), None);
    assert_ne!(detached.lineage()?, primary.lineage()?);
    assert_eq!(detached.commit(vec![put("t", "b", b"\x02")], None)?.lsn, 2);
    detached.close()?;
    assert!(
        Store::detach(dir.path().join("missing")).is_err(),
        "no store is created by detach"
    );
    assert!(!dir.path().join("missing").exists());
    Ok(())
}

#[test]
fn a_plain_store_becomes_a_replicas_once_it_takes_on_a_primarys_history_not_on_open() -> TestResult
{
    let dir = tempfile::tempdir()?;
    let primary = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    primary.commit(vec![put("t", "a", b"\x01")], None)?;
    let path = dir.path().join("store");
    Store::open(&path, StoreOptions::default())?.close()?;
    // Opened as a follower by mistake (a wrong --data): nothing is marked.
    Store::open(&path, follower_options())?.close()?;
    let plain = Store::open(&path, StoreOptions::default())?;
    assert_eq!(plain.read_only_reason(), None);
    plain.close()?;
    // Following for real: the first entry marks it before it is applied.
    let follower = Store::open(&path, follower_options())?;
    follower.append_replicated(&all_payloads(&primary)?)?;
    follower.close()?;
    let plain = Store::open(&path, StoreOptions::default())?;
    assert!(is_read_only(
        &plain.commit(vec![put("t", "b", b"\x01")], None),
        ReadOnlyReason::BelongsToReplica
    ));
    plain.close()?;
    // A store that adopted a lineage is a replica's too, even before its first entry.
    let adopted = dir.path().join("adopted");
    Store::open(&adopted, StoreOptions::default())?.close()?;
    let follower = Store::open(&adopted, follower_options())?;
    follower.adopt_lineage(primary.lineage()?)?;
    follower.close()?;
    let plain = Store::open(&adopted, StoreOptions::default())?;
    assert_eq!(
        plain.read_only_reason(),
        Some(ReadOnlyReason::BelongsToReplica)
    );
    Ok(())
}

#[test]
fn exclusive_work_on_a_follower_never_races_its_replicated_appends() -> TestResult {
    let dir = tempfile::tempdir()?;
    let primary = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    for i in 0..2000 {
        primary.commit(vec![put("t", &format!("k{i}"), b"\x01")], None)?;
    }
    let fast = StoreOptions {
        fsync: false,
        ..follower_options()
    };
    let follower = Store::open(dir.path().join("follower"), fast)?;
    let payloads = all_payloads(&primary)?;
    let appender = {
        let follower = follower.clone();
        std::thread::spawn(move || -> Result<(), Error> {
            for payload in payloads.chunks(1) {
                follower.append_replicated(payload)?;
            }
            Ok(())
        })
    };
    // Scrub moves pending rows into redb: it must be the only one touching them meanwhile.
    while !appender.is_finished() {
        let report = follower.scrub(&mut |_| true)?;
        assert!(report.ok(), "{report:?}");
    }
    appender.join().expect("the appender does not panic")?;
    assert_eq!(follower.checksum()?, primary.checksum()?);
    follower.close()?;
    let reopened = Store::open(dir.path().join("follower"), follower_options())?;
    assert_eq!(reopened.checksum()?, primary.checksum()?);
    for i in [0, 999, 1999] {
        let key = encode_key(KeyRef::Str(&format!("k{i}")));
        assert!(reopened.get_with("t", &key, |v| v.is_some())?, "k{i}");
    }
    Ok(())
}

#[test]
fn write_watchers_are_told_a_reset_when_a_snapshot_or_a_resync_replaces_the_state() -> TestResult {
    let dir = tempfile::tempdir()?;
    let primary = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    for i in 0..30 {
        primary.commit(vec![put("t", &format!("k{i}"), b"\x01")], None)?;
    }
    let follower = Store::open(dir.path().join("follower"), follower_options())?;
    follower.append_replicated(&all_payloads(&primary)?[..3])?;
    let told = Arc::new(Mutex::new(Vec::new()));
    let _watching = {
        let told = Arc::clone(&told);
        follower.watch_writes(Arc::new(move |watched| {
            let seen = match watched {
                Watched::Written { lsn, .. } => format!("written {lsn}"),
                Watched::Reset { lsn } => format!("reset {lsn}"),
            };
            told.lock().unwrap().push(seen);
        }))
    };
    // The snapshot skips writes 4 to 30: a cache in front of the follower must hear of it.
    assert_eq!(copy_snapshot(&primary, &follower)?, 30);
    follower.discard_all()?;
    assert_eq!(*told.lock().unwrap(), ["reset 30", "reset 0"]);
    Ok(())
}
