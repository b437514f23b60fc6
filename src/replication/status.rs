//! What the primary and the replicas report about each other: state and lag.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_derive::{Deserialize, Serialize};

use crate::replication::protocol::PeerKind;

/// Milliseconds since the Unix epoch, by this machine's clock.
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where a replica stands in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkState {
    /// Trying to reach the other side.
    Connecting,
    /// Receiving a snapshot (its position was no longer in the primary's log).
    Snapshot,
    /// Behind, and being sent the backlog.
    CatchingUp,
    /// Up to date, receiving entries as they commit.
    Streaming,
    /// Not connected (it will retry).
    Disconnected,
    /// Stopped for good: a refusal that retrying cannot fix (divergence, auth).
    Failed,
    /// A planned switchover made it the primary: it follows nobody now.
    Promoted,
    /// Its owner closed it: it follows nobody now. Never sent over the wire (a primary
    /// reports a replica that left as [`LinkState::Disconnected`]).
    Closed,
}

impl LinkState {
    /// Whether the link is up (it may still be catching up).
    #[must_use]
    pub fn is_connected(self) -> bool {
        matches!(
            self,
            LinkState::Snapshot | LinkState::CatchingUp | LinkState::Streaming
        )
    }

    /// The name shown to users.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Snapshot => "snapshot",
            LinkState::CatchingUp => "catching_up",
            LinkState::Streaming => "streaming",
            LinkState::Disconnected => "disconnected",
            LinkState::Failed => "failed",
            LinkState::Promoted => "promoted",
            LinkState::Closed => "closed",
        }
    }
}

/// Whether a peer's acks count toward the quorum of sync writes (the words of
/// `PostgreSQL`'s `pg_stat_replication.sync_state`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRole {
    /// A replica that fsyncs: its acks count.
    Quorum,
    /// A replica with `fsync=False`, or a consumer: its acks never count.
    #[default]
    Async,
    /// A replica that fsyncs and joined while this primary served: its acks count once
    /// every counting replica has recorded that it joined (until then, a promotion that
    /// had not heard of it could miss the writes it acknowledged).
    Joining,
}

impl SyncRole {
    /// The name shown to users: `"quorum"`, `"async"` or `"joining"`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            SyncRole::Quorum => "quorum",
            SyncRole::Async => "async",
            SyncRole::Joining => "joining",
        }
    }
}

/// Whether a primary can take sync writes now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncState {
    /// At least `quorum` counting replicas are connected: sync writes complete.
    Ok,
    /// Enough counting replicas are registered but fewer than `quorum` are connected: sync
    /// writes commit and wait, and time out unless enough of them come back.
    Degraded,
    /// Fewer counting replicas than `quorum` are registered, or the primary is deposed:
    /// sync writes are refused.
    #[default]
    Unavailable,
}

impl SyncState {
    /// The state of a primary with `connected` and `registered` counting replicas.
    #[must_use]
    pub fn of(connected: usize, registered: usize, quorum: usize) -> Self {
        if registered < quorum {
            SyncState::Unavailable
        } else if connected < quorum {
            SyncState::Degraded
        } else {
            SyncState::Ok
        }
    }

    /// The name shown to users: `"ok"`, `"degraded"` or `"unavailable"`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            SyncState::Ok => "ok",
            SyncState::Degraded => "degraded",
            SyncState::Unavailable => "unavailable",
        }
    }
}

/// One replica as the primary sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaLink {
    /// Its name (slot).
    pub name: String,
    /// Its address as the primary sees it.
    pub address: String,
    /// Its state.
    pub state: LinkState,
    /// The last LSN shipped to it.
    pub sent_lsn: u64,
    /// The last LSN it acknowledged as durable.
    pub acked_lsn: u64,
    /// How many LSNs it is behind the primary.
    pub lag_lsn: u64,
    /// Bytes of entries shipped but not acknowledged.
    pub lag_bytes: u64,
    /// Seconds between the commit of its oldest missing entry and now (primary's clock).
    pub lag_seconds: f64,
    /// When the primary last heard from it (ms since the Unix epoch).
    pub last_seen_ms: u64,
    /// Whether its acks count toward the quorum (absent from older primaries: async).
    #[serde(default)]
    pub sync_state: SyncRole,
    /// `"replica"` or `"consumer"` (a cache node, a change-feed reader); absent from
    /// older primaries, which named a consumer `"<name> (Consumer)"`.
    #[serde(default = "replica_kind")]
    pub kind: String,
}

fn replica_kind() -> String {
    PeerKind::Replica.name().to_owned()
}

/// The lag in seconds of a peer that has applied up to an entry committed at
/// `oldest_missing_commit_ms` (`None` when nothing is missing), at primary time `now_ms`.
#[must_use]
pub fn lag_seconds(oldest_missing_commit_ms: Option<u64>, now_ms: u64) -> f64 {
    oldest_missing_commit_ms.map_or(0.0, |commit| {
        std::time::Duration::from_millis(now_ms.saturating_sub(commit)).as_secs_f64()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_state_is_unavailable_below_the_quorum_registered_and_degraded_below_it_connected() {
        assert_eq!(SyncState::of(0, 1, 2), SyncState::Unavailable);
        assert_eq!(SyncState::of(1, 3, 2), SyncState::Degraded);
        assert_eq!(SyncState::of(2, 3, 2), SyncState::Ok);
    }

    #[test]
    fn lag_is_zero_when_nothing_is_missing_and_measured_on_one_clock_otherwise() {
        assert!(lag_seconds(None, 5_000).abs() < f64::EPSILON);
        assert!((lag_seconds(Some(4_000), 5_500) - 1.5).abs() < 1e-9);
        assert!(
            lag_seconds(Some(6_000), 5_000).abs() < f64::EPSILON,
            "never negative"
        );
    }
}
