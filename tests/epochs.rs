//! Epochs (DESIGN §1, guarantees 4 and 6): durable epoch histories, deposed stores that
//! refuse writes, fork detection at a follow, and fencing of a deposed primary over real
//! TCP on 127.0.0.1.

use std::path::Path;
use std::time::Duration;

use replikv::codec::{encode_key, KeyRef};
use replikv::error::{Error, ReplicationError};
use replikv::log::LogPosition;
use replikv::replication::primary::{Primary, PrimaryOptions};
use replikv::replication::quorum::SyncOptions;
use replikv::replication::replica::{OnDiverge, Replica, ReplicaOptions};
use replikv::replication::status::LinkState;
use replikv::store::{read_divergence_report, Durability, Store, StoreOptions};

mod common;

use common::{eventually, primary_options, put, replica_options, start_replica, TestResult};

/// The epoch of a fencing refusal, if `result` is one.
/// The newer epoch a write failed for: refused as fenced, or (a sync write that was
/// waiting for its quorum) deposed.
fn fenced<T>(result: Result<T, Error>) -> Option<u64> {
    match result.err()? {
        Error::Replication(
            ReplicationError::Fenced { epoch, .. } | ReplicationError::Deposed { epoch, .. },
        ) => Some(epoch),
        _ => None,
    }
}

fn payloads(store: &Store) -> Result<Vec<Vec<u8>>, Error> {
    let mut position = LogPosition::after(0);
    Ok(store
        .read_log_raw(&mut position, usize::MAX, usize::MAX)?
        .into_iter()
        .map(|e| e.payload)
        .collect())
}

/// Copies a closed store's directory: two stores with one history up to here.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[test]
fn a_begun_epoch_is_durable_and_the_entries_after_it_carry_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreOptions::default())?;
    for i in 0..3 {
        store.commit(put(&format!("k{i}"), vec![0x01]), None)?;
    }
    assert_eq!(store.epoch_history().pairs(), &[(1, 1)]);
    store.begin_epoch(2)?;
    store.commit(put("k3", vec![0x02]), None)?;
    assert_eq!(store.entry_id(3)?.map(|id| id.0), Some(1));
    assert_eq!(store.entry_id(4)?.map(|id| id.0), Some(2));
    assert_eq!(
        fenced(store.begin_epoch(2)),
        Some(2),
        "an epoch begins only once"
    );
    store.close()?;
    let reopened = Store::open(dir.path(), StoreOptions::default())?;
    assert_eq!(reopened.epoch_history().pairs(), &[(1, 1), (2, 4)]);
    assert_eq!(reopened.epoch(), 2);
    reopened.commit(put("k4", vec![0x03]), None)?;
    assert_eq!(reopened.entry_id(5)?.map(|id| id.0), Some(2));
    Ok(())
}

#[test]
fn a_store_that_learns_of_a_newer_epoch_refuses_writes_even_after_a_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreOptions::default())?;
    store.commit(put("before", vec![0x01]), None)?;
    assert!(store.raise_epoch(3)?);
    assert!(!store.raise_epoch(2)?, "an epoch never goes back");
    assert_eq!(
        fenced(store.commit(put("after", vec![0x02]), None)),
        Some(3)
    );
    store.close()?;
    let reopened = Store::open(dir.path(), StoreOptions::default())?;
    assert_eq!(reopened.epoch(), 3);
    assert_eq!(
        fenced(reopened.commit(put("after", vec![0x02]), None)),
        Some(3)
    );
    assert_eq!(reopened.last_lsn(), 1, "nothing was written");
    Ok(())
}

