//! Promotion over real TCP on 127.0.0.1: a replica becomes the primary of a new epoch
//! without reopening its store, keeps every acknowledged sync write, and the old
//! primary's unshipped async writes are the exact loss account when it tries to follow.

use std::time::Duration;

use replikv::error::{Error, ReplicationError};
use replikv::replication::primary::{Primary, PrimaryOptions};
use replikv::replication::replica::{promote_stopped, OnDiverge, Replica, ReplicaOptions};
use replikv::replication::status::LinkState;
use replikv::store::{Durability, Store, StoreOptions};

mod common;

use common::{
    eventually, fast_primary, primary_options, put, replica_options, start_member, start_replica,
    TestResult,
};

#[test]
fn a_promoted_replica_keeps_every_sync_write_and_the_old_primary_accounts_for_the_rest(
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let old_store = Store::open(dir.path().join("old"), StoreOptions::default())?;
    // Async entries wait 60 s to ship; a sync write ships at once.
    let lazy = PrimaryOptions {
        ship_interval: Duration::from_secs(60),
        heartbeat_interval: Duration::from_millis(20),
        ..primary_options(None)
    };
    let old = Primary::start(old_store.clone(), lazy)?;
    let replica = start_replica(dir.path(), &old, "eu-1")?;
    eventually("eu-1 to register", || old.status().replicas.len() == 1);
    for i in 0..5 {
        old_store.commit(
            put(&format!("consent{i}"), vec![0x01]),
            Some(Durability::Sync),
        )?;
    }
    let acknowledged = old_store.last_lsn();
    for i in 0..3 {
        old_store.commit(
            put(&format!("event{i}"), vec![0x02]),
            Some(Durability::Async),
        )?;
    }
    let old_last = old_store.last_lsn();
    eventually("a heartbeat with the old primary's last LSN", || {
        let state = replica.state();
        state.primary_last_lsn == old_last && state.primary_members == 1
    });
    old.close();
    old_store.close()?;

    let (new, promotion) = replica.promote(primary_options(None), false)?;
    assert_eq!(promotion.epoch, 2);
    assert_eq!(promotion.start_lsn, acknowledged + 1);
    assert_eq!(promotion.reached, vec!["eu-1".to_owned()]);
    assert!(!promotion.forced);
    assert_eq!(promotion.possible_loss, Some((acknowledged + 1, old_last)));
    let store = new.store().clone();
    assert_eq!(
        store.last_lsn(),
        acknowledged,
        "every acknowledged sync write is here"
    );
    let receipt = store.commit(put("after", vec![0x03]), None)?;
    assert_eq!(store.entry_id(receipt.lsn)?.map(|id| id.0), Some(2));
    replica.close()?;
    assert!(
        !store.is_closed(),
        "the promoted store belongs to the new primary"
    );

    // The old primary's directory, following the new primary, is refused with exactly
    // its three unshipped async entries as the account.
    let options = ReplicaOptions {
        on_diverge: OnDiverge::Stop,
        listen: None,
        ..replica_options(&new, None, "old")
    };
    let rejoining = Replica::start(dir.path().join("old"), options)?;
    eventually("the old primary's divergence", || {
        rejoining.state().state == LinkState::Failed
    });
    let account = rejoining.state().diverged.expect("the loss account");
    assert_eq!(
        (account.fork_lsn, account.last_lsn, account.entries),
        (acknowledged + 1, old_last, 3)
    );
    assert_eq!(
        rejoining.store().last_lsn(),
        old_last,
        "nothing was merged or dropped"
    );
    Ok(())
}

#[test]
fn a_promotion_that_cannot_reach_enough_members_is_refused_unless_forced() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = fast_primary(dir.path(), 1)?;
    let eu1 = start_replica(dir.path(), &primary, "eu-1")?;
    let us1 = start_replica(dir.path(), &primary, "us-1")?;
    store.commit(put("k", vec![0x01]), None)?;
    eventually("both replicas to hear of two members", || {
        eu1.state().primary_members == 2 && us1.state().primary_members == 2
    });
    let refused = eu1.promote(primary_options(None), false);
    assert!(
        matches!(&refused, Err(Error::Replication(ReplicationError::Refused { reason }))
            if reason.contains("must reach 2")),
        "{:?}",
        refused.err()
    );
    eventually("eu-1 to keep following", || {
        eu1.store().last_lsn() == 1 && eu1.state().state == LinkState::Streaming
    });
    primary.close();
    let (_forced, promotion) = eu1.promote(primary_options(None), true)?;
    assert!(promotion.forced);
    assert_eq!((promotion.needed, promotion.epoch), (2, 2));
    Ok(())
}

