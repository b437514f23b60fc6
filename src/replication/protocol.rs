//! The replication wire protocol (DESIGN §5): framed, versioned, checksummed messages.
//!
//! ```text
//! frame = len u32 BE | version u8 | type u8 | payload | crc32c(version, type, payload) u32 BE
//! ```
//! `len` counts every byte after itself and is capped at [`MAX_FRAME_BYTES`]: a larger
//! length is refused before anything is allocated. The payload is the message encoded as
//! `MessagePack` with serde; `type` repeats the message kind so that a reader can refuse a
//! frame without decoding it.

use std::time::Duration;

use serde_bytes::ByteBuf;
use serde_derive::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::status::{ReplicaLink, SyncState};
use super::verify::VerifyReport;
use crate::error::{NetError, ReplicationError};
use crate::follow::SumsAt;

/// The protocol version this build speaks.
/// Version 2 (issue 8) added fields to `Hello`, `Entries`, `Heartbeat`, `Refused` and
/// `SnapshotBegin`, and the verification messages. A peer of version 1 cannot decode those
/// longer messages (`MessagePack` arrays with more elements than it expects): the
/// version byte makes the two refuse each other with a clear error instead.
pub const PROTOCOL_VERSION: u8 = 2;
/// The largest frame accepted (after the length field). Entries larger than this travel in
/// parts; a single snapshot row (key and value) must fit in one frame.
pub const MAX_FRAME_BYTES: usize = 64 << 20;
/// The largest handshake frame (challenge, hello, welcome).
pub const HANDSHAKE_FRAME_BYTES: usize = 64 << 10;
/// Bytes of version, type and CRC around a payload.
const FRAME_OVERHEAD: usize = 6;

