//! Fuzz targets of the frame decoder, on stable Rust with proptest. `cargo test` runs a few
//! hundred cases of each; a longer run:
//! `PROPTEST_CASES=100000 cargo test --release --no-default-features fuzz_`.

use super::*;
use serde_bytes::ByteBuf;

use crate::replication::status::SyncState;
use crate::replication::status::{LinkState, ReplicaLink, SyncRole};
use proptest::collection::vec;
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = ByteBuf> {
    vec(any::<u8>(), 0..max).prop_map(ByteBuf::from)
}

fn peer_kind() -> impl Strategy<Value = PeerKind> {
    prop_oneof![
        Just(PeerKind::Replica),
        Just(PeerKind::Consumer),
        Just(PeerKind::Monitor),
        Just(PeerKind::Verifier),
        Just(PeerKind::Candidate),
        Just(PeerKind::Operator)
    ]
}

fn refuse_code() -> impl Strategy<Value = RefuseCode> {
    prop_oneof![
        Just(RefuseCode::Auth),
        Just(RefuseCode::Diverged),
        Just(RefuseCode::NeedsSnapshot),
        Just(RefuseCode::Fenced),
        Just(RefuseCode::Protocol),
        Just(RefuseCode::Busy),
    ]
}

fn link() -> impl Strategy<Value = ReplicaLink> {
    let state = prop_oneof![
        Just(LinkState::Connecting),
        Just(LinkState::Snapshot),
        Just(LinkState::CatchingUp),
        Just(LinkState::Streaming),
        Just(LinkState::Disconnected),
        Just(LinkState::Failed),
    ];
    (
        ".{0,12}",
        ".{0,24}",
        state,
        any::<(u64, u64, u64, u64)>(),
        0.0..1e9f64,
        any::<u64>(),
        prop_oneof![
            Just(SyncRole::Quorum),
            Just(SyncRole::Async),
            Just(SyncRole::Joining)
        ],
    )
        .prop_map(
            |(
                name,
                address,
                state,
                (sent_lsn, acked_lsn, lag_lsn, lag_bytes),
                lag_seconds,
                last_seen_ms,
                sync_state,
            )| {
                ReplicaLink {
                    name,
                    address,
                    state,
                    sent_lsn,
                    acked_lsn,
                    lag_lsn,
                    lag_bytes,
                    lag_seconds,
                    last_seen_ms,
                    sync_state,
                    kind: "replica".to_owned(),
                }
            },
        )
}

/// A hello with arbitrary fields.
fn hello() -> impl Strategy<Value = Message> {
    (
        peer_kind(),
        ".{0,20}",
        bytes(40),
        bytes(40),
        any::<(u64, u64, (u64, u32), u64, bool)>(),
        (vec(any::<(u64, u64)>(), 0..3), any::<u64>()),
        proptest::option::of(".{0,20}"),
    )
        .prop_map(
            |(
                kind,
                name,
                proof,
                nonce,
                (epoch, flushed_lsn, flushed_id, lineage, fsync),
                (history, store_id),
                listen,
            )| {
                Message::Hello {
                    kind,
                    name,
                    proof,
                    nonce,
                    epoch,
                    flushed_lsn,
                    flushed_id,
                    lineage,
                    fsync,
                    history,
                    listen,
                    store_id,
                    held: (epoch % 2 == 0).then(|| vec![(flushed_lsn, flushed_id)]),
                }
            },
        )
}

/// Entries whole or in parts, with arbitrary fields.
fn entries() -> impl Strategy<Value = Message> {
    prop_oneof![
        (vec(bytes(60), 0..5), any::<(u64, u64)>()).prop_map(|(payloads, (epoch, durable_lsn))| {
            Message::Entries {
                payloads,
                epoch,
                durable_lsn,
            }
        }),
        (any::<(u64, u64, u64, u64)>(), bytes(60)).prop_map(
            |((total, offset, lsn, durable_lsn), data)| Message::EntryPart {
                total,
                offset,
                data,
                lsn,
                durable_lsn,
            }
        ),
    ]
}

/// A member's grant of an epoch.
fn granted() -> impl Strategy<Value = Message> {
    (
        bytes(40),
        any::<(u64, bool, u64)>(),
        vec(any::<(u64, u64)>(), 0..3),
    )
        .prop_map(
            |(proof, (flushed_lsn, counted, store_id), history)| Message::Granted {
                proof,
                flushed_lsn,
                view: crate::replication::machine::promotion::View {
                    quorum: flushed_lsn % 4,
                    members: history.len() as u64,
                    names: vec!["eu-1".into()],
                    ids: vec![("eu-1".into(), store_id)],
                },
                history,
                counted,
                store_id,
            },
        )
}

