//! What the primary and the replicas report about each other: state and lag.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_derive::{Deserialize, Serialize};

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
}

impl LinkState {
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
    fn lag_is_zero_when_nothing_is_missing_and_measured_on_one_clock_otherwise() {
        assert!(lag_seconds(None, 5_000).abs() < f64::EPSILON);
        assert!((lag_seconds(Some(4_000), 5_500) - 1.5).abs() < 1e-9);
        assert!(
            lag_seconds(Some(6_000), 5_000).abs() < f64::EPSILON,
            "never negative"
        );
    }
}
