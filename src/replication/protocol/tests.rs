use super::*;
use serde_bytes::ByteBuf;
use serde_derive::Serialize;

use crate::follow::SumsAt;
use crate::replication::verify::VerifyReport;

fn decode(frame: &[u8]) -> Result<Message, ReplicationError> {
    let len = check_frame_len(frame[..4].try_into().unwrap())?;
    decode_frame_body(&frame[4..4 + len])
}

fn samples() -> Vec<Message> {
    let mut all = vec![
        Message::Challenge {
            nonce: ByteBuf::from(vec![7; 32]),
        },
        Message::Hello {
            kind: PeerKind::Replica,
            name: "eu-1".into(),
            proof: ByteBuf::from(vec![1; 32]),
            nonce: ByteBuf::from(vec![2; 32]),
            epoch: 3,
            flushed_lsn: 99,
            flushed_id: (2, 0xdead_beef),
            lineage: 77,
            fsync: true,
            history: vec![(1, 1), (3, 50)],
            listen: Some("127.0.0.1:7402".into()),
            store_id: 0x5eed,
            held: Some(vec![(98, (2, 7)), (99, (2, 0xdead_beef))]),
        },
        Message::Welcome {
            proof: ByteBuf::from(vec![3; 32]),
            epoch: 3,
            last_lsn: 120,
            snapshot: true,
            lineage: 77,
            matched_lsn: Some(98),
        },
        Message::SnapshotBegin {
            lsn: 9,
            epoch: 1,
            id: (1, 5),
            lineage: 77,
            tables: vec![("t".into(), 2, 77)],
            history: vec![(1, 1)],
        },
        Message::SnapshotRows {
            table: "t".into(),
            rows: vec![(ByteBuf::from(vec![1]), ByteBuf::from(vec![2]))],
        },
        Message::SnapshotEnd,
        Message::Refused {
            reason: "no".into(),
            code: RefuseCode::Diverged,
            epoch: 2,
            fork_lsn: Some(17),
        },
        Message::Entries {
            payloads: vec![ByteBuf::from(vec![9; 40]), ByteBuf::from(vec![8; 50])],
            epoch: 3,
            durable_lsn: 11,
        },
        Message::EntryPart {
            total: 100,
            offset: 50,
            data: ByteBuf::from(vec![5; 50]),
            lsn: 12,
            durable_lsn: 12,
        },
        Message::Ack {
            flushed_lsn: 5,
            applied_lsn: 5,
            members_version: 4,
        },
        Message::Heartbeat {
            last_lsn: 7,
            oldest_missing_ms: 1,
            now_ms: 2,
            epoch: 3,
            quorum: 2,
            members: 3,
            peers: vec![("eu-2".into(), "127.0.0.1:7403".into())],
            settings: Some(crate::replication::handover::Settings::of(
                &crate::replication::primary::PrimaryOptions::default(),
            )),
            members_version: 6,
            member_ids: vec![("eu-2".into(), 0x5eed)],
        },
    ];
    all.extend(verify_and_failover_samples());
    all
}

fn verify_and_failover_samples() -> Vec<Message> {
    vec![
        Message::VerifyRequest {
            id: 4,
            since_lsn: 30,
        },
        Message::VerifyReply {
            id: 4,
            sums: vec![SumsAt {
                lsn: 31,
                tables: vec![("t".into(), 2, 77)],
            }],
        },
        Message::VerifyReport {
            report: VerifyReport {
                lsn: 32,
                replicas: vec![crate::replication::verify::ReplicaCheck::not_comparable(
                    "eu-1",
                    "not connected".into(),
                )],
            },
        },
        Message::Granted {
            proof: ByteBuf::from(vec![4; 32]),
            flushed_lsn: 40,
            history: vec![(1, 1), (2, 30)],
            counted: true,
            view: crate::replication::machine::promotion::View {
                quorum: 1,
                members: 2,
                names: vec!["eu-1".into(), "us-1".into()],
                ids: vec![("eu-1".into(), 7), ("us-1".into(), 9)],
            },
            store_id: 7,
        },
        Message::Fetch {
            after_lsn: 38,
            up_to_lsn: 40,
        },
        Message::Lead {
            address: "127.0.0.1:7401".into(),
        },
        Message::DropSlot {
            name: "eu-1".into(),
        },
        Message::Handover {
            epoch: 3,
            last_lsn: 40,
            settings: crate::replication::handover::Settings::of(
                &crate::replication::primary::PrimaryOptions::default(),
            ),
            members: vec![crate::replication::handover::HandedMember {
                name: "us-1".into(),
                store_id: 3,
                joining: true,
            }],
        },
    ]
}

#[test]
fn every_message_round_trips_through_a_frame() {
    for message in samples() {
        let frame = encode_frame(&message).unwrap();
        assert_eq!(decode(&frame).unwrap(), message);
    }
}

#[test]
fn a_flipped_bit_anywhere_after_the_length_is_refused() {
    let frame = encode_frame(&samples()[1]).unwrap();
    for at in 4..frame.len() {
        let mut bad = frame.clone();
        bad[at] ^= 0x10;
        assert!(decode(&bad).is_err(), "flip at {at} accepted");
    }
}

#[test]
fn oversized_and_undersized_lengths_are_refused_before_reading() {
    assert!(check_frame_len(u32::MAX.to_be_bytes()).is_err());
    assert!(check_frame_len(((MAX_FRAME_BYTES + 1) as u32).to_be_bytes()).is_err());
    assert!(check_frame_len(2u32.to_be_bytes()).is_err());
    assert!(check_frame_len((MAX_FRAME_BYTES as u32).to_be_bytes()).is_ok());
}