#[test]
fn a_follower_records_where_each_epoch_starts_and_never_goes_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let primary = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    for i in 0..3 {
        primary.commit(put(&format!("a{i}"), vec![0x01]), None)?;
    }
    primary.begin_epoch(2)?;
    for i in 0..2 {
        primary.commit(put(&format!("b{i}"), vec![0x02]), None)?;
    }
    let follower_options = StoreOptions {
        follower: true,
        ..StoreOptions::default()
    };
    let path = dir.path().join("follower");
    let follower = Store::open(&path, follower_options.clone())?;
    follower.append_replicated(&payloads(&primary)?)?;
    assert_eq!(follower.epoch_history().pairs(), &[(1, 1), (2, 4)]);
    follower.close()?;
    let follower = Store::open(&path, follower_options)?;
    assert_eq!(follower.epoch_history(), primary.epoch_history());
    assert_eq!(follower.epoch(), 2);
    // An entry of epoch 1 after entries of epoch 2 is another history, never appended.
    let other = Store::open(dir.path().join("other"), StoreOptions::default())?;
    for i in 0..6 {
        other.commit(put(&format!("o{i}"), vec![0x03]), None)?;
    }
    let sixth = payloads(&other)?.split_off(5);
    let refused = follower.append_replicated(&sixth);
    assert!(
        matches!(
            refused,
            Err(Error::Replication(ReplicationError::Diverged {
                fork_lsn: Some(6),
                ..
            }))
        ),
        "{refused:?}"
    );
    assert_eq!(follower.last_lsn(), 5);
    Ok(())
}

/// The old primary `a` and a copy `b` of it that began epoch 2 after `shared` entries;
/// `a` then wrote `a_only` entries of its own in epoch 1, `b` wrote `b_only` in epoch 2.
fn two_histories(dir: &Path, shared: usize, a_only: usize, b_only: usize) -> TestResult {
    let a = Store::open(dir.join("a"), StoreOptions::default())?;
    for i in 0..shared {
        a.commit(put(&format!("shared{i}"), vec![0x01]), None)?;
    }
    a.close()?;
    copy_dir(&dir.join("a"), &dir.join("b"))?;
    let b = Store::open(dir.join("b"), StoreOptions::default())?;
    b.begin_epoch(2)?;
    for i in 0..b_only {
        b.commit(put(&format!("b{i}"), vec![0x02]), None)?;
    }
    b.close()?;
    let a = Store::open(dir.join("a"), StoreOptions::default())?;
    for i in 0..a_only {
        a.commit(put(&format!("a{i}"), vec![0x03]), None)?;
    }
    a.close()?;
    Ok(())
}

/// `two_histories(10, 4, 3)`, and `<dir>/replica` made to follow the old primary to its
/// end (LSN 14, epoch 1); returns the new primary's store and the primary serving it
/// (epoch 2 from LSN 11).
fn replica_past_the_fork(dir: &Path) -> Result<(Store, Primary), Box<dyn std::error::Error>> {
    two_histories(dir, 10, 4, 3)?;
    let a = Store::open(dir.join("a"), StoreOptions::default())?;
    let old = Primary::start(a.clone(), primary_options(None))?;
    let replica = Replica::start(dir.join("replica"), replica_options(&old, None, "eu-1"))?;
    eventually("the replica to reach LSN 14", || {
        replica.store().last_lsn() == 14
    });
    replica.close()?;
    old.close();
    let b = Store::open(dir.join("b"), StoreOptions::default())?;
    let new = Primary::start(b.clone(), primary_options(None))?;
    Ok((b, new))
}

#[test]
fn a_replica_holding_entries_the_new_primary_never_had_is_refused_with_the_fork() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_b, new) = replica_past_the_fork(dir.path())?;
    // Pointed at the new primary (epoch 2 from LSN 11), it is refused: entries 11..=14
    // are the old primary's only.
    let replica = Replica::start(
        dir.path().join("replica"),
        replica_options(&new, None, "eu-1"),
    )?;
    eventually("the divergence to be detected", || {
        replica.state().state == LinkState::Failed
    });
    let error = replica.state().last_error.unwrap_or_default();
    assert!(
        error.contains("forks from the primary's at LSN 11") && error.contains("holds 4 entries"),
        "{error}"
    );
    assert_eq!(replica.store().last_lsn(), 14, "nothing was merged");
    assert_eq!(replica.store().epoch_history().pairs(), &[(1, 1)]);
    // The loss account: exactly the old primary's entries 11..=14 and their keys.
    let account = replica.state().diverged.expect("the loss account");
    assert_eq!(
        (account.fork_lsn, account.last_lsn, account.entries),
        (11, 14, 4)
    );
    let keys: Vec<_> = (0..4)
        .map(|i| encode_key(KeyRef::Str(&format!("a{i}"))))
        .collect();
    assert_eq!(
        account.touched["t"].iter().cloned().collect::<Vec<_>>(),
        keys
    );
    Ok(())
}

