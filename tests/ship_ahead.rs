//! A primary that ships ahead (`PrimaryOptions::ship_ahead`) over real sockets: every sync
//! write returns once it is durable here and in the replica's log (so that the two
//! fdatasyncs overlap), and the replica shows it soon after, once the primary's next frame
//! says it is durable there: a replica never shows more than the primary has made durable.

mod common;

use std::time::{Duration, Instant};

use replikv::codec::{encode_key, KeyRef, Op};
use replikv::replication::primary::PrimaryOptions;
use replikv::replication::quorum::SyncOptions;
use replikv::replication::replica::Replica;
use replikv::store::Durability;

use common::TestResult;

fn put(i: usize) -> Vec<Op> {
    vec![Op {
        table: "consent".into(),
        key: encode_key(KeyRef::Str(&format!("user{i}"))),
        value: Some(b"\xc3".to_vec()),
    }]
}

#[test]
fn sync_writes_shipped_ahead_are_durable_on_the_replica_when_they_return_and_shown_soon_after(
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let options = PrimaryOptions {
        ship_interval: Duration::ZERO,
        sync: SyncOptions::default(),
        ship_ahead: true,
        ..PrimaryOptions::default()
    };
    let (store, primary) = common::primary_in(dir.path(), options)?;
    let replica = Replica::start(
        dir.path().join("replica"),
        common::replica_options(&primary, None, "r1"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.commit(put(0), Some(Durability::Sync)).is_err() {
        assert!(Instant::now() < deadline, "the replica never registered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let follower = replica.store();
    for i in 1..200 {
        let receipt = store.commit(put(i), Some(Durability::Sync))?;
        assert_eq!(receipt.acked_by, vec!["r1".to_owned()]);
        assert!(
            follower.synced_lsn() >= receipt.lsn,
            "acked means durable there"
        );
        assert!(
            follower.readable_lsn() <= store.last_lsn(),
            "never shown before it is durable on the primary"
        );
        let key = encode_key(KeyRef::Str(&format!("user{i}")));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !follower.contains("consent", &key)? {
            assert!(
                Instant::now() < deadline,
                "write {i} never shown on the replica"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    replica.close()?;
    primary.close();
    store.close()?;
    Ok(())
}