#[test]
fn another_protocol_version_is_named_as_such() {
    let mut frame = encode_frame(&samples()[0]).unwrap();
    frame[4] = PROTOCOL_VERSION + 1;
    let end = frame.len() - 4;
    let crc = crc32c::crc32c(&frame[4..end]);
    frame[end..].copy_from_slice(&crc.to_be_bytes());
    assert!(
        matches!(decode(&frame), Err(ReplicationError::Version { theirs, .. }) if theirs == PROTOCOL_VERSION + 1)
    );
}

#[test]
fn a_hello_from_a_peer_that_predates_the_fsync_field_reads_as_not_fsyncing() {
    /// The first two messages as a peer without the `fsync` field encodes them.
    #[derive(Serialize)]
    #[allow(dead_code)] // `Challenge` is never built: it keeps `Hello` at its index.
    enum Older {
        Challenge {
            nonce: ByteBuf,
        },
        Hello {
            kind: PeerKind,
            name: String,
            proof: ByteBuf,
            nonce: ByteBuf,
            epoch: u64,
            flushed_lsn: u64,
            flushed_id: (u64, u32),
            lineage: u64,
        },
    }
    let older = Older::Hello {
        kind: PeerKind::Replica,
        name: "eu-1".into(),
        proof: ByteBuf::from(vec![1; 32]),
        nonce: ByteBuf::from(vec![2; 32]),
        epoch: 3,
        flushed_lsn: 99,
        flushed_id: (2, 7),
        lineage: 77,
    };
    let decoded: Message = rmp_serde::from_slice(&rmp_serde::to_vec(&older).unwrap()).unwrap();
    assert!(
        matches!(
            decoded,
            Message::Hello {
                fsync: false,
                flushed_lsn: 99,
                store_id: 0,
                ..
            }
        ),
        "{decoded:?}"
    );
}

#[test]
fn entries_from_a_primary_that_predates_the_durable_field_read_as_all_durable() {
    /// The first six messages as such a primary encodes them (only `Entries` is built).
    #[derive(Serialize)]
    #[allow(dead_code)] // the others keep `Entries` and `EntryPart` at their indexes
    enum Older {
        Challenge,
        Hello,
        Welcome,
        Refused,
        Entries {
            payloads: Vec<ByteBuf>,
            epoch: u64,
        },
        EntryPart {
            total: u64,
            offset: u64,
            data: ByteBuf,
            lsn: u64,
        },
    }
    let older = [
        Older::Entries {
            payloads: vec![ByteBuf::from(vec![7; 9])],
            epoch: 2,
        },
        Older::EntryPart {
            total: 9,
            offset: 0,
            data: ByteBuf::from(vec![7; 9]),
            lsn: 4,
        },
    ];
    for message in older {
        let decoded: Message =
            rmp_serde::from_slice(&rmp_serde::to_vec(&message).unwrap()).unwrap();
        assert!(
            matches!(
                decoded,
                Message::Entries {
                    durable_lsn: u64::MAX,
                    ..
                } | Message::EntryPart {
                    durable_lsn: u64::MAX,
                    ..
                }
            ),
            "{decoded:?}"
        );
    }
}

#[test]
fn a_message_too_large_for_a_frame_is_refused_on_encode() {
    let huge = Message::Entries {
        payloads: vec![ByteBuf::from(vec![0; MAX_FRAME_BYTES])],
        epoch: 1,
        durable_lsn: 1,
    };
    assert!(encode_frame(&huge).is_err());
}

/// A frame naming an epoch or an LSN past what any store reaches is refused before anyone
/// remembers it (a forged `u64::MAX` epoch would fence a primary for good); the bounds
/// themselves pass.
#[test]
fn epochs_and_lsns_no_store_reaches_are_refused() {
    let heartbeat = |last_lsn, epoch| Message::Heartbeat {
        last_lsn,
        oldest_missing_ms: 0,
        now_ms: 0,
        epoch,
        quorum: 0,
        members: 0,
        peers: Vec::new(),
        settings: None,
        members_version: 0,
        member_ids: Vec::new(),
    };
    let decoded = |message: &Message| {
        let frame = encode_frame(message).unwrap();
        decode_frame_body(&frame[4..])
    };
    for plausible in [heartbeat(MAX_LSN, MAX_EPOCH), heartbeat(0, 0)] {
        assert_eq!(decoded(&plausible).unwrap(), plausible);
    }
    for forged in [
        heartbeat(MAX_LSN + 1, 1),
        heartbeat(1, MAX_EPOCH + 1),
        heartbeat(1, u64::MAX),
    ] {
        let err = decoded(&forged).unwrap_err();
        assert!(
            matches!(&err, ReplicationError::Protocol(reason) if reason.contains("past any a store reaches")),
            "{err}"
        );
    }
    // "All of them are durable" is not an LSN, and stays allowed.
    let entries = Message::Entries {
        payloads: Vec::new(),
        epoch: 1,
        durable_lsn: u64::MAX,
    };
    assert_eq!(decoded(&entries).unwrap(), entries);
}

#[test]
fn a_lead_that_names_no_host_and_port_is_a_protocol_error() {
    let decoded = |address: &str| {
        let frame = encode_frame(&Message::Lead {
            address: address.to_owned(),
        })
        .unwrap();
        decode_frame_body(&frame[4..])
    };
    assert!(decoded("127.0.0.1:7401").is_ok());
    assert!(decoded("eu-1.example.com:7401").is_ok());
    for garbage in ["", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", ":7401"] {
        assert!(
            matches!(decoded(garbage), Err(ReplicationError::Protocol(_))),
            "{garbage:?}"
        );
    }
}