#[test]
fn a_resync_keeps_the_local_only_entries_in_a_report_then_follows_from_scratch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (b, new) = replica_past_the_fork(dir.path())?;
    let options = ReplicaOptions {
        on_diverge: OnDiverge::Resync,
        listen: None,
        ..replica_options(&new, None, "eu-1")
    };
    let replica = Replica::start(dir.path().join("replica"), options)?;
    eventually("the resynced replica to converge", || {
        replica.store().checksum().ok() == b.checksum().ok()
    });
    let state = replica.state();
    assert_eq!(state.resyncs, 1);
    let resynced = state.last_resync.expect("the resync");
    assert_eq!(resynced.divergence.entries, 4);
    let report_path = resynced.report.expect("a replica keeps a report");
    let report = read_divergence_report(&report_path)?;
    assert_eq!(report.fork_lsn, 11);
    assert_eq!(report.primary, new.address().to_string());
    let lsns: Vec<u64> = report.entries.iter().map(|e| e.lsn).collect();
    assert_eq!(lsns, vec![11, 12, 13, 14]);
    assert!(report.entries.iter().all(|e| e.epoch == 1));
    assert_eq!(replica.store().epoch_history(), b.epoch_history());
    // A damaged report is refused, never half read.
    let mut bytes = std::fs::read(&report_path)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let damaged = dir.path().join("damaged.rkvd");
    std::fs::write(&damaged, bytes)?;
    assert!(read_divergence_report(&damaged).is_err());
    Ok(())
}

#[test]
fn a_replica_behind_the_fork_follows_the_new_primary_and_takes_its_epoch() -> TestResult {
    let dir = tempfile::tempdir()?;
    two_histories(dir.path(), 10, 0, 3)?;
    let b = Store::open(dir.path().join("b"), StoreOptions::default())?;
    let new = Primary::start(b.clone(), primary_options(None))?;
    let replica = Replica::start(
        dir.path().join("replica"),
        replica_options(&new, None, "eu-1"),
    )?;
    eventually("the replica to reach LSN 13", || {
        replica.store().last_lsn() == 13
    });
    assert_eq!(replica.store().epoch_history().pairs(), &[(1, 1), (2, 11)]);
    assert_eq!(replica.store().checksum()?, b.checksum()?);
    Ok(())
}

#[test]
fn a_deposed_primary_fails_its_sync_writers_and_takes_no_more_writes() -> TestResult {
    let dir = tempfile::tempdir()?;
    two_histories(dir.path(), 10, 0, 1)?;
    // The old primary, with a registered replica (`eu-1`) that is down: sync writes wait.
    let a = Store::open(dir.path().join("a"), StoreOptions::default())?;
    let options = PrimaryOptions {
        sync: SyncOptions {
            sync_timeout: Duration::from_secs(60),
            ..SyncOptions::default()
        },
        ..primary_options(None)
    };
    let old = Primary::start(a.clone(), options)?;
    let eu1 = start_replica(dir.path(), &old, "eu-1")?;
    eventually("eu-1 to catch up", || eu1.store().last_lsn() == 10);
    eu1.close()?;
    let writer = {
        let a = a.clone();
        std::thread::spawn(move || a.commit(put("lost", vec![0x04]), Some(Durability::Sync)))
    };
    eventually("the sync write to commit locally", || a.last_lsn() == 11);
    // A replica of the new primary (epoch 2) reaches the old one: the old one is deposed.
    let b = Store::open(dir.path().join("b"), StoreOptions::default())?;
    let new = Primary::start(b.clone(), primary_options(None))?;
    let eu2 = start_replica(dir.path(), &new, "eu-2")?;
    eventually("eu-2 to catch up", || eu2.store().last_lsn() == 11);
    assert_eq!(eu2.store().epoch(), 2);
    eu2.close()?;
    let stray = start_replica(dir.path(), &old, "eu-2")?;
    let outcome = writer.join().expect("the writer never panics");
    assert_eq!(
        fenced(outcome),
        Some(2),
        "a deposed primary's sync write fails as fenced, long before its timeout"
    );
    eventually("the stray replica to stop", || {
        stray.state().state == LinkState::Failed
    });
    assert_eq!(fenced(a.commit(put("later", vec![0x05]), None)), Some(2));
    assert_eq!(a.epoch(), 2);
    assert_eq!(
        stray.store().last_lsn(),
        11,
        "it took nothing from the old primary"
    );
    Ok(())
}