/// What a connecting peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerKind {
    /// A replica: holds a durable slot and a copy of the data.
    Replica,
    /// A consumer (a cache node, an analytics reader): no slot, no data.
    Consumer,
    /// A monitor (`replikv status`): gets one status report, then the connection ends.
    Monitor,
    /// A verifier (`replikv verify`): gets one [`Message::VerifyReport`], then the
    /// connection ends.
    Verifier,
    /// A replica being promoted, at another replica's member address: its `Hello` asks
    /// the member to raise its epoch to the hello's `epoch` ([`Message::Granted`] answers).
    Candidate,
    /// An operator's one instruction: at a primary, a switchover to the replica its
    /// `Hello` names (`replikv switchover`); at a replica's member address, a
    /// [`Message::Lead`] to follow (`replikv follow`). A `Lead` answers either.
    Operator,
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Primary -> peer, first: a fresh nonce to prove the token with.
    Challenge {
        /// 32 random bytes.
        nonce: ByteBuf,
    },
    /// Peer -> primary: who it is, proof of the token, and where it stands.
    Hello {
        /// Replica or consumer.
        kind: PeerKind,
        /// Its name (a replica's slot name).
        name: String,
        /// HMAC-SHA256 of the primary's nonce under the token.
        proof: ByteBuf,
        /// A nonce of its own, for the primary to prove the token back.
        nonce: ByteBuf,
        /// The highest epoch it has seen.
        epoch: u64,
        /// The last LSN durable in its log (its resume point).
        flushed_lsn: u64,
        /// `(epoch, crc)` of its entry at `flushed_lsn`, compared with the primary's.
        flushed_id: (u64, u32),
        /// The lineage of its store's history (see `Store::lineage`).
        lineage: u64,
        /// Whether it fsyncs its log, so that its acks may count toward a quorum. Absent
        /// (an older peer): it does not count.
        #[serde(default)]
        fsync: bool,
        /// The epochs its log went through, `(epoch, start_lsn)`: where it forks from the
        /// primary's history is the first LSN they disagree on. Absent (an older peer):
        /// only the entry at `flushed_lsn` is compared.
        #[serde(default)]
        history: Vec<(u64, u64)>,
        /// Where it answers other members (a promotion asks there), and where it serves
        /// replication once promoted; `None` if it does not listen.
        #[serde(default)]
        listen: Option<String>,
    },
    /// Primary -> peer: accepted; a snapshot (if `snapshot`) and then entries follow.
    Welcome {
        /// HMAC-SHA256 of the peer's nonce under the token.
        proof: ByteBuf,
        /// The primary's epoch.
        epoch: u64,
        /// The primary's last LSN.
        last_lsn: u64,
        /// The peer's position is no longer in the log: a snapshot comes first.
        snapshot: bool,
        /// The primary's lineage, which an empty replica takes on.
        lineage: u64,
    },
    /// Primary -> replica: a snapshot of every table at `lsn` starts.
    SnapshotBegin {
        /// The LSN the snapshot reflects; entries after it follow the snapshot.
        lsn: u64,
        /// The epoch at that LSN.
        epoch: u64,
        /// The identity `(epoch, crc)` of the entry at `lsn`.
        id: (u64, u32),
        /// The primary's lineage.
        lineage: u64,
        /// Each table's name, row count and checksum, to check the copy against.
        tables: Vec<(String, u64, u64)>,
        /// The epochs the primary's log went through up to `lsn` (absent from an older
        /// primary, whose log was all epoch 1).
        #[serde(default)]
        history: Vec<(u64, u64)>,
    },
    /// Primary -> replica: rows of one table, in key order.
    SnapshotRows {
        /// The table.
        table: String,
        /// Keys and values as stored.
        rows: Vec<(ByteBuf, ByteBuf)>,
    },
    /// Primary -> replica: the snapshot is complete.
    SnapshotEnd,
    /// Either side: the connection is refused or ended, and why.
    Refused {
        /// Why, for a person.
        reason: String,
        /// Why, for a program.
        code: RefuseCode,
        /// The sender's epoch (0 from an older peer): a fencing refusal's newer epoch.
        #[serde(default)]
        epoch: u64,
        /// For a divergence: the first LSN at which the histories differ, if known.
        #[serde(default)]
        fork_lsn: Option<u64>,
    },
    /// Primary -> replica: whole entries with consecutive LSNs, as the log stores them.
    Entries {
        /// Entry payloads.
        payloads: Vec<ByteBuf>,
        /// The sender's epoch (0 from an older primary: not checked). A replica that has
        /// seen a newer epoch refuses the frame: its sender is deposed.
        #[serde(default)]
        epoch: u64,
    },
    /// Primary -> replica: a slice of an entry too large for one frame.
    EntryPart {
        /// The entry's total size in bytes.
        total: u64,
        /// Where this slice starts.
        offset: u64,
        /// The slice.
        data: ByteBuf,
        /// The entry's LSN, so that a slice of another entry is never glued on (0 from a
        /// primary that predates the field: the size is then the only check).
        #[serde(default)]
        lsn: u64,
    },
    /// Replica -> primary: cumulative acknowledgement.
    Ack {
        /// Last LSN durable in the replica's log.
        flushed_lsn: u64,
        /// Last LSN its readers see.
        applied_lsn: u64,
    },
    /// Primary -> monitor: the primary's position and its replicas.
    Status {
        /// The primary's last LSN.
        last_lsn: u64,
        /// Its epoch.
        epoch: u64,
        /// Connections refused since it started.
        rejected: u64,
        /// Every replica it has seen.
        replicas: Vec<ReplicaLink>,
        /// Whether sync writes can complete (absent from older primaries, which cannot
        /// take sync writes: unavailable).
        #[serde(default)]
        sync_state: SyncState,
    },
    /// Primary -> replica: the primary's position and clock, sent when idle too, so that
    /// lag in seconds is measured against one clock.
    Heartbeat {
        /// The primary's last visible LSN.
        last_lsn: u64,
        /// Commit time of the oldest entry this peer has not acknowledged (ms since the
        /// Unix epoch, primary's clock; 0 when it has them all): its lag starts there.
        /// Exact for an entry shipped to it; for one not shipped yet, when the primary saw
        /// it become visible (at most about one `ship_interval` after its commit).
        oldest_missing_ms: u64,
        /// The primary's clock now (ms since the Unix epoch).
        now_ms: u64,
        /// The sender's epoch, as in `Entries`.
        #[serde(default)]
        epoch: u64,
        /// Its sync quorum, and how many registered replicas could count toward it (0
        /// from an older primary): what a promotion must reach, `members - quorum + 1`.
        #[serde(default)]
        quorum: u64,
        /// See `quorum`.
        #[serde(default)]
        members: u64,
        /// The replicas that count toward the quorum and listen for other members:
        /// `(name, address)`, which a promotion asks to raise their epoch.
        #[serde(default)]
        peers: Vec<(String, String)>,
    },
    /// Primary -> replica: send your recent per-table sums (answered once the entries
    /// received before it are applied).
    VerifyRequest {
        /// Names the request, for the reply.
        id: u64,
        /// Sums taken before this LSN are of no use to the primary (it no longer has its own).
        since_lsn: u64,
    },
    /// Replica -> primary: its recent per-table sums, oldest first.
    VerifyReply {
        /// The request's id.
        id: u64,
        /// Sums at LSNs at or after the request's `since_lsn`.
        sums: Vec<SumsAt>,
    },
    /// Primary -> verifier: how its replicas' tables compare with its own.
    VerifyReport {
        /// The comparison, per replica and table.
        report: VerifyReport,
    },
    /// Member -> candidate: it proved the token back and durably raised its epoch to the
    /// candidate's; this is its log, which it no longer extends from an older primary.
    Granted {
        /// HMAC-SHA256 of the candidate's nonce under the token.
        proof: ByteBuf,
        /// The last LSN durable in its log.
        flushed_lsn: u64,
        /// The epochs its log went through, `(epoch, start_lsn)`.
        history: Vec<(u64, u64)>,
        /// Whether it fsyncs its log (counts toward the quorum).
        counted: bool,
    },
    /// Candidate -> member: send the entries after `after_lsn` up to `up_to_lsn` (as
    /// `Entries` and `EntryPart` frames).
    Fetch {
        /// The candidate's last LSN.
        after_lsn: u64,
        /// The last LSN it needs.
        up_to_lsn: u64,
    },
    /// Candidate -> member, or primary -> replica after a switchover: the primary is at
    /// `address` now; follow it.
    Lead {
        /// The new primary's address.
        address: String,
    },
    /// Primary -> the replica a switchover hands over to, after every entry, with writes
    /// paused: become the primary of `epoch` after `last_lsn`, with these settings.
    Handover {
        /// The new epoch.
        epoch: u64,
        /// The old primary's last LSN, which the replica has acknowledged.
        last_lsn: u64,
        /// The old primary's settings.
        settings: super::handover::Settings,
        /// The replicas that counted toward the old primary's quorum (the old primary
        /// itself among them, under the name it follows with, and not the receiver): the
        /// new primary expects them, so that a sync write waits for them rather than
        /// being refused before they reconnect.
        members: Vec<String>,
    },
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseCode {
    /// The token proof did not verify.
    Auth,
    /// The peer's history forks from the primary's at its resume point.
    Diverged,
    /// The peer's resume point is no longer in the primary's log.
    NeedsSnapshot,
    /// The peer's epoch is newer than the primary's: the primary is deposed.
    Fenced,
    /// Anything else the protocol does not allow.
    Protocol,
    /// The primary is at a connection limit: retry later. (Peers older than this code
    /// cannot decode it, and retry as for any undecodable frame.)
    Busy,
}

