//! Replication over real TCP on 127.0.0.1: streaming, resume, big entries, refusals.

use std::time::Duration;

use replikv::codec::{encode_key, KeyRef, Op};
use replikv::replication::primary::{Primary, PrimaryOptions};
use replikv::replication::replica::Replica;
use replikv::replication::status::LinkState;
use replikv::store::{Store, StoreOptions};

mod common;

use common::{eventually, primary_options, put, replica_options, TestResult};

/// Makes `<dir>/replica` a follower holding `entries` entries of another store's history.
fn follower_of_another_store(dir: &std::path::Path, entries: usize) -> TestResult {
    let other = Store::open(dir.join("other"), StoreOptions::default())?;
    for i in 0..entries {
        other.commit(put(&format!("theirs{i}"), vec![0x09]), None)?;
    }
    let mut position = replikv::log::LogPosition::after(0);
    let theirs: Vec<Vec<u8>> = other
        .read_log_raw(&mut position, usize::MAX, usize::MAX)?
        .into_iter()
        .map(|e| e.payload)
        .collect();
    let options = StoreOptions {
        follower: true,
        ..StoreOptions::default()
    };
    let follower = Store::open(dir.join("replica"), options)?;
    follower.append_replicated(&theirs)?;
    follower.close()?;
    Ok(())
}

#[test]
fn a_replica_streams_every_entry_and_ends_with_the_primarys_checksums() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    for i in 0..20 {
        store.commit(put(&format!("before{i}"), vec![0xc0]), None)?;
    }
    let primary = Primary::start(store.clone(), primary_options(Some("s3cret")))?;
    let replica = Replica::start(
        dir.path().join("replica"),
        replica_options(&primary, Some("s3cret"), "eu-1"),
    )?;
    for i in 0..200 {
        store.commit(put(&format!("after{i}"), vec![0xa1, b'x']), None)?;
    }
    eventually("the replica to catch up", || {
        replica.store().last_lsn() == 220
    });
    assert_eq!(replica.store().checksum()?, store.checksum()?);
    eventually("the ack to reach the primary", || {
        primary.wait_for(220, 1, Duration::from_millis(10)) == 1
    });
    let status = primary.status();
    assert_eq!(status.replicas.len(), 1);
    assert_eq!(status.replicas[0].name, "eu-1");
    assert_eq!(status.replicas[0].acked_lsn, 220);
    assert_eq!(status.replicas[0].lag_lsn, 0);
    assert!(matches!(replica.state().state, LinkState::Streaming));
    replica.close()?;
    primary.close();
    Ok(())
}

#[test]
fn a_restarted_replica_resumes_where_it_stopped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    let primary = Primary::start(store.clone(), primary_options(None))?;
    let replica = Replica::start(
        dir.path().join("replica"),
        replica_options(&primary, None, "r1"),
    )?;
    for i in 0..50 {
        store.commit(put(&format!("a{i}"), vec![0x01]), None)?;
    }
    eventually("the first half", || replica.store().last_lsn() == 50);
    replica.close()?;
    drop(replica);
    for i in 0..50 {
        store.commit(put(&format!("b{i}"), vec![0x02]), None)?;
    }
    let replica = Replica::start(
        dir.path().join("replica"),
        replica_options(&primary, None, "r1"),
    )?;
    eventually("the second half", || replica.store().last_lsn() == 100);
    assert_eq!(replica.store().checksum()?, store.checksum()?);
    assert_eq!(
        replica.state().connections,
        1,
        "one connection after the restart"
    );
    Ok(())
}

#[test]
fn an_entry_larger_than_a_frame_arrives_whole() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    let primary = Primary::start(store.clone(), primary_options(None))?;
    let replica = Replica::start(
        dir.path().join("replica"),
        replica_options(&primary, None, "big"),
    )?;
    let ops: Vec<Op> = (0..40)
        .map(|i| Op {
            table: "blobs".into(),
            key: encode_key(KeyRef::Int(i)),
            value: Some(vec![i as u8; 1 << 20]),
        })
        .collect();
    store.commit(ops, None)?;
    eventually("the 40 MiB entry", || replica.store().last_lsn() == 1);
    assert_eq!(replica.store().checksum()?, store.checksum()?);
    Ok(())
}

#[test]
fn a_wrong_token_is_refused_and_counted_while_others_keep_streaming() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    let primary = Primary::start(store.clone(), primary_options(Some("right")))?;
    let good = Replica::start(
        dir.path().join("good"),
        replica_options(&primary, Some("right"), "good"),
    )?;
    let bad = Replica::start(
        dir.path().join("bad"),
        replica_options(&primary, Some("wrong"), "bad"),
    )?;
    store.commit(put("k", vec![0x01]), None)?;
    eventually("the bad replica to give up", || {
        bad.state().state == LinkState::Failed
    });
    assert!(bad
        .state()
        .last_error
        .unwrap_or_default()
        .contains("authentication"));
    eventually("the good replica", || good.store().last_lsn() == 1);
    assert!(primary.status().rejected >= 1);
    assert_eq!(bad.store().last_lsn(), 0);
    Ok(())
}

#[test]
fn a_replica_whose_history_forks_is_refused_as_diverged() -> TestResult {
    let dir = tempfile::tempdir()?;
    follower_of_another_store(dir.path(), 1)?;
    let store = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    store.commit(put("ours", vec![0x01]), None)?;
    let primary = Primary::start(store.clone(), primary_options(None))?;
    let replica = Replica::start(
        dir.path().join("replica"),
        replica_options(&primary, None, "forked"),
    )?;
    eventually("the divergence to be detected", || {
        replica.state().state == LinkState::Failed
    });
    assert!(replica
        .state()
        .last_error
        .unwrap_or_default()
        .contains("diverged"));
    assert_eq!(
        replica.store().checksum()?.tables.len(),
        1,
        "nothing was streamed over the fork"
    );
    Ok(())
}

