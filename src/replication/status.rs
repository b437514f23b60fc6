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

/// What a replica last heard from its primary, for the lag it reports.
#[derive(Debug, Clone, Copy)]
pub struct LastHeard {
    /// Entries the primary had (as last heard) that the replica has not applied.
    pub lag_lsn: u64,
    /// Commit time (primary's clock) of the oldest of them, 0 if not told.
    pub oldest_missing_ms: u64,
    /// The primary's clock now, estimated from its last heartbeat (`None`: none came).
    pub primary_now_ms: Option<u64>,
    /// How long ago that heartbeat came.
    pub ago: Option<std::time::Duration>,
    /// How often the primary sends heartbeats, as last heard (the longest interval a
    /// primary is given, while not told).
    pub beat_every: std::time::Duration,
}

/// The lag in seconds a replica reports when its link is in `state`. While the link is
/// up, the age of its oldest missing entry on the primary's clock (NaN while behind with no
/// heartbeat yet to date it). While it is down, the replica cannot know what it misses: at
/// least the time since it last heard the primary (NaN if it never did), so that a replica
/// cut off never looks current. So too while it is up but its heartbeats stopped coming
/// (two intervals late: a primary frozen, a link that black-holes) before the link times
/// out. A promoted replica is the primary: 0.
#[must_use]
pub fn replica_lag_seconds(state: LinkState, heard: LastHeard) -> f64 {
    let known = match (heard.lag_lsn, heard.primary_now_ms) {
        (0, _) => 0.0,
        (_, Some(now)) if heard.oldest_missing_ms > 0 => {
            lag_seconds(Some(heard.oldest_missing_ms), now)
        }
        _ => f64::NAN,
    };
    match state {
        LinkState::Promoted => 0.0,
        up if up.is_connected() => match heard.ago {
            Some(ago) if ago > 2 * heard.beat_every => known.max(ago.as_secs_f64()),
            _ => known,
        },
        _ => heard
            .ago
            .map_or(f64::NAN, |ago| known.max(ago.as_secs_f64())),
    }
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

    fn heard(lag_lsn: u64, oldest_missing_ms: u64, ago_ms: Option<u64>) -> LastHeard {
        LastHeard {
            lag_lsn,
            oldest_missing_ms,
            primary_now_ms: ago_ms.map(|ago| 10_000 + ago),
            ago: ago_ms.map(std::time::Duration::from_millis),
            beat_every: std::time::Duration::from_secs(2),
        }
    }

    #[test]
    fn a_connected_replica_reports_the_age_of_its_oldest_missing_entry() {
        let caught_up = heard(0, 0, Some(3_000));
        assert!(replica_lag_seconds(LinkState::Streaming, caught_up).abs() < f64::EPSILON);
        let behind = heard(5, 9_000, Some(500));
        assert!((replica_lag_seconds(LinkState::CatchingUp, behind) - 1.5).abs() < 1e-9);
        assert!(replica_lag_seconds(LinkState::Streaming, heard(5, 0, None)).is_nan());
    }

    #[test]
    fn a_connected_replica_whose_heartbeats_stopped_reports_at_least_their_silence() {
        let on_time = heard(0, 0, Some(4_000));
        assert!(replica_lag_seconds(LinkState::Streaming, on_time).abs() < f64::EPSILON);
        let late = LastHeard {
            beat_every: std::time::Duration::from_millis(500),
            ..on_time
        };
        assert!((replica_lag_seconds(LinkState::Streaming, late) - 4.0).abs() < 1e-9);
        let behind_longer = LastHeard {
            beat_every: std::time::Duration::from_millis(500),
            ..heard(5, 1_000, Some(2_000))
        };
        assert!((replica_lag_seconds(LinkState::CatchingUp, behind_longer) - 11.0).abs() < 1e-9);
    }

    #[test]
    fn a_replica_cut_off_reports_at_least_the_time_since_it_last_heard_its_primary() {
        for down in [
            LinkState::Connecting,
            LinkState::Disconnected,
            LinkState::Failed,
        ] {
            let caught_up = heard(0, 0, Some(4_000));
            assert!((replica_lag_seconds(down, caught_up) - 4.0).abs() < 1e-9);
            let far_behind = heard(5, 1_000, Some(2_000));
            assert!((replica_lag_seconds(down, far_behind) - 11.0).abs() < 1e-9);
            assert!(replica_lag_seconds(down, heard(0, 0, None)).is_nan());
        }
        let promoted = replica_lag_seconds(LinkState::Promoted, heard(3, 1_000, Some(9_000)));
        assert!(promoted.abs() < f64::EPSILON);
    }
}
