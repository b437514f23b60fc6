use super::*;
use serde_bytes::ByteBuf;

fn entry(lsn: u64, epoch: u64) -> Vec<u8> {
    let body = crate::codec::encode_ops(&[]);
    let mut record = Vec::new();
    crate::codec::frame_record(&mut record, lsn, epoch, 0, &body, crc32c::crc32c(&body));
    record.split_off(crate::codec::RECORD_HEADER_LEN)
}

/// Entries of `epoch`, sent by a primary of `epoch` (the newest a test uses: 2).
fn entries(lsns: std::ops::RangeInclusive<u64>, epoch: u64) -> Message {
    Message::Entries {
        payloads: lsns.map(|l| ByteBuf::from(entry(l, epoch))).collect(),
        epoch: 2,
        durable_lsn: u64::MAX,
    }
}

fn streaming() -> ReplicaMachine {
    let mut m = ReplicaMachine::new(0, 0, 1, 0);
    m.welcomed(2, 0, false).unwrap();
    m
}

#[test]
fn acks_carry_only_what_is_durable() {
    let mut m = streaming();
    let actions = m.receive(entries(1..=3, 1)).unwrap();
    assert!(matches!(&actions[..], [ReplicaAction::Append(p)] if p.len() == 3));
    assert_eq!(
        m.receive(beat(3)).unwrap(),
        vec![ReplicaAction::Ack {
            flushed_lsn: 0,
            applied_lsn: 0,
            members_version: 0
        }]
    );
    assert_eq!(
        m.durable(3, 3),
        ReplicaAction::Ack {
            flushed_lsn: 3,
            applied_lsn: 3,
            members_version: 0
        }
    );
    assert_eq!(m.state(), LinkState::Streaming);
    // A disk that claims more than was appended is held to what was.
    m.durable(9, 9);
    assert_eq!(m.flushed_lsn(), 3);
}

#[test]
fn a_gap_or_epochs_going_back_are_refused_whole_and_repeats_are_skipped() {
    let mut m = streaming();
    m.receive(entries(1..=2, 1)).unwrap();
    assert!(m.receive(entries(4..=5, 1)).is_err(), "a gap");
    assert!(
        matches!(
            m.receive(entries(3..=3, 0)),
            Err(ReplicationError::Protocol(_))
        ),
        "an entry of an older epoch than the one before it"
    );
    assert!(
        matches!(
            m.receive(entries(3..=3, 3)),
            Err(ReplicationError::Protocol(_))
        ),
        "an entry of a newer epoch than its primary's"
    );
    m.durable(2, 2);
    assert_eq!(
        m.receive(entries(1..=2, 1)).unwrap(),
        vec![ReplicaAction::Ack {
            flushed_lsn: 2,
            applied_lsn: 2,
            members_version: 0
        }],
        "a batch of repeats only is acknowledged at once"
    );
    let actions = m.receive(entries(1..=4, 2)).unwrap();
    let [ReplicaAction::Append(fresh)] = &actions[..] else {
        panic!("{actions:?}")
    };
    let lsns: Vec<_> = fresh.iter().map(|p| payload_lsn(p).unwrap()).collect();
    assert_eq!(lsns, vec![3, 4], "1 and 2 are held already");
}

#[test]
fn a_crash_forgets_what_was_not_durable_and_a_resume_repeats_it() {
    let mut m = streaming();
    m.receive(entries(1..=4, 1)).unwrap();
    m.durable(2, 2);
    m.restarted();
    m.welcomed(2, 4, false).unwrap();
    let actions = m.receive(entries(3..=4, 1)).unwrap();
    assert!(matches!(&actions[..], [ReplicaAction::Append(p)] if p.len() == 2));
}

#[test]
fn a_deposed_primary_is_fenced_at_the_welcome() {
    let mut m = ReplicaMachine::new(5, 5, 3, 2);
    assert!(matches!(
        m.welcomed(2, 9, false),
        Err(ReplicationError::Fenced { epoch: 3, .. })
    ));
}

