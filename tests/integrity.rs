//! Every stored value carries a CRC: damage to `tables.redb` is reported (naming the table and
//! key) by reads, scans and scrub instead of being returned as data; format-1 files (values
//! without a CRC) are migrated on open.

use std::ops::Bound;
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use replikv::codec::{encode_key, KeyRef, Op};
use replikv::error::StoreError;
use replikv::store::{Store, StoreOptions};
use replikv::Error;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A value whose bytes are easy to find in the file (msgpack stores a str as is).
const CANARY: &[u8] = b"\xd9\x20consent-granted-2026-11-25-canary!";

fn put(table: &str, key: &str, value: &[u8]) -> Op {
    Op {
        table: table.to_owned(),
        key: encode_key(KeyRef::Str(key)),
        value: Some(value.to_vec()),
    }
}

fn key(text: &str) -> Vec<u8> {
    encode_key(KeyRef::Str(text))
}

/// Flips one bit inside every copy of `needle` in the file (redb may keep stale copies in
/// free pages; one of them is the live row). Returns how many copies were changed.
fn flip_inside(path: &Path, needle: &[u8]) -> usize {
    let mut bytes = std::fs::read(path).expect("the file is readable");
    let starts: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, window)| *window == needle)
        .map(|(at, _)| at)
        .collect();
    for &at in &starts {
        bytes[at + needle.len() / 2] ^= 0x01;
    }
    std::fs::write(path, bytes).expect("the file is writable");
    starts.len()
}

fn store_with_canary(dir: &Path) -> Result<(), Error> {
    let store = Store::open(dir, StoreOptions::default())?;
    store.commit(
        vec![
            put("subscribers", "ana@example.com", CANARY),
            put("subscribers", "bob@example.com", b"\xc3"),
            put("events", "e1", b"\xc2"),
        ],
        None,
    )?;
    store.close()
}

fn names_the_row(err: &Error) -> bool {
    matches!(err, Error::Store(StoreError::DamagedRow { table, key: k, .. })
        if table == "subscribers" && *k == key("ana@example.com"))
}

#[test]
fn a_byte_flipped_in_a_stored_value_is_reported_by_get_scan_and_scrub() -> TestResult {
    let dir = tempfile::tempdir()?;
    store_with_canary(dir.path())?;
    assert!(flip_inside(&dir.path().join("tables.redb"), CANARY) >= 1);

    let store = Store::open(dir.path(), StoreOptions::default())?;
    let read = store.get_with("subscribers", &key("ana@example.com"), |v| {
        v.map(<[u8]>::to_vec)
    });
    let err = read.expect_err("a damaged value is never returned as data");
    assert!(names_the_row(&err), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("'subscribers'") && message.contains("'ana@example.com'"),
        "{message}"
    );
    let scan = store.scan(
        "subscribers",
        Bound::Unbounded,
        Bound::Unbounded,
        false,
        100,
    );
    assert!(names_the_row(
        &scan.expect_err("a scan stops at the damage")
    ));

    // The undamaged rows still read, and scrub names exactly the damaged one.
    assert_eq!(
        store.get_with("subscribers", &key("bob@example.com"), |v| v
            .map(<[u8]>::to_vec))?,
        Some(b"\xc3".to_vec())
    );
    let mut calls = 0;
    let report = store.scrub(&mut |_| {
        calls += 1;
        true
    })?;
    assert!(calls >= 1, "progress is reported at least once, at the end");
    assert!(!report.ok());
    assert_eq!(report.rows_checked(), 3);
    assert_eq!(report.tables["subscribers"], 2);
    assert_eq!(report.damaged.len(), 1, "{:?}", report.damaged);
    assert_eq!(report.damaged[0].table, "subscribers");
    assert_eq!(report.damaged[0].key, Some(key("ana@example.com")));
    assert!(report.damaged[0].reason.contains("CRC"));

    // Overwriting the damaged row repairs the row, never fails the write.
    store.commit(vec![put("subscribers", "ana@example.com", b"\xc2")], None)?;
    store.close()?;
    let store = Store::open(dir.path(), StoreOptions::default())?;
    assert_eq!(
        store.get_with("subscribers", &key("ana@example.com"), |v| v
            .map(<[u8]>::to_vec))?,
        Some(b"\xc2".to_vec())
    );
    let report = store.scrub(&mut |_| true)?;
    assert!(
        report.damaged.iter().all(|d| d.key.is_none()),
        "no damaged row is left, only the stats of the table it was in: {:?}",
        report.damaged
    );
    Ok(())
}

