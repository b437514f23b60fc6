//! Planned switchover over real TCP on 127.0.0.1, under a steady write load: no write lost,
//! none refused except with the retryable `Paused` error (or, once over, by the old
//! primary's store, which follows the new one), and every replica follows the new primary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use replikv::codec::{encode_key, KeyRef};
use replikv::error::{Error, ReplicationError, StoreError};
use replikv::replication::monitor::request_switchover;
use replikv::replication::primary::Primary;
use replikv::replication::replica::{Replica, ReplicaOptions};
use replikv::replication::status::{LinkState, SyncRole};
use replikv::store::{Durability, Store, StoreOptions};

mod common;

use common::{
    eventually, fast_primary, primary_options, put, replica_options, start_member, start_replica,
    TestResult,
};

/// Writes sync until told to stop or refused for good; returns the keys whose write
/// returned, and how many were paused.
fn write_until_refused(store: &Store, stop: &AtomicBool) -> (Vec<String>, u64) {
    let mut returned = Vec::new();
    let mut paused = 0;
    for i in 0.. {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let key = format!("w{i}");
        match store.commit(put(&key, vec![0x01]), Some(Durability::Sync)) {
            Ok(_) => returned.push(key),
            Err(Error::Replication(ReplicationError::Paused { .. })) => paused += 1,
            Err(Error::Store(StoreError::ReadOnly { .. })) => break,
            Err(other) => panic!("a write failed with a non-retryable error: {other}"),
        }
    }
    (returned, paused)
}

#[test]
fn a_switchover_under_load_loses_nothing_and_the_old_primary_follows_the_new_one() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = fast_primary(dir.path(), 1)?;
    let old_address = primary.address().to_string();
    let eu1 = start_member(dir.path(), &primary, "eu-1")?;
    let us1 = start_member(dir.path(), &primary, "us-1")?;
    eventually("both to register", || primary.status().replicas.len() == 2);
    eventually("both to be members", || {
        eu1.state().primary_peers.len() == 2 && us1.state().primary_peers.len() == 2
    });

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        std::thread::spawn(move || write_until_refused(&store, &stop))
    };
    eventually("some writes", || store.last_lsn() >= 50);
    let switched = primary.switchover("eu-1", "old", Duration::from_secs(10))?;
    let (returned, _paused) = writer.join().expect("the writer never panics");
    stop.store(true, Ordering::Release);
    assert!(!returned.is_empty());
    assert_eq!(switched.to, "eu-1");
    assert_eq!(switched.epoch, 2);

    let new = eu1.take_handed_over().expect("eu-1 became the primary");
    assert_eq!(new.address().to_string(), switched.address);
    assert_eq!(eu1.state().state, LinkState::Promoted);
    assert_eq!(
        new.store().last_lsn(),
        switched.last_lsn,
        "it holds exactly the old log"
    );
    for key in &returned {
        let key = encode_key(KeyRef::Str(key));
        assert!(
            new.store().contains("t", &key)?,
            "a returned write is on the new primary"
        );
    }
    assert_eq!(
        new.store().epoch_history().pairs(),
        &[(1, 1), (2, switched.last_lsn + 1)]
    );

    // The old primary's store follows the new one, from its own position (no resync).
    let old = Replica::attach(
        store.clone(),
        ReplicaOptions {
            primary: switched.address.clone(),
            listen: Some(old_address),
            ..replica_options(&new, None, "old")
        },
    )?;
    eventually("us-1 to follow the new primary", || {
        us1.primary() == switched.address
    });
    let receipt = new
        .store()
        .commit(put("after", vec![0x02]), Some(Durability::Sync))?;
    eventually("both to receive the new epoch's first write", || {
        old.store().last_lsn() == receipt.lsn && us1.store().last_lsn() == receipt.lsn
    });
    assert_eq!(old.state().resyncs, 0);
    assert_eq!(old.store().checksum()?, new.store().checksum()?);

    // And back: the old primary takes over again, as the primary of epoch 3.
    let back = new.switchover("old", "eu-1", Duration::from_secs(10))?;
    assert_eq!((back.to.as_str(), back.epoch), ("old", 3));
    let again = old
        .take_handed_over()
        .expect("the old primary is the primary again");
    assert_eq!(again.store().last_lsn(), back.last_lsn);
    again.close();
    old.close()?;
    us1.close()?;
    new.close();
    eu1.close()?;
    Ok(())
}

