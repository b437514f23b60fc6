//! A primary whose log holds a damaged record that its tables no longer need (the
//! checkpoint covers it, so the store opens and serves): a replica that needs that part
//! of the log is seeded by a snapshot of the tables, over real TCP on 127.0.0.1.

use std::io::{Read, Seek, SeekFrom, Write};

use replikv::log::LogPosition;
use replikv::replication::primary::Primary;
use replikv::store::{Store, StoreOptions};

mod common;

use common::{eventually, primary_options, put, start_replica, TestResult};

#[test]
fn a_new_replica_of_a_primary_with_a_damaged_old_log_record_is_seeded_by_a_snapshot() -> TestResult
{
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("primary");
    let options = StoreOptions {
        segment_bytes: 256 << 10,
        ..StoreOptions::default()
    };
    let store = Store::open(&path, options.clone())?;
    for i in 0..300 {
        store.commit(put(&format!("k{i:03}"), vec![0x5a; 8000]), None)?;
    }
    // Into the tables: the log's first segment is needed by nobody but new replicas.
    store.checkpoint()?;
    let expected = store.checksum()?;
    store.close()?;
    let mut segments: Vec<_> = std::fs::read_dir(path.join("log"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    segments.sort();
    assert!(segments.len() > 2, "{segments:?}");
    // One byte in the middle of the first segment: inside a value, far from any header.
    let mut first = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segments[0])?;
    let middle = first.metadata()?.len() / 2;
    let mut byte = [0u8];
    first.seek(SeekFrom::Start(middle))?;
    first.read_exact(&mut byte)?;
    first.seek(SeekFrom::Start(middle))?;
    first.write_all(&[byte[0] ^ 0x01])?;
    first.sync_all()?;

    let store = Store::open(&path, options)?;
    assert!(
        store
            .read_log(&mut LogPosition::after(0), 1000, usize::MAX)
            .is_err(),
        "the damage is there to be met"
    );
    let primary = Primary::start(store.clone(), primary_options(None))?;
    let replica = start_replica(dir.path(), &primary, "eu-1")?;
    eventually("the replica to hold every entry", || {
        replica.store().last_lsn() == 300
    });
    assert_eq!(replica.store().checksum()?, expected);
    // And a later one too, from the damage on as well.
    let late = start_replica(dir.path(), &primary, "us-1")?;
    eventually("the second replica to hold every entry", || {
        late.store().last_lsn() == 300
    });
    assert_eq!(late.store().checksum()?, expected);
    late.close()?;
    replica.close()?;
    primary.close();
    store.close()?;
    Ok(())
}
