use super::*;

fn config() -> PrimaryConfig {
    PrimaryConfig {
        quorum: 2,
        ship_interval: 50_000,
        heartbeat_interval: 500_000,
        stall_timeout: 3_000_000,
        catch_up_entries: 4096,
    }
}

/// The connection `joined` made, once every counting member has proved the membership,
/// as a heartbeat and its ack would: these tests are of other rules (see `membership.rs`).
fn told(joined: (LinkId, Option<LinkId>), m: &mut PrimaryMachine) -> (LinkId, Option<LinkId>) {
    m.all_members_told();
    joined
}

fn shipped(lsns: std::ops::RangeInclusive<u64>) -> Vec<Shipped> {
    lsns.map(|lsn| Shipped {
        lsn,
        commit_ms: lsn,
        bytes: 10,
    })
    .collect()
}

#[test]
fn a_fast_ack_is_never_clamped_below_what_was_handed_to_the_transport() {
    let mut m = PrimaryMachine::new(config(), 0);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 0, 0), &mut m);
    m.visible(3);
    assert_eq!(
        m.poll(&a, 0),
        LinkAction::Ship {
            after_lsn: 0,
            up_to_lsn: 3,
            durable_lsn: 3,
        }
    );
    m.shipping(&a, &shipped(1..=3), m.visible_lsn(), 0);
    // The ack arrives before the transport finished writing: it still counts whole.
    let outcome = m.ack(&a, 3, 3, 0, 10);
    assert_eq!(outcome.slot_lsn, Some(3));
    assert_eq!(m.peer(&a).unwrap().acked_lsn, 3);
    assert_eq!(m.peer(&a).unwrap().in_flight_bytes, 0);
}

#[test]
fn the_quorum_counts_only_replicas_that_fsync_and_never_moves_back() {
    let mut m = PrimaryMachine::new(config(), 10);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 0, 0), &mut m);
    let (cache, _) = told(
        m.connect("cache", 0, PeerKind::Consumer, false, 0, 0),
        &mut m,
    );
    let (lazy, _) = told(
        m.connect("nofsync", 0, PeerKind::Replica, false, 0, 0),
        &mut m,
    );
    let (b, _) = told(m.connect("b", 0, PeerKind::Replica, true, 0, 0), &mut m);
    for id in [&a, &cache, &lazy, &b] {
        m.shipping(id, &shipped(1..=10), 10, 0);
    }
    assert_eq!(m.ack(&cache, 10, 10, 0, 1).quorum_lsn, None);
    assert_eq!(m.ack(&lazy, 10, 10, 0, 1).quorum_lsn, None);
    assert_eq!(m.ack(&a, 7, 7, 0, 1).quorum_lsn, None, "one of two");
    assert_eq!(m.ack(&b, 9, 9, 0, 1).quorum_lsn, Some(7));
    assert_eq!(m.acked_by(7), vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(m.acked_by(9), vec!["b".to_owned()]);
    m.disconnect(&a);
    assert_eq!(m.quorum_lsn(), 7, "a replica that left keeps what it acked");
    assert_eq!(m.counting_replicas(), 2);
    assert_eq!(m.connected_counting_replicas(), 1);
}

#[test]
fn what_a_lost_connection_had_sent_and_not_had_acked_counts_as_missing() {
    let mut m = PrimaryMachine::new(config(), 1);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 0, 0), &mut m);
    m.visible(10);
    m.shipping(&a, &shipped(1..=10), m.visible_lsn(), 0);
    m.ack(&a, 4, 4, 0, 1);
    m.disconnect(&a);
    let peer = m.peer(&a).expect("known");
    assert_eq!((peer.sent_lsn, peer.acked_lsn), (4, 4));
    assert!(!m.caught_up(&a), "entries 5 to 10 are missing, not sent");
}

