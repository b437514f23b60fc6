//! How a store is opened: its options, their bounds and defaults.

use std::time::Duration;

use crate::codec::MAX_RECORD_BYTES;
use crate::error::{Result, StoreError};
use crate::log::LogOptions;

/// The largest log segment accepted (1 TiB): segments are preallocated whole.
const MAX_SEGMENT_BYTES: u64 = 1 << 40;
/// The smallest segment a size cap makes the log use.
const MIN_SEGMENT_BYTES: u64 = 64 << 10;
/// The default cap on the log's size: a few minutes of history for `changes()` and for
/// replicas to resume from, while a store stays within about twice its tables on disk
/// (README, "Disk use").
pub const DEFAULT_RETAIN_BYTES: u64 = 64 << 20;
/// The default cap on the log's age: a week.
pub const DEFAULT_RETAIN_AGE: Duration = Duration::from_secs(7 * 86_400);
/// The default bound of redb's page cache: fits a notebook, and the hot pages of a few
/// million rows.
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;
/// The smallest page cache accepted.
const MIN_CACHE_BYTES: usize = 1 << 20;

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `fdatasync` the log on every commit (group commit shares it between writers).
    /// `false` is for scratch data: a crash of the machine may lose recent writes.
    pub fsync: bool,
    /// Largest encoded key a put writes, in bytes (deletes are not held to it).
    pub max_key_bytes: usize,
    /// Largest encoded value, in bytes.
    pub max_value_bytes: usize,
    /// Largest encoded transaction (one log record), in bytes.
    pub max_transaction_bytes: usize,
    /// The largest log segment. Segments start at 1 MiB and double up to this size (and to
    /// a quarter of `retain_bytes`, so that retention trims the log in small steps).
    pub segment_bytes: u64,
    /// Keep at most about this many bytes of log (whole segments are dropped, oldest first,
    /// once the tables' durable checkpoint covers them). `None`: no cap by size.
    pub retain_bytes: Option<u64>,
    /// Drop segments whose entries are all older than this. `None`: no cap by age.
    pub retain_seconds: Option<Duration>,
    /// The bound of redb's page cache (read cache and write buffer), in bytes.
    pub cache_bytes: usize,
    /// A durable redb checkpoint, made by the store's background checkpointer, after this
    /// many entries, or 4 MiB of log...
    pub checkpoint_entries: u64,
    /// ...or this much time after the last one, whichever comes first.
    pub checkpoint_interval: Duration,
    /// A replica's store: user writes are refused with [`StoreError::ReadOnly`]; entries
    /// arrive through [`super::Store::append_replicated`] with the primary's LSNs. A follower is
    /// marked durably when its tables are created, or when it first takes on a primary's
    /// history (a lineage, an entry, a snapshot): opened later without this option, it is
    /// read-only until [`super::Store::detach`]. A mere open marks nothing, so pointing a replica
    /// at the wrong directory by mistake does not lock that store.
    pub follower: bool,
}

impl StoreOptions {
    /// Checks that the limits fit the record format.
    ///
    /// # Errors
    /// [`StoreError::InvalidOption`] naming the first option out of range.
    pub fn validate(&self) -> Result<()> {
        let limit = MAX_RECORD_BYTES - 64;
        let checks = [
            ("max_transaction_bytes", self.max_transaction_bytes),
            ("max_value_bytes", self.max_value_bytes),
            ("max_key_bytes", self.max_key_bytes),
        ];
        for (name, value) in checks {
            if value == 0 || value > limit {
                return Err(StoreError::InvalidOption {
                    name,
                    reason: format!("must be between 1 and {limit} bytes"),
                }
                .into());
            }
        }
        if self.cache_bytes < MIN_CACHE_BYTES {
            return Err(StoreError::InvalidOption {
                name: "cache_bytes",
                reason: format!("must be at least {MIN_CACHE_BYTES} bytes"),
            }
            .into());
        }
        if self.retain_bytes == Some(0) || self.retain_seconds == Some(Duration::ZERO) {
            return Err(StoreError::InvalidOption {
                name: if self.retain_bytes == Some(0) {
                    "retain_bytes"
                } else {
                    "retain_seconds"
                },
                reason: "must be positive, or None to keep the whole log".to_owned(),
            }
            .into());
        }
        if !(4096..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(StoreError::InvalidOption {
                name: "segment_bytes",
                reason: format!("must be between 4096 and {MAX_SEGMENT_BYTES} bytes"),
            }
            .into());
        }
        Ok(())
    }

    /// How the log is written: its segments grow from 1 MiB to the largest size, which is
    /// also at most a quarter of the size cap (retention drops whole segments, so a segment
    /// as large as the cap would let the log reach twice the cap).
    pub(crate) fn log_options(&self) -> LogOptions {
        let largest = match self.retain_bytes {
            Some(cap) => self.segment_bytes.min((cap / 4).max(MIN_SEGMENT_BYTES)),
            None => self.segment_bytes,
        };
        let defaults = LogOptions::default();
        LogOptions {
            segment_bytes: largest,
            first_segment_bytes: defaults.first_segment_bytes.min(largest),
            fsync: self.fsync,
            ..defaults
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            fsync: true,
            max_key_bytes: 4096,
            max_value_bytes: 16 << 20,
            max_transaction_bytes: 256 << 20,
            segment_bytes: 64 << 20,
            retain_bytes: Some(DEFAULT_RETAIN_BYTES),
            retain_seconds: Some(DEFAULT_RETAIN_AGE),
            cache_bytes: DEFAULT_CACHE_BYTES,
            checkpoint_entries: 10_000,
            checkpoint_interval: Duration::from_secs(5),
            follower: false,
        }
    }
}