/// Every message, with arbitrary fields.
fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        bytes(40).prop_map(|nonce| Message::Challenge { nonce }),
        hello(),
        (bytes(40), any::<(u64, u64, bool, u64)>()).prop_map(
            |(proof, (epoch, last_lsn, snapshot, lineage))| Message::Welcome {
                proof,
                epoch,
                last_lsn,
                snapshot,
                lineage,
                matched_lsn: snapshot.then_some(last_lsn),
            }
        ),
        (
            any::<(u64, u64, (u64, u32), u64)>(),
            vec((".{0,10}", any::<u64>(), any::<u64>()), 0..4),
            vec(any::<(u64, u64)>(), 0..3)
        )
            .prop_map(|((lsn, epoch, id, lineage), tables, history)| {
                Message::SnapshotBegin {
                    lsn,
                    epoch,
                    id,
                    lineage,
                    tables,
                    history,
                }
            }),
        (".{0,10}", vec((bytes(20), bytes(40)), 0..4))
            .prop_map(|(table, rows)| Message::SnapshotRows { table, rows }),
        Just(Message::SnapshotEnd),
        (".{0,40}", refuse_code(), any::<(u64, Option<u64>)>()).prop_map(
            |(reason, code, (epoch, fork_lsn))| Message::Refused {
                reason,
                code,
                epoch,
                fork_lsn
            }
        ),
        entries(),
        any::<(u64, u64, u64)>().prop_map(|(flushed_lsn, applied_lsn, members_version)| {
            Message::Ack {
                flushed_lsn,
                applied_lsn,
                members_version,
            }
        }),
        (
            any::<(u64, u64, u64, u64, (u64, u64))>(),
            vec((".{0,10}", ".{0,20}"), 0..3)
        )
            .prop_map(
                |((last_lsn, oldest_missing_ms, now_ms, epoch, (quorum, members)), peers)| {
                    Message::Heartbeat {
                        last_lsn,
                        oldest_missing_ms,
                        now_ms,
                        epoch,
                        quorum,
                        members,
                        peers,
                        settings: None,
                        members_version: quorum ^ members,
                        member_ids: vec![("eu-1".into(), now_ms)],
                    }
                }
            ),
        granted(),
        any::<(u64, u64)>().prop_map(|(after_lsn, up_to_lsn)| Message::Fetch {
            after_lsn,
            up_to_lsn
        }),
        prop_oneof![".{0,30}", "[a-z0-9.]{1,20}:[0-9]{1,5}"]
            .prop_map(|address| Message::Lead { address }),
        ".{0,30}".prop_map(|name| Message::DropSlot { name }),
        (any::<(u64, u64, u64)>(), vec(link(), 0..3)).prop_map(
            |((last_lsn, epoch, rejected), replicas)| Message::Status {
                last_lsn,
                epoch,
                rejected,
                replicas,
                sync_state: SyncState::Degraded,
            }
        ),
    ]
}

/// Reads every frame of `stream` as a connection would, until the first error.
fn read_all(stream: &[u8]) -> (Vec<Message>, Option<ReplicationError>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("invariant: a current-thread runtime starts");
    runtime.block_on(async {
        let mut reader = stream;
        let mut messages = Vec::new();
        loop {
            match read_frame(&mut reader).await {
                Ok(message) => messages.push(message),
                Err(err) => return (messages, Some(err)),
            }
        }
    })
}

proptest! {
    /// Arbitrary bytes on a connection are refused; they never panic.
    #[test]
    fn fuzz_frame_decoder_never_panics_on_arbitrary_bytes(stream in vec(any::<u8>(), 0..400)) {
        let (_, err) = read_all(&stream);
        prop_assert!(err.is_some(), "a stream always ends in an error (at its end, at the latest)");
        if stream.len() >= 4 {
            if let Ok(len) = check_frame_len(stream[..4].try_into().unwrap()) {
                let _ = decode_frame_body(&stream[4..stream.len().min(4 + len)]);
            }
        }
    }

    /// Arbitrary payloads inside a valid envelope (version, any type byte, CRC): refused
    /// or decoded, never a panic.
    #[test]
    fn fuzz_frame_decoder_never_panics_inside_a_valid_envelope(
        kind: u8,
        payload in vec(any::<u8>(), 0..300),
    ) {
        let mut body = vec![PROTOCOL_VERSION, kind];
        body.extend_from_slice(&payload);
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_be_bytes());
        if let Ok(message) = decode_frame_body(&body) {
            prop_assert_eq!(message.type_byte(), kind);
        }
    }

    /// Valid frames round-trip, back to back on one stream, and any flipped byte after
    /// the length is refused. A frame naming an epoch or an LSN no store reaches, or a
    /// lead to no address, is refused as a protocol error, and ends the stream there.
    #[test]
    fn fuzz_frames_round_trip_and_refuse_any_flip(
        first in message(),
        second in message(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let frame = encode_frame(&first).unwrap();
        let mut stream = frame.clone();
        stream.extend(encode_frame(&second).unwrap());
        let (messages, err) = read_all(&stream);
        let refusal = [&first, &second].into_iter().find_map(|m| m.check_plausible().err());
        let plausible: Vec<Message> = [first, second]
            .into_iter()
            .take_while(|m| m.check_plausible().is_ok())
            .collect();
        if let Some(refusal) = refusal {
            prop_assert!(
                matches!(&err, Some(ReplicationError::Protocol(reason)) if *reason == refusal),
                "{err:?}"
            );
        }
        prop_assert_eq!(messages, plausible);
        let mut bad = frame.clone();
        let at = 4 + at.index(frame.len() - 4);
        bad[at] ^= flip;
        let len = check_frame_len(bad[..4].try_into().unwrap()).unwrap();
        prop_assert!(decode_frame_body(&bad[4..4 + len]).is_err());
    }
}