#[test]
fn a_peer_that_keeps_up_is_paced_and_one_far_behind_is_not() {
    let mut m = PrimaryMachine::new(config(), 1);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 0, 0), &mut m);
    m.shipping(&a, &shipped(1..=1), m.visible_lsn(), 0);
    assert!(m.caught_up(&a));
    m.visible(2);
    assert!(!m.caught_up(&a), "entry 2 waits for the pace");
    assert_eq!(m.poll(&a, 10), LinkAction::WaitUntil(50_000));
    assert!(matches!(m.poll(&a, 50_000), LinkAction::Ship { .. }));
    m.visible(10_000);
    assert!(matches!(m.poll(&a, 10), LinkAction::Ship { .. }));
}

#[test]
fn a_peer_whose_batch_fell_short_of_its_backlog_is_not_paced_however_few_entries_are_left() {
    let mut m = PrimaryMachine::new(config(), 0);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 0, 0), &mut m);
    // 800 large entries: far fewer than `catch_up_entries`, many batches of bytes.
    m.visible(800);
    assert!(matches!(
        m.poll(&a, 0),
        LinkAction::Ship { up_to_lsn: 800, .. }
    ));
    m.shipping(&a, &shipped(1..=200), 800, 0);
    m.fell_short(&a);
    assert!(matches!(
        m.poll(&a, 10),
        LinkAction::Ship { after_lsn: 200, .. }
    ));
    // A batch that reached its end paces the next one again.
    m.shipping(&a, &shipped(201..=800), 800, 10);
    m.visible(801);
    assert_eq!(m.poll(&a, 20), LinkAction::WaitUntil(50_010));
}

#[test]
fn a_sync_writer_is_shipped_to_counting_replicas_without_waiting_for_the_interval() {
    let mut m = PrimaryMachine::new(config(), 1);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 0, 0), &mut m);
    let (cache, _) = told(
        m.connect("cache", 0, PeerKind::Consumer, false, 0, 0),
        &mut m,
    );
    m.shipping(&a, &shipped(1..=1), m.visible_lsn(), 0);
    m.shipping(&cache, &shipped(1..=1), m.visible_lsn(), 0);
    m.visible(2);
    m.sync_wanted(2);
    assert!(matches!(m.poll(&a, 10), LinkAction::Ship { .. }));
    assert_eq!(
        m.poll(&cache, 10),
        LinkAction::WaitUntil(50_000),
        "a consumer keeps its pace"
    );
}

#[test]
fn a_sync_entry_not_yet_visible_ships_with_the_entries_before_it_once_it_is() {
    let mut m = PrimaryMachine::new(config(), 1);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 0, 0), &mut m);
    m.shipping(&a, &shipped(1..=1), m.visible_lsn(), 0);
    // The writer waits from its commit on; entry 2, another writer's, is visible first.
    m.sync_wanted(3);
    m.visible(2);
    assert!(m.awaits_visible());
    assert_eq!(
        m.poll(&a, 10),
        LinkAction::WaitUntil(50_000),
        "entry 2 shipped alone would cost the replica a batch of its own"
    );
    m.visible(3);
    assert!(!m.awaits_visible());
    assert_eq!(
        m.poll(&a, 20),
        LinkAction::Ship {
            after_lsn: 1,
            up_to_lsn: 3,
            durable_lsn: 3,
        }
    );
}

#[test]
fn each_of_many_sync_writers_ships_once_its_own_entry_is_visible() {
    let mut m = PrimaryMachine::new(config(), 1);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 0, 0), &mut m);
    m.shipping(&a, &shipped(1..=1), m.visible_lsn(), 0);
    m.sync_wanted(3);
    m.sync_wanted(5);
    m.visible(4);
    assert!(m.awaits_visible(), "entry 5 is still on its way");
    assert_eq!(
        m.poll(&a, 10),
        LinkAction::Ship {
            after_lsn: 1,
            up_to_lsn: 4,
            durable_lsn: 4,
        },
        "entry 3 must not wait for entry 5"
    );
    m.shipping(&a, &shipped(2..=4), m.visible_lsn(), 10);
    assert!(m.caught_up(&a));
    m.visible(5);
    assert!(matches!(m.poll(&a, 30), LinkAction::Ship { .. }));
}