#[test]
fn frames_from_a_primary_of_an_older_epoch_are_fenced() {
    // A replica that has seen epoch 3 (welcomed by a newer primary before), handed
    // frames that a primary of epoch 2 sends.
    let mut m = ReplicaMachine::new(0, 0, 3, 0);
    m.welcomed(3, 0, false).unwrap();
    let old = Message::Entries {
        payloads: vec![ByteBuf::from(entry(1, 2))],
        epoch: 2,
        durable_lsn: u64::MAX,
    };
    assert!(matches!(
        m.receive(old),
        Err(ReplicationError::Fenced { epoch: 3, .. })
    ));
    assert!(matches!(
        m.receive(beat(1)),
        Err(ReplicationError::Fenced { epoch: 3, .. })
    ));
    assert_eq!(m.flushed_lsn(), 0, "nothing of it was taken");
    // A new primary of epoch 3 ships the old epoch's entries, then its own.
    let mut m = ReplicaMachine::new(0, 0, 3, 0);
    m.welcomed(3, 2, false).unwrap();
    let catch_up = Message::Entries {
        payloads: vec![ByteBuf::from(entry(1, 2)), ByteBuf::from(entry(2, 3))],
        epoch: 3,
        durable_lsn: u64::MAX,
    };
    assert!(
        matches!(&m.receive(catch_up).unwrap()[..], [ReplicaAction::Append(p)] if p.len() == 2)
    );
}

/// Found by the simulator (seed 13453 of the first version): the head of entry 160,
/// then the tail of an earlier, larger entry repeated late at the same offset, were
/// glued into one "entry 160" and appended.
#[test]
fn a_part_of_another_entry_is_never_glued_onto_the_one_in_progress() {
    let mut m = streaming();
    let (first, other) = (entry(1, 1), entry(7, 1));
    let mut longer = other.clone();
    longer.extend_from_slice(&[0; 14]);
    let head = Message::EntryPart {
        total: first.len() as u64,
        offset: 0,
        data: ByteBuf::from(first[..20].to_vec()),
        lsn: 0,
        durable_lsn: u64::MAX,
    };
    let tail_of_another = Message::EntryPart {
        total: longer.len() as u64,
        offset: 20,
        data: ByteBuf::from(longer[20..].to_vec()),
        lsn: 0,
        durable_lsn: u64::MAX,
    };
    assert!(m.receive(head).unwrap().is_empty());
    assert!(
        m.receive(tail_of_another).is_err(),
        "refused, never appended"
    );
}

/// With the LSN on every part, even a slice of an entry of the very same size is told
/// apart (the size alone cannot).
#[test]
fn a_part_of_an_equal_size_entry_is_refused_by_its_lsn() {
    let mut m = streaming();
    let (first, second) = (entry(1, 1), entry(2, 1));
    assert_eq!(first.len(), second.len());
    let part = |payload: &[u8], lsn: u64, from: usize, to: usize| Message::EntryPart {
        total: payload.len() as u64,
        offset: from as u64,
        data: ByteBuf::from(payload[from..to].to_vec()),
        lsn,
        durable_lsn: u64::MAX,
    };
    assert!(m.receive(part(&first, 1, 0, 20)).unwrap().is_empty());
    assert!(m.receive(part(&second, 2, 20, second.len())).is_err());
    let mut m = streaming();
    assert!(m.receive(part(&first, 1, 0, 20)).unwrap().is_empty());
    assert_eq!(
        m.receive(part(&first, 1, 20, first.len())).unwrap(),
        vec![ReplicaAction::Append(vec![first.clone()])]
    );
}

#[test]
fn parts_reassemble_in_order_and_refuse_anything_else() {
    let whole = entry(1, 1);
    let (a, b) = whole.split_at(10);
    let total = whole.len() as u64;
    let mut m = streaming();
    let part = |offset: usize, data: &[u8]| Message::EntryPart {
        total,
        offset: offset as u64,
        data: ByteBuf::from(data.to_vec()),
        lsn: 1,
        durable_lsn: u64::MAX,
    };
    assert!(m.receive(part(0, a)).unwrap().is_empty());
    assert_eq!(
        m.receive(part(10, b)).unwrap(),
        vec![ReplicaAction::Append(vec![whole.clone()])]
    );
    let mut m = streaming();
    assert!(m.receive(part(10, b)).is_err(), "a gap");
    let impossible = Message::EntryPart {
        total: u64::MAX,
        offset: 0,
        data: ByteBuf::from(vec![1]),
        lsn: 1,
        durable_lsn: u64::MAX,
    };
    assert!(streaming().receive(impossible).is_err());
}

fn holding() -> ReplicaMachine {
    let mut m = ReplicaMachine::new(0, 0, 1, 0).holding_back(0);
    m.welcomed(2, 0, false).unwrap();
    m
}

fn confirmed_by(durable_lsn: u64, lsns: std::ops::RangeInclusive<u64>) -> Message {
    Message::Entries {
        payloads: lsns.map(|l| ByteBuf::from(entry(l, 1))).collect(),
        epoch: 2,
        durable_lsn,
    }
}

fn beat(last_lsn: u64) -> Message {
    Message::Heartbeat {
        last_lsn,
        oldest_missing_ms: 0,
        now_ms: 0,
        epoch: 2,
        quorum: 0,
        members: 0,
        peers: Vec::new(),
        settings: None,
        members_version: 0,
        member_ids: Vec::new(),
    }
}

