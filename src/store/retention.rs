//! Which log segments a store drops: its retention policy (`retain_bytes`,
//! `retain_seconds`), what a primary's replication slots still need, and what recovery
//! needs (never a segment the tables' durable checkpoint does not cover). The policy is a
//! pure function of the segments' sizes and ages; [`Store::retain_log`] applies it.
//!
//! A plain store applies its policy in the background (see `maintenance`); while a primary
//! serves it, the primary applies it with its slots' positions instead.

use std::time::Duration;

use super::commit::now_ms;
use super::Store;
use crate::error::Result;
use crate::log::SegmentInfo;

/// The caps on a log, whatever its readers still need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionCaps {
    /// Keep at most this many bytes of log.
    pub bytes: Option<u64>,
    /// Drop segments whose entries all committed before this time (ms since the Unix epoch).
    pub older_than_ms: Option<u64>,
}

/// A store's retention policy: the caps as sizes and ages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep at most this many bytes of log. `None`: no cap by size.
    pub bytes: Option<u64>,
    /// Drop segments whose entries are all older than this. `None`: no cap by age.
    pub age: Option<Duration>,
}

impl RetentionPolicy {
    /// Whether the policy keeps the whole log.
    #[must_use]
    pub fn keeps_everything(&self) -> bool {
        self.bytes.is_none() && self.age.is_none()
    }

    fn caps(&self, now_ms: u64) -> RetentionCaps {
        RetentionCaps {
            bytes: self.bytes,
            older_than_ms: self.age.map(|age| {
                now_ms.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
            }),
        }
    }
}

/// What the readers with a durable position (a primary's replication slots) still need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogHolds {
    /// The oldest acknowledged LSN among the slots (`None` without slots): the log up to
    /// it may go even within the caps.
    pub min_acked: Option<u64>,
    /// The oldest position among pinned slots (replicas being seeded): kept whatever the
    /// caps say.
    pub min_pinned: Option<u64>,
}

/// The LSN before which whole segments may be dropped, or `None` to drop nothing.
///
/// Without slots nothing is dropped for want of readers (the log is also the history that
/// `changes()` reads); only the caps bound it then. The entry at a slot's position stays,
/// since a resume checks its identity. A pinned slot (a replica being seeded) keeps its log
/// whatever the caps say. `newest_ms(i)` is the commit time of segment `i`'s newest entry,
/// asked only with an age cap, oldest segment first, until one is young enough (`None`
/// keeps the segment).
fn drop_before(
    segments: &[SegmentInfo],
    mut newest_ms: impl FnMut(usize) -> Option<u64>,
    min_acked: Option<u64>,
    min_pinned: Option<u64>,
    caps: RetentionCaps,
) -> Option<u64> {
    if segments.len() < 2 {
        return None;
    }
    let mut before = min_acked.unwrap_or(0);
    if let Some(cap) = caps.bytes {
        let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
        for pair in segments.windows(2) {
            if total <= cap {
                break;
            }
            total -= pair[0].bytes;
            before = before.max(pair[1].first_lsn);
        }
    }
    if let Some(oldest_kept_ms) = caps.older_than_ms {
        for (index, pair) in segments.windows(2).enumerate() {
            if newest_ms(index).is_none_or(|newest| newest >= oldest_kept_ms) {
                break;
            }
            before = before.max(pair[1].first_lsn);
        }
    }
    if let Some(pinned) = min_pinned {
        before = before.min(pinned);
    }
    (before >= segments[1].first_lsn).then_some(before)
}

