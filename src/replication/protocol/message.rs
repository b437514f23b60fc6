//! The protocol's messages: what each peer kind may say, and refusals as errors.

use serde_bytes::ByteBuf;
use serde_derive::{Deserialize, Serialize};

use crate::error::ReplicationError;
use crate::follow::SumsAt;
use crate::replication::status::{ReplicaLink, SyncState};
use crate::replication::verify::VerifyReport;

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
    /// `Hello` names (`replikv switchover`), or the [`Message::DropSlot`] that follows a
    /// `Hello` named [`DROP_SLOT_REQUEST`]; at a replica's member address, a
    /// [`Message::Lead`] to follow (`replikv follow`), whose `Hello` is named
    /// [`FOLLOW_REQUEST`]. A `Lead` answers either.
    Operator,
}

/// The name an operator's `Hello` gives for a request to follow: reserved (no replica can
/// be named so), so that a primary never takes it for a switchover to a replica.
pub const FOLLOW_REQUEST: &str = "__follow";

/// The name an operator's `Hello` gives for a request to drop a slot (a
/// [`Message::DropSlot`] follows it): reserved, as [`FOLLOW_REQUEST`] is.
pub const DROP_SLOT_REQUEST: &str = "__drop_slot";

impl PeerKind {
    /// The name of a streaming peer's link: a replica's own name; another kind's name
    /// with its kind, so that it never takes a replica's place.
    #[must_use]
    pub fn link_name(self, name: &str) -> String {
        if self == PeerKind::Replica {
            name.to_owned()
        } else {
            format!("{name} ({self:?})")
        }
    }

    /// The peer's own name in a link name made by [`PeerKind::link_name`].
    #[must_use]
    pub fn peer_name(self, link: &str) -> &str {
        if self == PeerKind::Replica {
            return link;
        }
        link.strip_suffix(&format!(" ({self:?})")).unwrap_or(link)
    }

    /// The name shown to users of a streaming peer's kind: `"replica"` or `"consumer"`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Replica => "replica",
            PeerKind::Consumer => "consumer",
            PeerKind::Monitor => "monitor",
            PeerKind::Verifier => "verifier",
            PeerKind::Candidate => "candidate",
            PeerKind::Operator => "operator",
        }
    }
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
        /// The id of a replica's store directory (`Store::store_id`; 0 from a consumer or
        /// an older peer): a reconnection of the same replica replaces its old connection,
        /// another replica given the same name is refused.
        #[serde(default)]
        store_id: u64,
        /// A replica that holds entries back from its readers until its primary says they
        /// are durable there (so that it may be shipped them before): each entry of its log
        /// from the last one confirmed to `flushed_lsn`, `(lsn, (epoch, crc))`. `None`
        /// from a peer that does not hold back (or is older).
        #[serde(default)]
        held: Option<Vec<(u64, (u64, u32))>>,
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
        /// For a replica that holds back: the last of its entries the primary's log holds
        /// the same (its log is cut after it, or after its confirmed LSN if that is later).
        /// `None` otherwise, and from an older primary.
        #[serde(default)]
        matched_lsn: Option<u64>,
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
        /// Entries up to here are durable at the sender (absent from an older sender: all
        /// of them are). A primary that ships entries before its own fdatasync ends sends
        /// them only to a replica that holds such entries back from its readers until a
        /// later frame says they are durable.
        #[serde(default = "all_durable")]
        durable_lsn: u64,
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
        /// As in `Entries`.
        #[serde(default = "all_durable")]
        durable_lsn: u64,
    },
    /// Replica -> primary: cumulative acknowledgement.
    Ack {
        /// Last LSN durable in the replica's log.
        flushed_lsn: u64,
        /// Last LSN its readers see.
        applied_lsn: u64,
        /// The newest `members_version` a heartbeat of this connection carried whose
        /// membership the replica has recorded durably (0: none, or an older replica).
        #[serde(default)]
        members_version: u64,
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
        /// The primary's settings (absent from an older primary): what a promotion of the
        /// replica serves with unless told otherwise, so that tables written synchronously
        /// stay so after a failover.
        #[serde(default)]
        settings: Option<crate::replication::handover::Settings>,
        /// The version of the membership `members` counts (0 from an older primary):
        /// bumped whenever a counting replica joins or leaves. A replica echoes it in its
        /// acks once it has recorded `quorum` and `members` durably, which is what lets a
        /// joining replica count toward the quorum.
        #[serde(default)]
        members_version: u64,
        /// The store directory of each replica that counts, `(name, store id)` (those
        /// whose id is known): a promotion counts a member only from the directory its
        /// membership names, not from another one given that name (a directory replaced,
        /// then the old one started again).
        #[serde(default)]
        member_ids: Vec<(String, u64)>,
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
        /// The membership it recorded from its primary: the candidate's promotion must
        /// meet it too.
        #[serde(default)]
        view: crate::replication::machine::promotion::View,
        /// The id of its store directory (0: unknown).
        #[serde(default)]
        store_id: u64,
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
        settings: crate::replication::handover::Settings,
        /// The replicas that counted toward the old primary's quorum (the old primary
        /// itself among them, under the name it follows with, and not the receiver): the
        /// new primary expects them, so that a sync write waits for them rather than
        /// being refused before they reconnect. Each with its store directory and whether
        /// it was still joining.
        members: Vec<crate::replication::handover::HandedMember>,
    },
    /// Operator -> primary, after a `Hello` named [`DROP_SLOT_REQUEST`]: drop the slot of
    /// the replica `name`, which is gone for good (`replikv drop-slot`). A `Status` taken
    /// after the drop answers it.
    DropSlot {
        /// The replica whose slot goes.
        name: String,
    },
}