impl RefuseCode {
    /// The error a peer reports for a refusal with this code; `epoch` is the newest epoch
    /// known (what a fencing refusal is about), `fork_lsn` where a divergence starts.
    #[must_use]
    pub fn into_error(self, reason: String, epoch: u64, fork_lsn: Option<u64>) -> ReplicationError {
        match self {
            RefuseCode::Auth => ReplicationError::Auth(reason),
            RefuseCode::Diverged => ReplicationError::Diverged { fork_lsn, reason },
            RefuseCode::NeedsSnapshot => ReplicationError::NeedsSnapshot(reason),
            RefuseCode::Fenced => ReplicationError::Fenced { epoch, reason },
            RefuseCode::Protocol | RefuseCode::Busy => ReplicationError::Refused { reason },
        }
    }
}

/// The error for a message that is not the one `expected`: the refusal it carries, or a
/// protocol error.
#[must_use]
pub fn unexpected(message: Message, expected: &str) -> ReplicationError {
    message
        .refusal(0)
        .unwrap_or_else(|| ReplicationError::Protocol(format!("expected {expected}")))
}

impl Message {
    /// The error a refusal stands for (`None` for any other message); `known_epoch` is the
    /// newest epoch the receiver knows of, for a fencing refusal from an older sender.
    #[must_use]
    pub fn refusal(self, known_epoch: u64) -> Option<ReplicationError> {
        match self {
            Message::Refused {
                reason,
                code,
                epoch,
                fork_lsn,
            } => Some(code.into_error(reason, epoch.max(known_epoch), fork_lsn)),
            _ => None,
        }
    }