#[test]
fn a_peer_has_longer_to_ack_a_large_batch_in_proportion_to_its_bytes() {
    let mut m = PrimaryMachine::new(config(), 0);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 0, 0), &mut m);
    m.visible(1);
    let load = Shipped {
        lsn: 1,
        commit_ms: 1,
        bytes: 4 * APPLIED_PER_SECOND,
    };
    m.shipping(&a, &[load], 1, 0);
    m.heartbeat_sent(&a, 1, 2_900_000);
    assert_ne!(
        m.poll(&a, 3_000_000),
        LinkAction::Drop,
        "still applying: four seconds more for four seconds' worth of bytes"
    );
    assert!(matches!(m.poll(&a, 3_100_000), LinkAction::WaitUntil(at) if at <= 3_400_000));
    assert_eq!(
        m.poll(&a, 7_000_000),
        LinkAction::Drop,
        "silent past that too"
    );
    m.ack(&a, 1, 1, 0, 6_000_000);
    assert_eq!(m.peer(&a).unwrap().in_flight_bytes, 0);
    assert_ne!(m.poll(&a, 7_000_000), LinkAction::Drop);
    assert_eq!(
        m.poll(&a, 9_000_000),
        LinkAction::Drop,
        "with nothing in flight, the stall timeout alone"
    );
}

#[test]
fn a_deep_backlog_in_flight_earns_no_more_time_than_one_batch_to_apply() {
    let mut m = PrimaryMachine::new(config(), 0);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 0, 0), &mut m);
    m.visible(200);
    let mib = 1 << 20;
    let backlog: Vec<Shipped> = (1..=200)
        .map(|lsn| Shipped {
            lsn,
            commit_ms: lsn,
            bytes: mib,
        })
        .collect();
    m.shipping(&a, &backlog, 200, 0);
    m.heartbeat_sent(&a, 200, 2_900_000);
    // 33 MiB at most, a batch and the entry past its mark: 4.125 s more, not 25 s.
    assert_ne!(m.poll(&a, 7_000_000), LinkAction::Drop);
    assert_eq!(m.poll(&a, 7_200_000), LinkAction::Drop);
    // Once the large entries are acked, the largest left is what counts.
    let mut m = PrimaryMachine::new(config(), 0);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 0, 0), &mut m);
    m.visible(2);
    let big = Shipped {
        lsn: 1,
        commit_ms: 1,
        bytes: 80 * mib,
    };
    let small = Shipped {
        lsn: 2,
        commit_ms: 2,
        bytes: mib,
    };
    m.shipping(&a, &[big, small], 2, 0);
    assert_eq!(m.peer(&a).unwrap().in_flight_largest(), 80 * mib);
    m.ack(&a, 1, 1, 0, 0);
    assert_eq!(m.peer(&a).unwrap().in_flight_largest(), mib);
    assert_eq!(
        m.poll(&a, 3_200_000),
        LinkAction::Drop,
        "1 MiB: 0.125 s more"
    );
}

#[test]
fn the_largest_entry_in_flight_follows_shipping_and_acks() {
    let mut m = PrimaryMachine::new(config(), 0);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 0, 0), &mut m);
    m.visible(4);
    let sized = |lsn, bytes| Shipped {
        lsn,
        commit_ms: lsn,
        bytes,
    };
    m.shipping(
        &a,
        &[sized(1, 5), sized(2, 3), sized(3, 5), sized(4, 1)],
        4,
        0,
    );
    let largest = |m: &PrimaryMachine| m.peer(&a).unwrap().in_flight_largest();
    assert_eq!(largest(&m), 5);
    m.ack(&a, 1, 1, 0, 0);
    assert_eq!(largest(&m), 5, "entry 3 is as large");
    m.ack(&a, 3, 3, 0, 0);
    assert_eq!(largest(&m), 1);
    m.ack(&a, 4, 4, 0, 0);
    assert_eq!(largest(&m), 0);
}

#[test]
fn a_peer_whose_socket_keeps_draining_is_not_stalled() {
    let mut m = PrimaryMachine::new(config(), 0);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 0, 0), &mut m);
    m.took_bytes(&a, 2_000_000);
    assert_ne!(
        m.poll(&a, 4_000_000),
        LinkAction::Drop,
        "it took bytes 2 s ago"
    );
    m.took_bytes(&a, 1_000_000);
    assert_eq!(
        m.poll(&a, 5_000_000),
        LinkAction::Drop,
        "an older sign of life moves nothing back"
    );
}

