//! What a planned switchover hands to the new primary with the log: the old primary's
//! settings, so that sync writes behave the same before and after.

use std::time::Duration;

use serde_derive::{Deserialize, Serialize};

use super::primary::{PrimaryOptions, MIN_BATCH_BYTES, MIN_HEARTBEAT};
use super::protocol::MAX_FRAME_BYTES;
use super::quorum::SyncOptions;
use crate::store::{validate_table_name, Durability, OnTimeout};

/// A member of the old primary as a switchover hands it over in
/// [`Message::Handover`](super::protocol::Message): the new primary expects it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedMember {
    /// Its name.
    pub name: String,
    /// The id of its store directory (0: unknown), which the new primary's heartbeats
    /// name from the start.
    pub store_id: u64,
    /// Not every member had recorded that it joined: the new primary counts it only once
    /// they have, as the old one would have.
    pub joining: bool,
}

/// A primary's settings as they travel in [`Message::Handover`](super::protocol::Message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// `ship_interval`, in microseconds.
    pub ship_interval_us: u64,
    /// `max_batch_bytes`.
    pub max_batch_bytes: u64,
    /// `heartbeat_interval`, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// `retain_bytes`.
    pub retain_bytes: Option<u64>,
    /// `retain_seconds`.
    pub retain_seconds: Option<u64>,
    /// The sync quorum.
    pub quorum: u64,
    /// The sync timeout, in milliseconds.
    pub sync_timeout_ms: u64,
    /// Whether a sync write that times out degrades (else it raises).
    pub degrade: bool,
    /// Per-table durability: `(table, sync)`.
    pub tables: Vec<(String, bool)>,
    /// Whether writes to other tables are sync.
    pub default_sync: bool,
    /// Whether sync writers' entries ship before the fdatasync ends (absent from an older
    /// primary's handover: it never shipped ahead).
    #[serde(default)]
    pub ship_ahead: bool,
}

/// `duration` in whole `unit`s, rounded up: a timeout or a cap never shrinks in transit
/// (half a second of `retain_seconds` is not a cap of 0).
fn ceil(duration: Duration, unit: Duration) -> u64 {
    let whole = duration.as_nanos().div_ceil(unit.as_nanos());
    u64::try_from(whole).unwrap_or(u64::MAX)
}

fn millis(duration: Duration) -> u64 {
    ceil(duration, Duration::from_millis(1))
}

fn sync(durability: Durability) -> bool {
    durability == Durability::Sync
}

fn durability(sync: bool) -> Durability {
    if sync {
        Durability::Sync
    } else {
        Durability::Async
    }
}

impl Settings {
    /// The settings of `options`.
    #[must_use]
    pub fn of(options: &PrimaryOptions) -> Self {
        let mut tables: Vec<(String, bool)> = options
            .sync
            .table_modes
            .iter()
            .map(|(table, mode)| (table.clone(), sync(*mode)))
            .collect();
        tables.sort();
        Self {
            ship_interval_us: ceil(options.ship_interval, Duration::from_micros(1)),
            max_batch_bytes: options.max_batch_bytes as u64,
            heartbeat_interval_ms: millis(options.heartbeat_interval),
            retain_bytes: options.retain_bytes,
            retain_seconds: options
                .retain_seconds
                .map(|d| ceil(d, Duration::from_secs(1))),
            quorum: options.sync.quorum as u64,
            sync_timeout_ms: millis(options.sync.sync_timeout),
            degrade: options.sync.on_timeout == OnTimeout::Degrade,
            tables,
            default_sync: sync(options.sync.default_durability),
            ship_ahead: options.ship_ahead,
        }
    }

