//! Which log segments a primary may drop: a pure function of the slots' positions, the
//! caps, and the segments' sizes and ages.

use crate::log::SegmentInfo;

/// The caps on a primary's log, whatever its slots still need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionCaps {
    /// Keep at most this many bytes of log.
    pub bytes: Option<u64>,
    /// Drop segments whose entries all committed before this time (ms since the Unix epoch).
    pub older_than_ms: Option<u64>,
}

/// The LSN before which whole segments may be dropped, or `None` to drop nothing.
///
/// Without slots nothing is dropped for want of readers (the log is also the history that
/// `changes()` reads); only the caps bound it then. The entry at a slot's position stays,
/// since a resume checks its identity. A pinned slot (a replica being seeded) keeps its log
/// whatever the caps say. `newest_ms(i)` is the commit time of segment `i`'s newest entry,
/// asked only with an age cap, oldest segment first, until one is young enough (`None`
/// keeps the segment).
pub fn drop_before(
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

#[cfg(test)]
mod tests {
    use super::*;

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