#[test]
fn a_replica_installing_a_snapshot_keeps_its_link_with_acks_that_claim_nothing() {
    let mut m = PrimaryMachine::new(config(), 100);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 7, 0), &mut m);
    m.snapshot_started(&a, 100);
    m.snapshot_sent(&a, 1_000_000);
    assert_ne!(m.poll(&a, 3_900_000), LinkAction::Drop);
    let alive = m.ack(&a, 0, 0, 0, 3_500_000);
    assert_ne!(m.poll(&a, 6_000_000), LinkAction::Drop, "heard 2.5 s ago");
    assert_eq!(
        alive,
        AckOutcome::default(),
        "no slot moves, no quorum: it claims nothing"
    );
    assert!(
        m.acked_by(8).is_empty(),
        "it proves nothing past what it held"
    );
    assert_eq!(m.poll(&a, 6_500_000), LinkAction::Drop, "silent since");
    let (b, _) = told(m.connect("b", 0, PeerKind::Replica, true, 7, 0), &mut m);
    assert_eq!(
        m.ack(&b, 9, 9, 0, 0).slot_lsn,
        Some(7),
        "a real ack moves its slot"
    );
}

#[test]
fn an_idle_link_gets_heartbeats_and_a_silent_one_is_dropped() {
    let mut m = PrimaryMachine::new(config(), 0);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 0, 0), &mut m);
    assert_eq!(m.poll(&a, 100), LinkAction::WaitUntil(500_000));
    assert_eq!(m.poll(&a, 500_000), LinkAction::Heartbeat { last_lsn: 0 });
    m.heartbeat_sent(&a, 0, 500_000);
    assert_eq!(m.poll(&a, 600_000), LinkAction::WaitUntil(1_000_000));
    assert_eq!(m.poll(&a, 3_000_000), LinkAction::Drop);
    m.ack(&a, 0, 0, 0, 2_900_000);
    assert!(matches!(
        m.poll(&a, 3_000_000),
        LinkAction::Heartbeat { .. }
    ));
}

#[test]
fn heartbeats_go_out_on_time_while_a_backlog_ships() {
    let mut m = PrimaryMachine::new(config(), 100_000);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 0, 0), &mut m);
    m.shipping(&a, &shipped(1..=4096), m.visible_lsn(), 400_000);
    assert!(matches!(m.poll(&a, 499_999), LinkAction::Ship { .. }));
    assert!(matches!(m.poll(&a, 500_000), LinkAction::Heartbeat { .. }));
    m.heartbeat_sent(&a, 0, 500_000);
    assert!(matches!(m.poll(&a, 500_001), LinkAction::Ship { .. }));
}

#[test]
fn a_replica_remembered_from_its_slot_is_registered_but_proves_nothing_until_it_acks() {
    let mut m = PrimaryMachine::new(config(), 50);
    m.remember("a", true, false, 0, 0);
    m.remember("lazy", false, false, 0, 0);
    assert_eq!(m.counting_replicas(), 1);
    assert_eq!(m.connected_counting_replicas(), 0);
    assert!(m.acked_by(1).is_empty());
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 40, 1), &mut m);
    m.shipping(&a, &shipped(41..=50), m.visible_lsn(), 1);
    m.ack(&a, 45, 45, 0, 2);
    assert_eq!(m.acked_by(45), vec!["a".to_owned()]);
}

#[test]
fn a_name_held_by_another_store_is_told_apart_from_a_reconnection() {
    let mut m = PrimaryMachine::new(config(), 5);
    let (a, _) = told(m.connect("a", 7, PeerKind::Replica, true, 0, 0), &mut m);
    assert!(
        m.held_by_another("a", 8),
        "another store's replica under a live name"
    );
    assert!(
        !m.held_by_another("a", 7),
        "the same store reconnecting replaces its link"
    );
    assert!(
        !m.held_by_another("a", 0),
        "a peer that says no store is never told apart"
    );
    assert!(!m.held_by_another("b", 8), "a name nobody holds");
    m.disconnect(&a);
    assert!(
        !m.held_by_another("a", 8),
        "the name is free once its link is gone"
    );
    let (_, replaced) = told(m.connect("a", 8, PeerKind::Replica, true, 0, 1), &mut m);
    assert_eq!(replaced, None);
    told(m.connect("old", 0, PeerKind::Replica, true, 0, 1), &mut m);
    assert!(
        !m.held_by_another("old", 8),
        "an older peer's link says no store"
    );
}