    /// The frame type byte of this message.
    #[must_use]
    pub fn type_byte(&self) -> u8 {
        match self {
            Message::Challenge { .. } => 1,
            Message::Hello { .. } => 2,
            Message::Welcome { .. } => 3,
            Message::Refused { .. } => 4,
            Message::Entries { .. } => 5,
            Message::EntryPart { .. } => 6,
            Message::Ack { .. } => 7,
            Message::Heartbeat { .. } => 8,
            Message::Status { .. } => 9,
            Message::SnapshotBegin { .. } => 10,
            Message::SnapshotRows { .. } => 11,
            Message::SnapshotEnd => 12,
            Message::VerifyRequest { .. } => 13,
            Message::VerifyReply { .. } => 14,
            Message::VerifyReport { .. } => 15,
            Message::Granted { .. } => 16,
            Message::Fetch { .. } => 17,
            Message::Lead { .. } => 18,
            Message::Handover { .. } => 19,
        }
    }
}

fn protocol(reason: impl Into<String>) -> ReplicationError {
    ReplicationError::Protocol(reason.into())
}

/// Encodes one frame.
///
/// # Errors
/// [`ReplicationError::Protocol`] if the message does not fit in a frame.
pub fn encode_frame(message: &Message) -> Result<Vec<u8>, ReplicationError> {
    let payload = rmp_serde::to_vec(message)
        .map_err(|e| protocol(format!("cannot encode a message: {e}")))?;
    let len = payload.len() + FRAME_OVERHEAD;
    if len > MAX_FRAME_BYTES {
        return Err(protocol(format!(
            "a {len}-byte frame exceeds the {MAX_FRAME_BYTES}-byte limit"
        )));
    }
    let mut frame = Vec::with_capacity(4 + len);
    frame.extend_from_slice(
        &u32::try_from(len)
            .expect("invariant: len <= MAX_FRAME_BYTES")
            .to_be_bytes(),
    );
    frame.push(PROTOCOL_VERSION);
    frame.push(message.type_byte());
    frame.extend_from_slice(&payload);
    let crc = crc32c::crc32c(&frame[4..]);
    frame.extend_from_slice(&crc.to_be_bytes());
    Ok(frame)
}

/// Checks a frame's length field before its body is read: never allocate for a lie.
///
/// # Errors
/// [`ReplicationError::Protocol`] for a length below the minimum or above the cap.
pub fn check_frame_len(header: [u8; 4]) -> Result<usize, ReplicationError> {
    let len = u32::from_be_bytes(header) as usize;
    if !(FRAME_OVERHEAD..=MAX_FRAME_BYTES).contains(&len) {
        return Err(protocol(format!(
            "frame length {len} is outside {FRAME_OVERHEAD}..={MAX_FRAME_BYTES}"
        )));
    }
    Ok(len)
}