#[test]
fn scrub_of_a_sound_store_checks_every_row_including_unflushed_writes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreOptions::default())?;
    for i in 0..100 {
        store.commit(vec![put("t", &format!("k{i:03}"), &[0x01])], None)?;
    }
    store.commit(
        vec![Op {
            table: "t".into(),
            key: key("k007"),
            value: None,
        }],
        None,
    )?;
    let report = store.scrub(&mut |_| true)?;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.rows_checked(), 99);
    assert_eq!(report.lsn, 101);
    Ok(())
}

#[test]
fn scrub_reports_recorded_stats_that_disagree_with_the_rows() -> TestResult {
    let dir = tempfile::tempdir()?;
    store_with_canary(dir.path())?;
    {
        let db = redb::Database::create(dir.path().join("tables.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(TableDefinition::<&str, (u64, u64)>::new("__stats"))?
            .insert("events", (5, 12345))?;
        txn.commit()?;
    }
    let store = Store::open(dir.path(), StoreOptions::default())?;
    let report = store.scrub(&mut |_| true)?;
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.damaged[0].table, "events");
    assert_eq!(report.damaged[0].key, None);
    assert!(report.damaged[0]
        .reason
        .contains("recorded stats say 5 rows"));
    Ok(())
}

/// Rewrites a store's tables as format 1 wrote them: values without their CRC.
fn downgrade_to_format_1(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let db = redb::Database::create(path)?;
    let txn = db.begin_write()?;
    let names: Vec<String> = txn
        .list_tables()?
        .map(|h| h.name().to_owned())
        .filter(|n| !n.starts_with("__"))
        .collect();
    for name in names {
        let mut table = txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name))?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> = table
            .iter()?
            .map(|row| {
                let (k, v) = row.expect("readable");
                let v = v.value();
                (k.value().to_vec(), v[..v.len() - 4].to_vec())
            })
            .collect();
        for (k, v) in rows {
            table.insert(k.as_slice(), v.as_slice())?;
        }
    }
    txn.open_table(TableDefinition::<&str, u64>::new("__meta"))?
        .insert("format_version", 1)?;
    txn.commit()?;
    Ok(())
}

fn format_version(path: &Path) -> Result<Option<u64>, Box<dyn std::error::Error>> {
    let db = redb::Database::create(path)?;
    let txn = db.begin_read()?;
    let meta = txn.open_table(TableDefinition::<&str, u64>::new("__meta"))?;
    Ok(meta.get("format_version")?.map(|v| v.value()))
}

#[test]
fn a_format_1_store_is_migrated_on_open_and_keeps_its_data_and_checksums() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreOptions::default())?;
    // More rows than one migration batch, in two tables.
    let rows: Vec<Op> = (0..5000)
        .map(|i| {
            put(
                if i % 2 == 0 { "a" } else { "b" },
                &format!("k{i}"),
                &[i as u8],
            )
        })
        .collect();
    store.commit(rows, None)?;
    let before = store.checksum()?;
    store.close()?;
    let tables = dir.path().join("tables.redb");
    downgrade_to_format_1(&tables)?;
    assert_eq!(format_version(&tables)?, Some(1));

    let store = Store::open(dir.path(), StoreOptions::default())?;
    assert_eq!(
        store.checksum()?,
        before,
        "checksums are over the logical values"
    );
    assert_eq!(
        store.get_with("b", &key("k4999"), |v| v.map(<[u8]>::to_vec))?,
        Some(vec![4999u32 as u8])
    );
    let report = store.scrub(&mut |_| true)?;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.rows_checked(), 5000);
    store.close()?;
    assert_eq!(format_version(&tables)?, Some(2));
    Ok(())
}

#[test]
fn a_store_from_a_newer_release_is_refused_and_left_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    store_with_canary(dir.path())?;
    let tables = dir.path().join("tables.redb");
    {
        let db = redb::Database::create(&tables)?;
        let txn = db.begin_write()?;
        txn.open_table(TableDefinition::<&str, u64>::new("__meta"))?
            .insert("format_version", 99)?;
        txn.commit()?;
    }
    let refused = Store::open(dir.path(), StoreOptions::default());
    match refused {
        Err(Error::Store(StoreError::Corrupt { reason })) => {
            assert!(reason.contains("newer release"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(format_version(&tables)?, Some(99));
    Ok(())
}