#[test]
fn events_of_a_replaced_connection_are_ignored() {
    let mut m = PrimaryMachine::new(config(), 5);
    let (old, _) = told(m.connect("a", 0, PeerKind::Replica, true, 0, 0), &mut m);
    m.shipping(&old, &shipped(1..=5), m.visible_lsn(), 0);
    let (new, replaced) = told(m.connect("a", 0, PeerKind::Replica, true, 2, 1), &mut m);
    assert_eq!(replaced, Some(old.clone()));
    assert_eq!(m.ack(&old, 5, 5, 0, 2), AckOutcome::default());
    assert_eq!(m.poll(&old, 2), LinkAction::Drop);
    assert_eq!(
        m.poll(&new, 2),
        LinkAction::Ship {
            after_lsn: 2,
            up_to_lsn: 5,
            durable_lsn: 5,
        }
    );
}

#[test]
fn a_peer_that_holds_back_is_shipped_what_is_written_and_told_once_it_is_durable() {
    let mut m = PrimaryMachine::new(config(), 1);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 1, 0), &mut m);
    let (b, _) = told(m.connect("b", 0, PeerKind::Replica, true, 1, 0), &mut m);
    m.hold_back(&a);
    m.written(3);
    m.sync_wanted(3);
    assert_eq!(
        m.poll(&a, 10),
        LinkAction::Ship {
            after_lsn: 1,
            up_to_lsn: 3,
            durable_lsn: 1
        },
        "a sync writer's entry ships as soon as it is written"
    );
    assert!(!m.caught_up(&a));
    assert_eq!(
        m.poll(&b, 10),
        LinkAction::WaitUntil(500_000),
        "a peer that does not hold back waits for entries to be durable"
    );
    m.shipping(&a, &shipped(2..=3), 1, 10);
    assert!(m.caught_up(&a));
    assert_eq!(m.poll(&a, 20), LinkAction::WaitUntil(500_000));
    // The ack may come before the primary's own fdatasync ends: the entry is durable
    // there, which is what a sync write waits for (it returns once durable here too).
    m.ack(&a, 3, 1, 0, 30);
    assert_eq!(
        m.acked_by(3),
        vec!["a".to_owned()],
        "held, not shown, durable"
    );
    m.visible(2);
    assert_eq!(
        m.poll(&a, 40),
        LinkAction::Heartbeat { last_lsn: 2 },
        "a sync writer's entry is shown soon there: told at once what is durable here"
    );
    m.heartbeat_sent(&a, 2, 40);
    m.visible(3);
    assert_eq!(m.poll(&a, 50), LinkAction::Heartbeat { last_lsn: 3 });
    m.heartbeat_sent(&a, 3, 50);
    assert_eq!(m.poll(&a, 60), LinkAction::WaitUntil(500_050));
    m.ack(&a, 3, 3, 0, 70);
    assert_eq!(m.peer(&a).map(|p| p.applied_lsn), Some(3));
    assert_eq!(
        m.poll(&b, 80),
        LinkAction::Ship {
            after_lsn: 1,
            up_to_lsn: 3,
            durable_lsn: 3
        }
    );
}

#[test]
fn a_peer_that_holds_back_is_told_at_the_pace_entries_ship_when_no_sync_writer_waits() {
    let mut m = PrimaryMachine::new(config(), 1);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 1, 0), &mut m);
    m.hold_back(&a);
    m.written(3);
    m.shipping(&a, &shipped(2..=3), 1, 10);
    m.visible(2);
    assert_eq!(
        m.poll(&a, 40),
        LinkAction::WaitUntil(50_010),
        "told at the pace entries ship, which the next entries would do"
    );
    assert_eq!(
        m.poll(&a, 50_010),
        LinkAction::Heartbeat { last_lsn: 2 },
        "told that entry 2 is durable then, not at the next heartbeat"
    );
    m.heartbeat_sent(&a, 2, 50_010);
    assert_eq!(m.poll(&a, 50_020), LinkAction::WaitUntil(550_010));
    m.visible(3);
    assert_eq!(m.poll(&a, 100_010), LinkAction::Heartbeat { last_lsn: 3 });
}