#[test]
fn a_monitor_gets_the_status_report_with_the_token_and_is_refused_without() -> TestResult {
    use replikv::replication::monitor::fetch_status;
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    let primary = Primary::start(store.clone(), primary_options(Some("tok")))?;
    let replica = Replica::start(
        dir.path().join("replica"),
        replica_options(&primary, Some("tok"), "r1"),
    )?;
    store.commit(put("k", vec![0x01]), None)?;
    eventually("the replica", || replica.store().last_lsn() == 1);
    let address = primary.address().to_string();
    let report = fetch_status(&address, Some("tok"), Duration::from_secs(10))?;
    assert_eq!(report.last_lsn, 1);
    assert_eq!(report.replicas.len(), 1);
    assert_eq!(report.replicas[0].name, "r1");
    assert!(fetch_status(&address, Some("nope"), Duration::from_secs(10)).is_err());
    Ok(())
}

#[test]
fn a_replica_behind_the_retained_log_is_reseeded_by_a_snapshot_and_converges() -> TestResult {
    let dir = tempfile::tempdir()?;
    let options = StoreOptions {
        segment_bytes: 4096,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path().join("primary"), options)?;
    for i in 0..300 {
        store.commit(put(&format!("k{i}"), vec![0xa5; 30]), None)?;
    }
    let primary = Primary::start(
        store.clone(),
        PrimaryOptions {
            retain_bytes: Some(8192),
            ..primary_options(None)
        },
    )?;
    primary.retain()?;
    assert!(store.oldest_lsn()? > 1, "the log was cut");
    let replica = Replica::start(
        dir.path().join("replica"),
        replica_options(&primary, None, "late"),
    )?;
    eventually("the snapshot", || replica.state().snapshots == 1);
    // A restart right after the snapshot resumes from it: the log after a snapshot starts
    // after its LSN, and the snapshot recorded that entry's identity.
    replica.close()?;
    drop(replica);
    let replica = Replica::start(
        dir.path().join("replica"),
        replica_options(&primary, None, "late"),
    )?;
    eventually("the reconnection", || {
        replica.state().connections == 1 && replica.state().state == LinkState::Streaming
    });
    assert_eq!(replica.state().snapshots, 0, "no second snapshot");
    for i in 0..20 {
        store.commit(put(&format!("after{i}"), vec![0x01]), None)?;
    }
    eventually("the stream after it", || {
        replica.store().last_lsn() == store.last_lsn()
    });
    assert_eq!(replica.store().checksum()?, store.checksum()?);
    replica.close()?;
    drop(replica);
    let again = Replica::start(
        dir.path().join("replica"),
        replica_options(&primary, None, "late"),
    )?;
    store.commit(put("last", vec![0x02]), None)?;
    eventually("a plain resume", || {
        again.store().last_lsn() == store.last_lsn()
    });
    assert_eq!(
        again.state().snapshots,
        0,
        "a resume inside the log needs no snapshot"
    );
    Ok(())
}

#[test]
fn a_store_of_another_lineage_behind_the_log_is_refused_not_overwritten() -> TestResult {
    let dir = tempfile::tempdir()?;
    let options = StoreOptions {
        segment_bytes: 4096,
        ..StoreOptions::default()
    };
    follower_of_another_store(dir.path(), 5)?;
    let store = Store::open(dir.path().join("primary"), options)?;
    for i in 0..300 {
        store.commit(put(&format!("k{i}"), vec![0xa5; 30]), None)?;
    }
    let primary = Primary::start(
        store.clone(),
        PrimaryOptions {
            retain_bytes: Some(8192),
            ..primary_options(None)
        },
    )?;
    primary.retain()?;
    assert!(store.oldest_lsn()? > 6);
    let replica = Replica::start(
        dir.path().join("replica"),
        replica_options(&primary, None, "foreign"),
    )?;
    eventually("the refusal", || replica.state().state == LinkState::Failed);
    assert!(replica
        .state()
        .last_error
        .unwrap_or_default()
        .contains("lineage"));
    assert_eq!(
        replica.store().last_lsn(),
        5,
        "its own history is untouched"
    );
    Ok(())
}

#[test]
fn a_sync_writer_waiting_on_a_primary_that_stops_fails_at_once_not_at_its_timeout() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    // A timeout far longer than the test: the old behaviour (a timeout error) shows as a
    // different error, not as a slow pass.
    let options = PrimaryOptions {
        sync: replikv::replication::quorum::SyncOptions {
            quorum: 1,
            sync_timeout: Duration::from_secs(20),
            ..replikv::replication::quorum::SyncOptions::default()
        },
        ..primary_options(None)
    };
    let primary = Primary::start(store.clone(), options)?;
    let replica = Replica::start(
        dir.path().join("eu-1"),
        replica_options(&primary, None, "eu-1"),
    )?;
    eventually("eu-1 to register", || primary.status().replicas.len() == 1);
    // Registered but gone: a sync write waits for it.
    replica.close()?;
    eventually("eu-1 to be gone", || {
        !primary.status().replicas[0].state.is_connected()
    });
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            store.commit(put("k", vec![0x01]), Some(replikv::store::Durability::Sync))
        })
    };
    eventually("the write to be committed and waiting", || {
        store.last_lsn() == 1
    });
    primary.close();
    let outcome = writer.join().expect("the writer never panics");
    assert!(
        matches!(
            &outcome,
            Err(replikv::Error::Replication(
                replikv::error::ReplicationError::Stopped { lsn: 1, acked_by }
            )) if acked_by.is_empty()
        ),
        "{outcome:?}"
    );
    Ok(())
}
