//! Promotion that reaches other members, over real TCP on 127.0.0.1: with quorum 1 of two
//! replicas, either may hold the last acknowledged write, so a promotion must ask the
//! other, adopt the longer log (fetching what it lacks), and lead the other afterwards.

use replikv::error::{Error, ReplicationError};
use replikv::replication::primary::Primary;
use replikv::replication::replica::Replica;
use replikv::replication::status::LinkState;
use replikv::store::{Durability, Store};

mod common;

use common::{
    eventually, fast_primary, primary_options, put, replica_options, start_member, TestResult,
};

fn sync_writes(store: &Store, prefix: &str, count: usize) -> replikv::Result<()> {
    for i in 0..count {
        store.commit(
            put(&format!("{prefix}{i}"), vec![0x01]),
            Some(Durability::Sync),
        )?;
    }
    Ok(())
}

/// A primary (quorum 1) with two listening members, `eu-1` and `us-1`, that hold `writes`
/// sync writes and know each other's addresses.
fn two_members(
    dir: &std::path::Path,
    writes: usize,
) -> replikv::Result<(Store, Primary, Replica, Replica)> {
    let (store, primary) = fast_primary(dir, 1)?;
    let eu1 = start_member(dir, &primary, "eu-1")?;
    let us1 = start_member(dir, &primary, "us-1")?;
    eventually("both to register", || primary.status().replicas.len() == 2);
    sync_writes(&store, "a", writes)?;
    let last = store.last_lsn();
    eventually("both to hold every write and know both members", || {
        [&eu1, &us1]
            .iter()
            .all(|r| r.store().last_lsn() == last && r.state().primary_peers.len() == 2)
    });
    Ok((store, primary, eu1, us1))
}

#[test]
fn a_promotion_asks_the_other_member_fetches_what_it_lacks_and_leads_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary, eu1, us1) = two_members(dir.path(), 10)?;
    // eu-1 loses its primary; us-1 alone acknowledges the next five sync writes.
    eu1.follow("127.0.0.1:1")?;
    sync_writes(&store, "b", 5)?;
    assert_eq!((eu1.store().last_lsn(), us1.store().last_lsn()), (10, 15));
    primary.close();
    let (promoted, promotion) = eu1.promote(primary_options(None), false)?;
    assert_eq!((promotion.epoch, promotion.start_lsn), (2, 16));
    assert_eq!(promotion.reached, ["eu-1", "us-1"]);
    assert_eq!((promotion.needed, promotion.forced), (2, false));
    for i in 0..5 {
        let key = replikv::codec::encode_key(replikv::codec::KeyRef::Str(&format!("b{i}")));
        assert!(
            promoted.store().contains("t", &key)?,
            "acknowledged write b{i} was fetched from us-1"
        );
    }
    eventually("us-1 to follow the promoted replica", || {
        us1.primary() == promoted.address().to_string() && us1.state().state == LinkState::Streaming
    });
    promoted
        .store()
        .commit(put("after", vec![0x02]), Some(Durability::Sync))?;
    eventually("us-1 to receive the new epoch's first write", || {
        us1.store().last_lsn() == 16
    });
    assert_eq!(us1.store().epoch_history().pairs(), &[(1, 1), (2, 16)]);
    promoted.close();
    Ok(())
}

#[test]
fn a_member_that_granted_a_newer_epoch_appends_nothing_more_from_the_old_primary() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary, eu1, us1) = two_members(dir.path(), 3)?;
    // The old primary keeps running: eu-1's promotion deposes it through us-1.
    let (promoted, promotion) = eu1.promote(primary_options(None), false)?;
    assert_eq!(promotion.reached, ["eu-1", "us-1"]);
    let refused = store.commit(put("late", vec![0x03]), Some(Durability::Sync));
    assert!(
        matches!(
            refused,
            Err(Error::Replication(
                ReplicationError::Fenced { .. }
                    | ReplicationError::Deposed { .. }
                    | ReplicationError::Timeout { .. }
            ))
        ),
        "the deposed primary acknowledged a sync write: {refused:?}"
    );
    eventually("us-1 to follow the promoted replica", || {
        us1.primary() == promoted.address().to_string()
    });
    assert_eq!(
        us1.store().last_lsn(),
        3,
        "nothing of the old primary after the grant"
    );
    promoted.close();
    primary.close();
    Ok(())
}

#[test]
fn a_promotion_whose_members_do_not_listen_is_refused_before_anything_changes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = fast_primary(dir.path(), 1)?;
    let eu1 = start_member(dir.path(), &primary, "eu-1")?;
    // us-1 counts toward the quorum but does not listen: nobody can ask it.
    let us1 = Replica::start(
        dir.path().join("us-1"),
        replica_options(&primary, None, "us-1"),
    )?;
    eventually("both to register", || primary.status().replicas.len() == 2);
    sync_writes(&store, "a", 2)?;
    eventually("eu-1 to hear of two members", || {
        eu1.state().primary_members == 2 && us1.store().last_lsn() == 2
    });
    let refused = eu1.promote(primary_options(None), false);
    assert!(
        matches!(&refused, Err(Error::Replication(ReplicationError::Refused { reason }))
            if reason.contains("must reach 2") && reason.contains("listen")),
        "{:?}",
        refused.err()
    );
    assert_eq!(
        eu1.store().epoch(),
        1,
        "a refusal before asking changes nothing"
    );
    primary.close();
    Ok(())
}

#[test]
fn a_replica_restarted_after_its_primary_died_still_asks_the_members() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_store, primary, eu1, us1) = two_members(dir.path(), 4)?;
    primary.close();
    eu1.close()?;
    // Restarted: no heartbeat will come, but the members' addresses were kept on disk.
    let options = replikv::replication::replica::ReplicaOptions {
        listen: Some("127.0.0.1:0".to_owned()),
        ..replica_options(&primary, None, "eu-1")
    };
    let eu1 = Replica::start(dir.path().join("eu-1"), options)?;
    assert_eq!(eu1.state().primary_peers.len(), 2);
    let (promoted, promotion) = eu1.promote(primary_options(None), false)?;
    assert_eq!(promotion.reached, ["eu-1", "us-1"]);
    eventually("us-1 to follow the promoted replica", || {
        us1.primary() == promoted.address().to_string()
    });
    promoted.close();
    Ok(())
}

#[test]
fn a_lead_to_no_address_at_the_member_port_is_refused_and_the_replica_keeps_its_primary(
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = fast_primary(dir.path(), 1)?;
    let eu1 = start_member(dir.path(), &primary, "eu-1")?;
    let member = eu1.listen_address().ok_or("eu-1 listens")?.to_string();
    let timeout = std::time::Duration::from_secs(10);
    let told = replikv::replication::monitor::request_follow(&member, "garbage", None, timeout);
    assert!(told.is_err(), "a lead to no address is refused: {told:?}");
    assert_eq!(eu1.primary(), primary.address().to_string());
    // It still follows its primary.
    let lsn = store.commit(put("after", vec![0x01]), None)?.lsn;
    eventually("eu-1 to apply a write", || eu1.store().last_lsn() >= lsn);
    eu1.close()?;
    Ok(())
}