#[test]
fn what_a_reconnecting_replica_holds_but_does_not_show_counts_once_it_shows_it() {
    let mut m = PrimaryMachine::new(config(), 5);
    m.visible(5);
    // Restarted, it holds entries 4 and 5 back until it is told they are durable here
    // (whether or not this primary ships ahead).
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 5, 0), &mut m);
    m.showing(&a, 3);
    told(m.connect("b", 0, PeerKind::Replica, true, 5, 0), &mut m);
    assert_eq!(m.acked_by(5), vec!["b".to_owned()], "a shows only 3");
    m.written(5);
    m.sync_wanted(5);
    assert_eq!(
        m.poll(&a, 10),
        LinkAction::Heartbeat { last_lsn: 5 },
        "a sync writer waits: told at once"
    );
    m.heartbeat_sent(&a, 5, 10);
    m.ack(&a, 5, 5, 0, 20);
    assert_eq!(m.acked_by(5), vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(m.quorum_lsn(), 5);
}

#[test]
fn a_consumer_never_holds_back_and_a_wish_of_another_peer_never_hurries_it() {
    let mut m = PrimaryMachine::new(config(), 1);
    let (cache, _) = told(
        m.connect("cache", 0, PeerKind::Consumer, false, 1, 0),
        &mut m,
    );
    let (lazy, _) = told(m.connect("lazy", 0, PeerKind::Replica, false, 0, 0), &mut m);
    m.hold_back(&lazy);
    m.shipping(&lazy, &shipped(1..=1), 1, 0);
    m.written(2);
    m.sync_wanted(2);
    assert_eq!(m.poll(&cache, 10), LinkAction::WaitUntil(500_000));
    assert_eq!(
        m.poll(&lazy, 10),
        LinkAction::WaitUntil(50_000),
        "a replica that does not count keeps its pace"
    );
}

#[test]
fn a_link_paced_behind_new_entries_does_not_have_all_though_it_waits() {
    let mut m = PrimaryMachine::new(config(), 0);
    let (cache, _) = told(
        m.connect("cache", 0, PeerKind::Consumer, false, 0, 0),
        &mut m,
    );
    m.visible(1);
    m.shipping(&cache, &shipped(1..=1), 1, 0);
    assert!(m.has_all(&cache));
    m.visible(2);
    // Nobody waits for entry 2 from a consumer: it waits for the pace, and its task must
    // be told, or it would sleep until its heartbeat.
    assert!(matches!(m.poll(&cache, 10), LinkAction::WaitUntil(_)));
    assert!(!m.has_all(&cache));
    m.shipping(&cache, &shipped(2..=2), 2, 50_000);
    assert!(m.has_all(&cache));
}

/// A snapshot of everything visible leaves its peer streaming once sent (no entry would be
/// shipped to say so while the primary is idle); one taken before later commits leaves it
/// catching up until they are shipped.
#[test]
fn a_peer_sent_a_snapshot_of_everything_streams_at_once() {
    let mut m = PrimaryMachine::new(config(), 100);
    let (a, _) = told(m.connect("a", 0, PeerKind::Replica, true, 7, 0), &mut m);
    let (b, _) = told(m.connect("b", 0, PeerKind::Replica, true, 8, 0), &mut m);
    m.snapshot_started(&a, 100);
    m.snapshot_started(&b, 90);
    m.snapshot_sent(&a, 1_000_000);
    m.snapshot_sent(&b, 1_000_000);
    let state = |m: &PrimaryMachine, id| m.peer(id).map(|p| p.state);
    assert_eq!(state(&m, &a), Some(LinkState::Streaming));
    assert_eq!(state(&m, &b), Some(LinkState::CatchingUp));
}