#[test]
fn a_switchover_to_a_replica_that_does_not_listen_changes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    let primary = Primary::start(store.clone(), primary_options(None))?;
    let eu1 = Replica::start(
        dir.path().join("eu-1"),
        replica_options(&primary, None, "eu-1"),
    )?;
    eventually("eu-1 to register", || primary.status().replicas.len() == 1);
    let refused = primary.switchover("eu-1", "old", Duration::from_secs(5));
    assert!(
        matches!(&refused, Err(Error::Replication(ReplicationError::Refused { reason }))
            if reason.contains("listen")),
        "{refused:?}"
    );
    store.commit(put("still", vec![0x01]), None)?;
    eu1.close()?;
    primary.close();
    Ok(())
}

/// Asks `primary` over the wire, as `replikv switchover` does, to hand over to `to`, while
/// serving operators' requests as `replikv primary` does; checks that each request it
/// takes changes nothing. Returns the operator's answer and how long it took.
fn request_while_serving(
    primary: &Primary,
    to: &str,
) -> Result<(Result<String, ReplicationError>, Duration), Error> {
    let address = primary.address().to_string();
    let to = to.to_owned();
    let started = Instant::now();
    let requester = std::thread::spawn(move || {
        request_switchover(&address, &to, None, Duration::from_secs(20))
    });
    while !requester.is_finished() {
        let served = primary.serve_switchover_request("old", Duration::from_secs(1))?;
        assert!(served.is_none(), "the refused switchover changed nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    let answer = requester.join().expect("the requester never panics");
    Ok((answer, started.elapsed()))
}

/// Checks that `primary` serves on as before a refused switchover: a sync write is
/// acknowledged (by `replica` among others) and `replica` gets it.
fn still_serving(primary: &Primary, replica: &Replica) -> TestResult {
    let receipt = primary
        .store()
        .commit(put("after", vec![0x02]), Some(Durability::Sync))?;
    eventually("the replica to get the write", || {
        replica.store().last_lsn() == receipt.lsn
    });
    Ok(())
}

#[test]
fn a_switchover_request_to_a_replica_that_is_not_connected_is_refused_at_once_and_the_primary_serves_on(
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_store, primary) = fast_primary(dir.path(), 1)?;
    let eu1 = start_replica(dir.path(), &primary, "eu-1")?;
    eventually("eu-1 to register", || primary.status().replicas.len() == 1);

    let (answer, took) = request_while_serving(&primary, "nobody")?;
    assert!(
        matches!(&answer, Err(ReplicationError::Refused { reason })
            if reason.contains("\"nobody\" is not connected")),
        "{answer:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "refused in {took:?}, not at once"
    );
    let status = primary.status();
    assert_eq!(status.rejected, 1);
    let rejection = status.last_rejection.unwrap_or_default();
    assert!(
        rejection.contains("\"nobody\" is not connected"),
        "{rejection}"
    );

    still_serving(&primary, &eu1)?;
    eu1.close()?;
    primary.close();
    Ok(())
}

#[test]
fn a_switchover_request_that_changes_nothing_leaves_the_primary_serving() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = fast_primary(dir.path(), 1)?;
    let eu1 = start_member(dir.path(), &primary, "eu-1")?;
    let us1 = start_replica(dir.path(), &primary, "us-1")?;
    // Both count: us-1 would not while eu-1, gone, had not recorded that it joined.
    eventually("both to count", || {
        let replicas = primary.status().replicas;
        replicas.len() == 2 && replicas.iter().all(|r| r.sync_state == SyncRole::Quorum)
    });
    // eu-1 stays a member the primary knows, but gone and behind: the request reaches the
    // primary's owner, whose switchover cannot go ahead.
    eu1.close()?;
    eventually("eu-1 to disconnect", || {
        primary
            .status()
            .replicas
            .iter()
            .any(|link| link.name == "eu-1" && link.state == LinkState::Disconnected)
    });
    store.commit(put("missed", vec![0x01]), None)?;

    let (answer, _took) = request_while_serving(&primary, "eu-1")?;
    assert!(
        matches!(&answer, Err(ReplicationError::Refused { reason })
            if reason.starts_with("\"eu-1\" did not hold")),
        "{answer:?}"
    );
    assert_eq!(primary.status().rejected, 1);

    still_serving(&primary, &us1)?;
    us1.close()?;
    primary.close();
    Ok(())
}