    /// Options that serve with these settings on `listen`, proving `token`. Settings no
    /// primary is made with (they came from a damaged file, or a forged frame) are brought
    /// within bounds: a batch size or heartbeat interval within its range, a quorum of at
    /// least 1, no mode for a table name a write would refuse.
    #[must_use]
    pub fn options(&self, listen: String, token: Option<String>) -> PrimaryOptions {
        PrimaryOptions {
            listen,
            token,
            ship_interval: Duration::from_micros(self.ship_interval_us),
            max_batch_bytes: usize::try_from(self.max_batch_bytes)
                .unwrap_or(usize::MAX)
                .clamp(MIN_BATCH_BYTES, MAX_FRAME_BYTES),
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms)
                .max(MIN_HEARTBEAT),
            retain_bytes: self.retain_bytes,
            retain_seconds: self.retain_seconds.map(Duration::from_secs),
            sync: SyncOptions {
                quorum: usize::try_from(self.quorum).unwrap_or(usize::MAX).max(1),
                sync_timeout: Duration::from_millis(self.sync_timeout_ms),
                on_timeout: if self.degrade {
                    OnTimeout::Degrade
                } else {
                    OnTimeout::Raise
                },
                table_modes: self
                    .tables
                    .iter()
                    .filter(|(table, _)| validate_table_name(table).is_ok())
                    .map(|(table, sync)| (table.clone(), durability(*sync)))
                    .collect(),
                default_durability: durability(self.default_sync),
            },
            ship_ahead: self.ship_ahead,
            ..PrimaryOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_carry_every_option_a_switchover_keeps() {
        let options = PrimaryOptions {
            ship_interval: Duration::from_millis(7),
            heartbeat_interval: Duration::from_millis(30),
            retain_bytes: Some(1 << 20),
            retain_seconds: Some(Duration::from_secs(60)),
            sync: SyncOptions {
                quorum: 2,
                sync_timeout: Duration::from_millis(1500),
                on_timeout: OnTimeout::Degrade,
                table_modes: [("consent".to_owned(), Durability::Sync)].into(),
                default_durability: Durability::Async,
            },
            ship_ahead: true,
            ..PrimaryOptions::default()
        };
        let back = Settings::of(&options).options("127.0.0.1:7401".into(), Some("t".into()));
        assert_eq!(back.ship_interval, options.ship_interval);
        assert_eq!(back.heartbeat_interval, options.heartbeat_interval);
        assert_eq!(back.retain_bytes, options.retain_bytes);
        assert_eq!(back.retain_seconds, options.retain_seconds);
        assert_eq!(back.sync.quorum, 2);
        assert_eq!(back.sync.sync_timeout, options.sync.sync_timeout);
        assert_eq!(back.sync.on_timeout, OnTimeout::Degrade);
        assert_eq!(back.sync.table_modes, options.sync.table_modes);
        assert!(back.ship_ahead);
        assert_eq!(back.listen, "127.0.0.1:7401");
    }

    #[test]
    fn a_fraction_of_a_unit_rounds_up_so_no_cap_or_timeout_shrinks() {
        let options = PrimaryOptions {
            retain_seconds: Some(Duration::from_millis(500)),
            sync: SyncOptions {
                sync_timeout: Duration::from_micros(1500),
                ..SyncOptions::default()
            },
            ..PrimaryOptions::default()
        };
        let settings = Settings::of(&options);
        assert_eq!(settings.retain_seconds, Some(1));
        assert_eq!(settings.sync_timeout_ms, 2);
    }

    #[test]
    fn settings_no_primary_is_made_with_are_brought_within_bounds() {
        let forged = Settings {
            max_batch_bytes: 1,
            heartbeat_interval_ms: 0,
            quorum: 0,
            tables: vec![(String::new(), true), ("consent".to_owned(), true)],
            ..Settings::of(&PrimaryOptions::default())
        };
        let options = forged.options("127.0.0.1:0".into(), None);
        assert_eq!(options.max_batch_bytes, MIN_BATCH_BYTES);
        assert_eq!(options.heartbeat_interval, MIN_HEARTBEAT);
        assert_eq!(options.sync.quorum, 1);
        assert_eq!(
            options.sync.table_modes,
            [("consent".to_owned(), Durability::Sync)].into()
        );
        let huge = Settings {
            max_batch_bytes: u64::MAX,
            ..forged
        };
        assert_eq!(
            huge.options(String::new(), None).max_batch_bytes,
            MAX_FRAME_BYTES
        );
    }
}
