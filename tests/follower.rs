//! A follower store takes a primary's entries byte for byte and ends with its tables.

use replikv::codec::{encode_key, KeyRef, Op};
use replikv::error::{Error, StoreError};
use replikv::log::LogPosition;
use replikv::store::{Store, StoreOptions};

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
        primary.commit(vec![
            put("subscribers", &format!("s{i}"), b"\x81\xa1a\x01"),
            put("events", &format!("e{i}"), b"\xc0"),
        ])?;
    }
    primary.commit(vec![Op {
        table: "subscribers".into(),
        key: encode_key(KeyRef::Str("s3")),
        value: None,
    }])?;
    let follower = Store::open(dir.path().join("follower"), follower_options())?;
    let payloads = all_payloads(&primary)?;
    let (first, rest) = payloads.split_at(20);
    assert_eq!(follower.append_replicated(first)?, 20);
    assert_eq!(follower.append_replicated(rest)?, 51);
    assert_eq!(follower.checksum()?, primary.checksum()?);
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
        primary.commit(vec![put("t", &format!("k{i}"), b"\x01")])?;
    }
    let follower = Store::open(dir.path().join("follower"), follower_options())?;
    assert!(matches!(
        follower.commit(vec![put("t", "x", b"\x01")]),
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
    assert_eq!(follower.last_lsn(), 2);
    let garbage = follower.append_replicated(&[vec![0xff; 40]]);
    assert!(
        garbage.is_err(),
        "a payload that does not decode is refused"
    );
    assert_eq!(follower.last_lsn(), 2);
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
    let mut installer = follower.begin_install(view.lsn, view.epoch, view.id, view.lineage)?;
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
    Ok(view.lsn)
}

#[test]
fn a_snapshot_installs_every_table_at_one_lsn_and_streaming_continues_after_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let primary = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    for i in 0..40 {
        primary.commit(vec![
            put("subscribers", &format!("s{i}"), b"\x01"),
            put("events", &format!("e{i}"), b"\x02"),
        ])?;
    }
    let follower = Store::open(dir.path().join("follower"), follower_options())?;
    follower.append_replicated(&all_payloads(&primary)?[..5])?;
    let lsn = copy_snapshot(&primary, &follower)?;
    assert_eq!(lsn, 40);
    assert_eq!(follower.last_lsn(), 40);
    assert_eq!(follower.checksum()?, primary.checksum()?);
    assert_eq!(
        follower.oldest_lsn()?,
        41,
        "the follower's log starts after the snapshot"
    );
    primary.commit(vec![put("events", "later", b"\x03")])?;
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
    Ok(())
}

#[test]
fn a_snapshot_interrupted_before_its_commit_point_leaves_the_old_state() -> TestResult {
    let dir = tempfile::tempdir()?;
    let primary = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    for i in 0..10 {
        primary.commit(vec![put("t", &format!("k{i}"), b"\x01")])?;
    }
    let follower = Store::open(dir.path().join("follower"), follower_options())?;
    follower.append_replicated(&all_payloads(&primary)?[..3])?;
    let before = follower.checksum()?;
    let view = primary.snapshot_view()?;
    let mut installer = follower.begin_install(view.lsn, view.epoch, view.id, view.lineage)?;
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
        primary.commit(vec![put("t", &format!("k{i}"), b"\x01")])?;
    }
    let follower = Store::open(dir.path().join("follower"), follower_options())?;
    let view = primary.snapshot_view()?;
    let mut installer = follower.begin_install(view.lsn, view.epoch, view.id, view.lineage)?;
    installer.add("t", view.rows("t", None, 5)?)?;
    assert!(matches!(
        installer.finish(&view.sums),
        Err(Error::Store(StoreError::Corrupt { .. }))
    ));
    assert_eq!(follower.last_lsn(), 0);
    assert!(follower.checksum()?.tables.is_empty());
    Ok(())
}