/// Epochs and LSNs no store reaches (four billion promotions; 2^53 entries, centuries of
/// writes at millions a second): a frame that names one is a protocol error, before
/// anything remembers it. A forged `u64::MAX` epoch would otherwise fence a primary for
/// good, and wrap the next promotion's epoch; a snapshot at LSN `u64::MAX` would leave a
/// replica whose next LSN is 0.
pub const MAX_EPOCH: u64 = 1 << 32;
/// See [`MAX_EPOCH`].
pub const MAX_LSN: u64 = 1 << 53;

impl Message {
    /// Checks the epochs and LSNs the message names against [`MAX_EPOCH`] and [`MAX_LSN`]
    /// (`durable_lsn` is left out: `u64::MAX` there means "all of them"), and that a
    /// `Lead` names a `host:port` (a replica told to follow anything else would retry it
    /// for ever).
    ///
    /// # Errors
    /// Which bound a field passes, for a person.
    pub fn check_plausible(&self) -> Result<(), String> {
        // The frames of every batch and ack first, with nothing allocated.
        match self {
            Message::Lead { address } => {
                return crate::net::client::check_address(address).map_err(|e| e.to_string())
            }
            Message::Entries { epoch, .. } => return check_bounds(&[*epoch], &[]),
            Message::EntryPart { lsn, .. } => return check_bounds(&[], &[*lsn]),
            Message::Ack {
                flushed_lsn,
                applied_lsn,
                ..
            } => return check_bounds(&[], &[*flushed_lsn, *applied_lsn]),
            _ => {}
        }
        let mut epochs = Vec::new();
        let mut lsns = Vec::new();
        let mut history_of = |history: &[(u64, u64)]| {
            for &(epoch, start) in history {
                epochs.push(epoch);
                lsns.push(start);
            }
        };
        match self {
            Message::Hello { history, held, .. } => {
                history_of(history);
                let held: Vec<(u64, u64)> = held
                    .iter()
                    .flatten()
                    .map(|&(lsn, (epoch, _))| (epoch, lsn))
                    .collect();
                history_of(&held);
            }
            Message::SnapshotBegin { history, .. } | Message::Granted { history, .. } => {
                history_of(history);
            }
            _ => {}
        }
        match self {
            Message::Hello {
                epoch,
                flushed_lsn,
                flushed_id,
                ..
            } => {
                epochs.extend([*epoch, flushed_id.0]);
                lsns.push(*flushed_lsn);
            }
            Message::Welcome {
                epoch,
                last_lsn,
                matched_lsn,
                ..
            } => {
                epochs.push(*epoch);
                lsns.extend(std::iter::once(*last_lsn).chain(*matched_lsn));
            }
            Message::SnapshotBegin { lsn, epoch, id, .. } => {
                epochs.extend([*epoch, id.0]);
                lsns.push(*lsn);
            }
            Message::Refused {
                epoch, fork_lsn, ..
            } => {
                epochs.push(*epoch);
                lsns.extend(*fork_lsn);
            }
            Message::Granted { flushed_lsn, .. } => lsns.push(*flushed_lsn),
            Message::Fetch {
                after_lsn,
                up_to_lsn,
            } => lsns.extend([*after_lsn, *up_to_lsn]),
            Message::Heartbeat {
                last_lsn, epoch, ..
            }
            | Message::Handover {
                epoch, last_lsn, ..
            } => {
                epochs.push(*epoch);
                lsns.push(*last_lsn);
            }
            _ => {}
        }
        check_bounds(&epochs, &lsns)
    }
}

/// The first of `epochs` past [`MAX_EPOCH`] or of `lsns` past [`MAX_LSN`], as an error.
fn check_bounds(epochs: &[u64], lsns: &[u64]) -> Result<(), String> {
    if let Some(epoch) = epochs.iter().find(|&&e| e > MAX_EPOCH) {
        return Err(format!(
            "epoch {epoch} is past any a store reaches ({MAX_EPOCH})"
        ));
    }
    if let Some(lsn) = lsns.iter().find(|&&l| l > MAX_LSN) {
        return Err(format!("LSN {lsn} is past any a store reaches ({MAX_LSN})"));
    }
    Ok(())
}

/// What an older sender's entries are: durable, every one.
fn all_durable() -> u64 {
    u64::MAX
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
    /// Another running replica is connected under the same name: retry later (it gets in
    /// once the other disconnects). Older peers retry as for `Busy`.
    NameInUse,
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
            RefuseCode::Protocol | RefuseCode::Busy | RefuseCode::NameInUse => {
                ReplicationError::Refused { reason }
            }
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
            Message::DropSlot { .. } => 20,
        }
    }
}