/// A candidate that lags behind what the member with the newest log still keeps cannot
/// adopt that log: it is told why by the member, and told to promote that member (forcing
/// adopts the same log the same way), which works.
#[test]
fn a_candidate_whose_gap_the_newest_member_no_longer_keeps_is_told_to_promote_that_member(
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = fast_primary(dir.path(), 1)?;
    let eu1 = start_member(dir.path(), &primary, "eu-1")?;
    let us1 = start_member(dir.path(), &primary, "us-1")?;
    // A sync write before any member registers is refused, not queued.
    eventually("the members to register", || {
        primary.status().replicas.len() == 2
    });
    store.commit(put("first", vec![0x01]), Some(Durability::Sync))?;
    eventually("both to hear of two members", || {
        eu1.state().primary_members == 2 && us1.state().primary_members == 2
    });
    eventually("eu-1 to hold it", || eu1.store().synced_lsn() == 1);
    // Back where us-1 heard it answers, as a member with a configured address would be.
    let eu1_listens = eu1.listen_address().map(|address| address.to_string());
    eu1.close()?;
    // Two segments' worth while eu-1 is away; us-1 then drops the older one.
    for i in 0..300 {
        store.commit(put(&format!("k{i}"), vec![0x02; 8 << 10]), None)?;
    }
    let last = store
        .commit(put("last", vec![0x03]), Some(Durability::Sync))?
        .lsn;
    eventually("us-1 to hold it", || us1.store().synced_lsn() == last);
    us1.store().compact()?;
    assert!(us1.store().drop_log_before(last)? > 0);
    assert!(us1.store().oldest_lsn()? > 2);
    primary.close();
    store.close()?;
    let back = ReplicaOptions {
        listen: eu1_listens,
        ..replica_options(&primary, None, "eu-1")
    };
    let eu1 = Replica::start(dir.path().join("eu-1"), back)?;
    for force in [false, true] {
        let refused = eu1.promote(primary_options(None), force);
        assert!(
            matches!(&refused, Err(Error::Replication(ReplicationError::Refused { reason }))
                if reason.contains("no longer retained")
                    && reason.contains("forcing does not help: promote \"us-1\"")),
            "{:?}",
            refused.err()
        );
    }
    let (_new, promotion) = us1.promote(primary_options(None), false)?;
    assert_eq!(promotion.start_lsn, last + 1);
    eu1.close()?;
    Ok(())
}

#[test]
fn the_other_replica_re_pointed_at_the_promoted_one_follows_it_from_its_position() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Quorum 2 of 2: a promotion reaches both members (a majority); ap-1 does not fsync,
    // so it is no member, and is re-pointed by hand.
    let (store, primary) = fast_primary(dir.path(), 2)?;
    let eu1 = start_member(dir.path(), &primary, "eu-1")?;
    let us1 = start_member(dir.path(), &primary, "us-1")?;
    let lazy = ReplicaOptions {
        store: StoreOptions {
            fsync: false,
            ..StoreOptions::default()
        },
        ..replica_options(&primary, None, "ap-1")
    };
    let ap1 = Replica::start(dir.path().join("ap-1"), lazy)?;
    eventually("the replicas to register", || {
        primary.status().replicas.len() == 3
    });
    for i in 0..10 {
        store.commit(
            put(&format!("consent{i}"), vec![0x01]),
            Some(Durability::Sync),
        )?;
    }
    eventually("a heartbeat naming both members", || {
        eu1.state().primary_peers.len() == 2 && ap1.store().last_lsn() == 10
    });
    primary.close();
    store.close()?;
    let (new, promotion) = eu1.promote(primary_options(None), false)?;
    assert_eq!((promotion.needed, promotion.start_lsn), (2, 11));
    ap1.follow(&new.address().to_string())?;
    eventually("us-1 and ap-1 to register with the new primary", || {
        new.status().replicas.len() == 2
    });
    let receipt = new
        .store()
        .commit(put("after", vec![0x02]), Some(Durability::Sync))?;
    assert_eq!(receipt.acked_by, vec!["us-1".to_owned()]);
    eventually("both to follow the new primary", || {
        us1.store().last_lsn() == receipt.lsn && ap1.store().last_lsn() == receipt.lsn
    });
    assert_eq!(ap1.store().epoch_history().pairs(), &[(1, 1), (2, 11)]);
    assert_eq!(ap1.store().checksum()?, new.store().checksum()?);
    assert_eq!(ap1.state().connections, 2, "it resumed, no snapshot");
    assert_eq!(ap1.state().snapshots, 0);
    Ok(())
}

#[test]
fn a_stopped_replica_is_promoted_offline_by_what_its_primary_last_said() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = fast_primary(dir.path(), 1)?;
    let replica = start_replica(dir.path(), &primary, "eu-1")?;
    eventually("eu-1 to register", || primary.status().replicas.len() == 1);
    let lsn = store
        .commit(put("k", vec![0x01]), Some(Durability::Sync))?
        .lsn;
    eventually("eu-1 to remember quorum 1 of 1", || {
        replica.store().primary_quorum().ok() == Some((1, 1))
    });
    replica.close()?;
    primary.close();
    // A replica restarted with its primary gone still knows it may promote.
    let restarted = start_replica(dir.path(), &primary, "eu-1")?;
    assert_eq!(restarted.state().primary_members, 1);
    restarted.close()?;
    let promotion = promote_stopped(&dir.path().join("eu-1"), false)?;
    assert_eq!((promotion.epoch, promotion.start_lsn), (2, lsn + 1));
    let promoted = Store::open(dir.path().join("eu-1"), StoreOptions::default())?;
    assert_eq!(promoted.read_only_reason(), None, "a primary's store now");
    let next = promoted.commit(put("after", vec![0x02]), None)?.lsn;
    assert_eq!(promoted.entry_id(next)?.map(|id| id.0), Some(2));
    Ok(())
}