/// Decodes a frame body (the `len` bytes after the length field).
///
/// # Errors
/// [`ReplicationError::Version`] for another protocol version; [`ReplicationError::Protocol`]
/// for a bad CRC, a type byte that does not match, or a payload that does not decode.
pub fn decode_frame_body(body: &[u8]) -> Result<Message, ReplicationError> {
    if body.len() < FRAME_OVERHEAD {
        return Err(protocol("truncated frame"));
    }
    let (content, crc) = body.split_at(body.len() - 4);
    if crc32c::crc32c(content) != u32::from_be_bytes(crc.try_into().expect("invariant: 4 bytes")) {
        return Err(protocol("frame checksum mismatch"));
    }
    if content[0] != PROTOCOL_VERSION {
        return Err(ReplicationError::Version {
            ours: PROTOCOL_VERSION,
            theirs: content[0],
        });
    }
    let message: Message = rmp_serde::from_slice(&content[2..])
        .map_err(|e| protocol(format!("undecodable message: {e}")))?;
    if message.type_byte() != content[1] {
        return Err(protocol(format!(
            "frame type {} does not match its message",
            content[1]
        )));
    }
    Ok(message)
}

fn io(context: &str) -> impl FnOnce(std::io::Error) -> ReplicationError + '_ {
    move |source| {
        NetError::Io {
            context: context.to_owned(),
            source,
        }
        .into()
    }
}

/// Reads one frame; its length is checked before anything is allocated.
///
/// # Errors
/// I/O failures (including a closed connection) and protocol violations.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Message, ReplicationError> {
    read_frame_up_to(reader, MAX_FRAME_BYTES).await
}

/// Reads one frame of at most `limit` bytes: before a peer has proved the token, frames
/// are kept small, so that a stranger cannot make the primary allocate much.
async fn read_frame_up_to<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<Message, ReplicationError> {
    let mut header = [0u8; 4];
    reader
        .read_exact(&mut header)
        .await
        .map_err(io("reading a frame"))?;
    let len = check_frame_len(header)?;
    if len > limit {
        return Err(ReplicationError::Protocol(format!(
            "a {len}-byte frame where at most {limit} bytes are allowed"
        )));
    }
    let mut body = vec![0u8; len];
    reader
        .read_exact(&mut body)
        .await
        .map_err(io("reading a frame"))?;
    decode_frame_body(&body)
}

/// Reads one frame, or fails after `timeout`.
///
/// # Errors
/// As [`read_frame`], and [`NetError::TimedOut`].
pub async fn read_frame_within<R: AsyncRead + Unpin>(
    reader: &mut R,
    timeout: Duration,
    what: &str,
) -> Result<Message, ReplicationError> {
    tokio::time::timeout(timeout, read_frame(reader))
        .await
        .map_err(|_| timed_out(what, timeout))?
}

fn timed_out(what: &str, timeout: Duration) -> ReplicationError {
    NetError::TimedOut {
        context: format!("no {what} within {timeout:?}"),
    }
    .into()
}

/// Reads one handshake frame (at most [`HANDSHAKE_FRAME_BYTES`]), or fails after `timeout`.
///
/// # Errors
/// As [`read_frame_within`], and a frame over the handshake limit.
pub async fn read_handshake_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    timeout: Duration,
    what: &str,
) -> Result<Message, ReplicationError> {
    tokio::time::timeout(timeout, read_frame_up_to(reader, HANDSHAKE_FRAME_BYTES))
        .await
        .map_err(|_| timed_out(what, timeout))?
}

