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
