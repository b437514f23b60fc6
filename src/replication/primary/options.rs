//! How a primary serves its replicas: its options, their bounds and defaults.

use std::time::Duration;

use crate::replication::machine::PrimaryConfig;
use crate::replication::quorum::SyncOptions;

/// The longest heartbeat interval (replicas drop a link silent for 5 s).
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(2);
/// The shortest heartbeat interval a primary is given.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
/// The smallest `max_batch_bytes`: a batch must have room for at least a small entry.
pub const MIN_BATCH_BYTES: usize = 4096;
/// Replicas, consumers and monitors served at once, at most (more are refused as busy).
pub(super) const MAX_AUTHENTICATED: usize = 256;
/// A link that keeps up ships entries no sync writer waits for at most this often, even
/// with a zero `ship_interval`: a replica fsyncs each batch it gets, so a primary with one
/// durable writer that shipped every commit on its own would double the fsyncs of a disk
/// that the two share. Entries a sync writer waits for ship at once.
pub(super) const MIN_SHIP_INTERVAL: Duration = Duration::from_millis(1);
/// Connections that have not proved the token yet, at most: a newer one displaces the
/// oldest, so that strangers holding sockets open never lock out replicas and monitors.
pub(super) const MAX_UNAUTHENTICATED: usize = 32;

/// How a primary serves its replicas.
#[derive(Debug, Clone)]
pub struct PrimaryOptions {
    /// Address to listen on (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Shared token; without one only loopback peers may connect.
    pub token: Option<String>,
    /// Entries are shipped in batches at most this often (zero ships eagerly: within about
    /// a millisecond, and at once when a sync writer waits for them).
    pub ship_interval: Duration,
    /// Bytes of entries per batch at most (one entry larger than this still goes alone).
    pub max_batch_bytes: usize,
    /// How often an idle connection carries a heartbeat.
    pub heartbeat_interval: Duration,
    /// Keep at most this many bytes of log, even if a slot still needs them (that replica
    /// will then need a snapshot). `None`: the store's `retain_bytes`.
    pub retain_bytes: Option<u64>,
    /// Drop log segments whose entries are all older than this, even if a slot still needs
    /// them. `None`: the store's `retain_seconds`.
    pub retain_seconds: Option<Duration>,
    /// How often slots are persisted and retention runs.
    pub retention_interval: Duration,
    /// Quorum, timeout and per-table modes of sync writes.
    pub sync: SyncOptions,
    /// Ship a sync writer's entry to replicas that hold back as soon as it is written, so
    /// that this primary's fdatasync and theirs overlap (see [`super::ahead`]): a sync write then
    /// costs about the longer of the two paths, not their sum. It returns once the entry is
    /// durable here and in `quorum` replicas' logs; such a replica shows it once told it is
    /// durable here (told at once while a sync writer waits), a frame later, and a
    /// promotion shows all it holds. Off by default:
    /// each sync write then costs every replica a second frame and a second apply, which
    /// on two cores shared with the replicas cost async writers beside a sync writer
    /// about a fifth of their rate (`benches/bench_sync.py --ship-ahead`).
    pub ship_ahead: bool,
}

impl PrimaryOptions {
    /// A link that takes no bytes, or sends no ack, for this long is dropped, whatever it
    /// is doing (streaming, receiving a snapshot, answering the handshake): four
    /// heartbeats and a second. An ack may take a second longer per
    /// [`APPLIED_PER_SECOND`](crate::replication::machine::primary::APPLIED_PER_SECOND)
    /// bytes shipped and not acknowledged (a replica acks a batch once it is applied).
    #[must_use]
    pub fn stall_timeout(&self) -> Duration {
        self.heartbeat_interval * 4 + Duration::from_secs(1)
    }

    /// The protocol's rules, as the state machine takes them.
    pub(super) fn machine_config(&self) -> PrimaryConfig {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        PrimaryConfig {
            quorum: self.sync.quorum,
            ship_interval: micros(self.ship_interval.max(MIN_SHIP_INTERVAL)),
            heartbeat_interval: micros(self.heartbeat_interval),
            stall_timeout: micros(self.stall_timeout()),
            catch_up_entries: 4096,
        }
    }
}

impl Default for PrimaryOptions {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".to_owned(),
            token: None,
            ship_interval: Duration::from_millis(50),
            max_batch_bytes: 4 << 20,
            heartbeat_interval: Duration::from_millis(500),
            retain_bytes: None,
            retain_seconds: None,
            retention_interval: Duration::from_secs(1),
            sync: SyncOptions::default(),
            ship_ahead: false,
        }
    }
}