#[test]
fn a_replica_that_holds_back_shows_entries_only_once_the_primary_says_they_are_durable() {
    let mut m = holding();
    let actions = m.receive(confirmed_by(1, 1..=3)).unwrap();
    assert!(
        matches!(&actions[..], [ReplicaAction::Append(p), ReplicaAction::Release(1)] if p.len() == 3),
        "{actions:?}"
    );
    m.durable(3, 1);
    assert_eq!(
        (m.flushed_lsn(), m.applied_lsn()),
        (3, 1),
        "acked as durable here, shown only as far as it is there"
    );
    assert_eq!(
        m.receive(beat(3)).unwrap(),
        vec![ReplicaAction::Release(3)],
        "acked once shown, not before"
    );
    assert_eq!(
        m.durable(3, 3),
        ReplicaAction::Ack {
            flushed_lsn: 3,
            applied_lsn: 3,
            members_version: 0
        }
    );
    assert_eq!(m.confirmed_lsn(), 3);
    // A primary durable past what it holds releases only what it holds.
    m.receive(beat(9)).unwrap();
    let actions = m.receive(confirmed_by(9, 4..=4)).unwrap();
    assert!(
        matches!(
            &actions[..],
            [ReplicaAction::Append(_), ReplicaAction::Release(4)]
        ),
        "{actions:?}"
    );
}

#[test]
fn a_replica_that_does_not_hold_back_refuses_entries_not_durable_at_the_primary() {
    let mut m = streaming();
    assert!(matches!(
        m.receive(confirmed_by(1, 1..=2)),
        Err(ReplicationError::Protocol(_))
    ));
    assert_eq!(m.flushed_lsn(), 0, "nothing of the batch was taken");
    let actions = m.receive(confirmed_by(2, 1..=2)).unwrap();
    assert!(
        matches!(&actions[..], [ReplicaAction::Append(_)]),
        "{actions:?}"
    );
}

#[test]
fn a_handshake_cuts_only_what_the_primary_never_confirmed() {
    let mut m = holding();
    m.receive(confirmed_by(2, 1..=5)).unwrap();
    m.durable(5, 2);
    m.disconnected();
    m.welcomed(2, 3, false).unwrap();
    // The primary lost 4 and 5 (its log matches up to 3): they are cut.
    assert_eq!(m.resume_at(3), Some(3));
    assert_eq!((m.flushed_lsn(), m.applied_lsn()), (3, 2));
    // A resume point below the confirmed LSN never cuts what readers may have seen.
    let mut m = holding();
    m.receive(confirmed_by(4, 1..=5)).unwrap();
    assert_eq!(m.resume_at(1), Some(4));
    assert_eq!(m.resume_at(4), None, "nothing past it any more");
    // A machine that does not hold back holds nothing unconfirmed.
    let mut m = streaming();
    m.receive(entries(1..=3, 1)).unwrap();
    assert_eq!(m.resume_at(1), None);
}

#[test]
fn a_restarted_store_shows_what_it_kept_as_confirmed_and_holds_the_rest() {
    let mut m = ReplicaMachine::new(5, 3, 1, 1).holding_back(3);
    assert_eq!((m.applied_lsn(), m.confirmed_lsn()), (3, 3));
    m.welcomed(1, 5, false).unwrap();
    assert_eq!(m.receive(beat(5)).unwrap()[0], ReplicaAction::Release(5));
}

/// A snapshot may replace only an empty store, or one of the same history holding no
/// entry past the snapshot: any other would throw away entries. An empty store takes
/// any history; no snapshot may come from an epoch after its primary's.
#[test]
fn a_snapshot_of_another_history_or_older_than_the_log_is_refused_as_diverged() {
    let mut machine = ReplicaMachine::new(10, 10, 1, 1);
    machine.welcomed(2, 30, true).unwrap();
    machine.snapshot_begins(10, 1, 7, 7).unwrap();
    machine.snapshot_begins(25, 2, 7, 7).unwrap();
    for (lsn, lineage) in [(25, 8), (9, 7), (3, 8)] {
        let err = machine.snapshot_begins(lsn, 1, lineage, 7).unwrap_err();
        assert!(
            matches!(err, ReplicationError::Diverged { .. }),
            "at {lsn} of {lineage}: {err}"
        );
    }
    let err = machine.snapshot_begins(25, 3, 7, 7).unwrap_err();
    assert!(matches!(err, ReplicationError::Protocol(_)), "{err}");
    let mut empty = ReplicaMachine::new(0, 0, 1, 0);
    empty.welcomed(2, 30, true).unwrap();
    empty.snapshot_begins(3, 2, 8, 7).unwrap();
}
