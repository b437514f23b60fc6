//! `Primary::verify` over real TCP on 127.0.0.1: equal replicas are equal under a steady
//! write load, and a replica whose file was changed behind its back is caught.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use replikv::codec::{encode_key, KeyRef, Op};
use replikv::replication::monitor::fetch_verify;
use replikv::replication::primary::{Primary, PrimaryOptions};
use replikv::replication::verify::{Verdict, VerifyReport};
use replikv::store::{Store, StoreOptions};

mod common;

use common::{eventually, start_replica, TestResult};

const STATS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("__stats");

fn put(table: &str, key: &str, value: &[u8]) -> Vec<Op> {
    vec![Op {
        table: table.to_owned(),
        key: encode_key(KeyRef::Str(key)),
        value: Some(value.to_vec()),
    }]
}

/// Commits to `events` from another thread until the returned flag is set.
fn steady_writer(store: &Store) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (store, flag) = (store.clone(), Arc::clone(&stop));
    let writer = std::thread::spawn(move || {
        let mut written = 0;
        while !flag.load(Ordering::Relaxed) {
            store
                .commit(put("events", &format!("e{written}"), &[0xc3]), None)
                .expect("a commit on an open store");
            written += 1;
        }
        written
    });
    (stop, writer)
}

/// Verifies until every replica is comparable (a replica that just reconnected may still
/// be catching up), for at most 30 s.
fn verify_all_comparable(primary: &Primary) -> replikv::Result<VerifyReport> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = primary.verify(Duration::from_secs(5))?;
        let comparable = report
            .replicas
            .iter()
            .all(|r| r.verdict != Verdict::NotComparable);
        if comparable || Instant::now() > deadline {
            return Ok(report);
        }
    }
}

/// Changes the value of `key` in `table` of a stopped store's redb file the way a bug in
/// the apply path would: a valid stored value (its CRC matches) and the table's stats
/// updated to match, so that the file is consistent and scrub finds nothing.
fn rewrite_row_behind_its_back(
    store_dir: &Path,
    table: &str,
    key: &str,
    value: &[u8],
) -> TestResult {
    let db = Database::open(store_dir.join("tables.redb"))?;
    let key = encode_key(KeyRef::Str(key));
    let rows: TableDefinition<&[u8], &[u8]> = TableDefinition::new(table);
    let old = {
        let read = db.begin_read()?;
        let stored = read
            .open_table(rows)?
            .get(key.as_slice())?
            .ok_or("no such row")?;
        let stored = stored.value();
        stored[..stored.len() - 4].to_vec()
    };
    let mut sealed = value.to_vec();
    let crc = [
        table.as_bytes(),
        &[0],
        &(key.len() as u32).to_le_bytes(),
        &key,
        value,
    ]
    .iter()
    .fold(0, |crc, part| crc32c::crc32c_append(crc, part));
    sealed.extend_from_slice(&crc.to_le_bytes());
    let row_hash = |value: &[u8]| {
        xxhash_rust::xxh3::xxh3_64_with_seed(value, xxhash_rust::xxh3::xxh3_64(&key))
    };
    let write = db.begin_write()?;
    {
        write
            .open_table(rows)?
            .insert(key.as_slice(), sealed.as_slice())?;
        let mut stats = write.open_table(STATS)?;
        let (count, checksum) = stats.get(table)?.ok_or("no stats")?.value();
        let checksum = checksum
            .wrapping_sub(row_hash(&old))
            .wrapping_add(row_hash(value));
        stats.insert(table, (count, checksum))?;
    }
    write.commit()?;
    Ok(())
}

#[test]
fn equal_replicas_are_reported_equal_under_a_steady_write_load() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    let primary = Primary::start(store.clone(), PrimaryOptions::default())?;
    let replicas = [
        start_replica(dir.path(), &primary, "eu-1")?,
        start_replica(dir.path(), &primary, "us-1")?,
    ];
    let (stop, writer) = steady_writer(&store);
    eventually("writes to reach both replicas", || {
        replicas.iter().all(|r| r.store().last_lsn() > 100)
    });
    for _ in 0..5 {
        let report = verify_all_comparable(&primary)?;
        assert!(report.ok(), "{report}");
        assert_eq!(report.compared(), 2, "{report}");
        for replica in &report.replicas {
            assert_eq!(replica.verdict, Verdict::Equal, "{report}");
            assert_eq!(replica.tables.len(), 1, "{report}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().expect("the writer does not panic") > 0);
    for replica in &replicas {
        replica.close()?;
    }
    primary.close();
    Ok(())
}

#[test]
fn a_row_changed_behind_a_stopped_replicas_back_is_reported_different() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    for i in 0..100 {
        store.commit(put("subscribers", &format!("s{i}"), &[0xc2]), None)?;
    }
    let primary = Primary::start(store.clone(), PrimaryOptions::default())?;
    let eu = start_replica(dir.path(), &primary, "eu-1")?;
    let us = start_replica(dir.path(), &primary, "us-1")?;
    eventually("both replicas to catch up", || {
        eu.store().last_lsn() == 100 && us.store().last_lsn() == 100
    });
    eu.close()?;
    drop(eu);
    rewrite_row_behind_its_back(&dir.path().join("eu-1"), "subscribers", "s7", &[0xc3])?;
    let eu = start_replica(dir.path(), &primary, "eu-1")?;
    let (stop, writer) = steady_writer(&store);
    // Compared once it holds events too: a verify at LSN 100 would see one table only.
    eventually("eu-1 to apply events", || eu.store().last_lsn() > 100);
    let report = verify_all_comparable(&primary)?;
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer does not panic");
    assert!(!report.ok(), "{report}");
    let [eu_check, us_check] = &report.replicas[..] else {
        panic!("two replicas expected: {report}");
    };
    assert_eq!(
        (eu_check.name.as_str(), eu_check.verdict),
        ("eu-1", Verdict::Different),
        "{report}"
    );
    let verdicts = eu_check.table_verdicts();
    assert_eq!(
        verdicts,
        [
            ("events", Verdict::Equal),
            ("subscribers", Verdict::Different)
        ],
        "{report}"
    );
    assert_eq!(
        (us_check.name.as_str(), us_check.verdict),
        ("us-1", Verdict::Equal),
        "{report}"
    );
    // `replikv verify` gets the same answer over the wire.
    let fetched = fetch_verify(
        &primary.address().to_string(),
        None,
        Duration::from_secs(30),
    )?;
    let verdicts: Vec<_> = fetched
        .replicas
        .iter()
        .map(|r| (r.name.as_str(), r.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [("eu-1", Verdict::Different), ("us-1", Verdict::Equal)],
        "{fetched}"
    );
    // The change is consistent: scrub, which checks a file against itself, sees nothing.
    assert!(eu.store().scrub(&mut |_| true)?.ok());
    eu.close()?;
    us.close()?;
    primary.close();
    Ok(())
}