/// Writes one frame.
///
/// # Errors
/// I/O failures, or a message too large for a frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &Message,
) -> Result<(), ReplicationError> {
    let frame = encode_frame(message)?;
    writer
        .write_all(&frame)
        .await
        .map_err(io("writing a frame"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            },
            Message::Welcome {
                proof: ByteBuf::from(vec![3; 32]),
                epoch: 3,
                last_lsn: 120,
                snapshot: true,
                lineage: 77,
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
            },
            Message::EntryPart {
                total: 100,
                offset: 50,
                data: ByteBuf::from(vec![5; 50]),
                lsn: 12,
            },
            Message::Ack {
                flushed_lsn: 5,
                applied_lsn: 5,
            },
            Message::Heartbeat {
                last_lsn: 7,
                oldest_missing_ms: 1,
                now_ms: 2,
                epoch: 3,
                quorum: 2,
                members: 3,
                peers: vec![("eu-2".into(), "127.0.0.1:7403".into())],
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
            },
            Message::Fetch {
                after_lsn: 38,
                up_to_lsn: 40,
            },
            Message::Lead {
                address: "127.0.0.1:7401".into(),
            },
            Message::Handover {
                epoch: 3,
                last_lsn: 40,
                settings: crate::replication::handover::Settings::of(
                    &crate::replication::primary::PrimaryOptions::default(),
                ),
                members: vec!["us-1".into(), "old".into()],
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
                    ..
                }
            ),
            "{decoded:?}"
        );
    }

    #[test]
    fn a_message_too_large_for_a_frame_is_refused_on_encode() {
        let huge = Message::Entries {
            payloads: vec![ByteBuf::from(vec![0; MAX_FRAME_BYTES])],
            epoch: 1,
        };
        assert!(encode_frame(&huge).is_err());
    }
}

/// Fuzz targets of the frame decoder, on stable Rust with proptest. `cargo test` runs a few
/// hundred cases of each; a longer run:
/// `PROPTEST_CASES=100000 cargo test --release --no-default-features fuzz_`.
#[cfg(test)]
mod fuzz {
    use super::*;
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
            prop_oneof![Just(SyncRole::Quorum), Just(SyncRole::Async)],
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
            vec(any::<(u64, u64)>(), 0..3),
            proptest::option::of(".{0,20}"),
        )
            .prop_map(
                |(
                    kind,
                    name,
                    proof,
                    nonce,
                    (epoch, flushed_lsn, flushed_id, lineage, fsync),
                    history,
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
                    }
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
                    lineage
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
            (vec(bytes(60), 0..5), any::<u64>())
                .prop_map(|(payloads, epoch)| Message::Entries { payloads, epoch }),
            (any::<(u64, u64, u64)>(), bytes(60)).prop_map(|((total, offset, lsn), data)| {
                Message::EntryPart {
                    total,
                    offset,
                    data,
                    lsn,
                }
            }),
            any::<(u64, u64)>().prop_map(|(flushed_lsn, applied_lsn)| Message::Ack {
                flushed_lsn,
                applied_lsn
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
                        }
                    }
                ),
            (
                bytes(40),
                any::<(u64, bool)>(),
                vec(any::<(u64, u64)>(), 0..3)
            )
                .prop_map(|(proof, (flushed_lsn, counted), history)| {
                    Message::Granted {
                        proof,
                        flushed_lsn,
                        history,
                        counted,
                    }
                }),
            any::<(u64, u64)>().prop_map(|(after_lsn, up_to_lsn)| Message::Fetch {
                after_lsn,
                up_to_lsn
            }),
            ".{0,30}".prop_map(|address| Message::Lead { address }),
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
        /// the length is refused.
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
            let (messages, _) = read_all(&stream);
            prop_assert_eq!(messages, vec![first, second]);
            let mut bad = frame.clone();
            let at = 4 + at.index(frame.len() - 4);
            bad[at] ^= flip;
            let len = check_frame_len(bad[..4].try_into().unwrap()).unwrap();
            prop_assert!(decode_frame_body(&bad[4..4 + len]).is_err());
        }
    }
}