impl Store {
    /// The retention policy the store was opened with.
    #[must_use]
    pub fn retention_policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            bytes: self.inner.options.retain_bytes,
            age: self.inner.options.retain_seconds,
        }
    }

    /// Drops the whole log segments that `policy` and `holds` let go, never one that the
    /// tables' durable checkpoint does not cover (recovery replays the log after it).
    /// Returns how many were dropped. Writers are not held: a segment leaves the list at
    /// once, its file is removed afterwards.
    ///
    /// # Errors
    /// A closed store, an I/O failure reading the segments or removing one.
    pub fn retain_log(&self, policy: RetentionPolicy, holds: LogHolds) -> Result<usize> {
        let segments = self.log_segments()?;
        let mut failed = None;
        let newest_ms = |index: usize| {
            let first_lsn = segments.get(index)?.first_lsn;
            match self.with_open(|open| open.log.newest_ms(first_lsn)) {
                Ok(newest) => newest,
                Err(err) => {
                    failed = Some(err);
                    None
                }
            }
        };
        let caps = policy.caps(now_ms());
        let cut = drop_before(
            &segments,
            newest_ms,
            holds.min_acked,
            holds.min_pinned,
            caps,
        );
        if let Some(err) = failed {
            return Err(err);
        }
        let Some(before) = cut else { return Ok(0) };
        let dropped = self.with_open(|open| {
            let recoverable = open.tables.durable_lsn() + 1;
            open.log.drop_before(before.min(recoverable))
        })?;
        if dropped > 0 {
            tracing::debug!(
                dropped,
                before,
                "dropped log segments past the retention policy"
            );
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_key, KeyRef, Op};
    use crate::store::StoreOptions;

    fn put(store: &Store, i: u64) {
        let op = Op {
            table: "t".to_owned(),
            key: encode_key(KeyRef::Int(i64::try_from(i).unwrap())),
            value: Some(vec![0xc3; 100]),
        };
        store.commit(vec![op], None).unwrap();
    }

    /// Retention never drops a segment that recovery would replay: until a durable
    /// checkpoint covers them, the segments stay, whatever the cap says. Once dropped, the
    /// store reopens with every row and its log starts at the oldest retained segment.
    #[test]
    fn the_store_drops_no_segment_its_durable_checkpoint_does_not_cover() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            segment_bytes: 4096,
            retain_bytes: None,
            retain_seconds: None,
            checkpoint_entries: u64::MAX,
            checkpoint_interval: Duration::from_secs(3600),
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), options.clone()).unwrap();
        for i in 0..300 {
            put(&store, i);
        }
        let tiny = RetentionPolicy {
            bytes: Some(4096),
            age: None,
        };
        assert!(store.log_segments().unwrap().len() > 4);
        assert_eq!(store.retain_log(tiny, LogHolds::default()).unwrap(), 0);
        assert_eq!(
            store.oldest_lsn().unwrap(),
            1,
            "nothing is checkpointed yet"
        );
        store.checkpoint().unwrap();
        assert!(store.retain_log(tiny, LogHolds::default()).unwrap() > 0);
        let oldest = store.oldest_lsn().unwrap();
        assert!(oldest > 1);
        let held = LogHolds {
            min_acked: None,
            min_pinned: Some(oldest),
        };
        for i in 300..600 {
            put(&store, i);
        }
        store.checkpoint().unwrap();
        assert_eq!(
            store.retain_log(tiny, held).unwrap(),
            0,
            "a pin holds the log"
        );
        store.close().unwrap();
        let reopened = Store::open(dir.path(), options).unwrap();
        assert_eq!(reopened.oldest_lsn().unwrap(), oldest);
        assert_eq!(reopened.table_sum("t").unwrap().rows, 600);
        assert_eq!(reopened.last_lsn(), 600);
    }

    fn segments() -> Vec<SegmentInfo> {
        [1, 101, 201, 301]
            .into_iter()
            .map(|first_lsn| SegmentInfo {
                first_lsn,
                bytes: 1000,
            })
            .collect()
    }

    #[test]
    fn without_slots_or_caps_nothing_is_dropped() {
        assert_eq!(
            drop_before(&segments(), |_| None, None, None, RetentionCaps::default()),
            None
        );
    }

    #[test]
    fn segments_go_only_once_every_slot_is_past_them() {
        let caps = RetentionCaps::default();
        assert_eq!(
            drop_before(&segments(), |_| None, Some(150), None, caps),
            Some(150)
        );
        assert_eq!(
            drop_before(&segments(), |_| None, Some(50), None, caps),
            None
        );
    }

    #[test]
    fn caps_override_slots_but_never_a_pin() {
        let bytes = RetentionCaps {
            bytes: Some(2500),
            older_than_ms: None,
        };
        assert_eq!(
            drop_before(&segments(), |_| None, Some(0), None, bytes),
            Some(201)
        );
        assert_eq!(
            drop_before(&segments(), |_| None, Some(0), Some(120), bytes),
            Some(120)
        );
        assert_eq!(
            drop_before(&segments(), |_| None, Some(0), Some(50), bytes),
            None
        );
        let age = RetentionCaps {
            bytes: None,
            older_than_ms: Some(500),
        };
        let newest = [100, 400, 600];
        let ages = |i: usize| newest.get(i).copied();
        assert_eq!(drop_before(&segments(), ages, None, None, age), Some(201));
        assert_eq!(drop_before(&segments(), |_| None, None, None, age), None);
    }
}
