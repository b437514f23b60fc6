//! When entries became visible, sampled by the primary as they do: the lag of a peer whose
//! oldest missing entry was never shipped to it is measured from here, without reading the
//! log (a read from an arbitrary LSN scans its segment from the start).

use std::collections::VecDeque;
use std::sync::Mutex;

/// Samples kept at most; when full, every other one is dropped, so that a bounded list
/// covers any history, at a resolution that halves for the older half.
const MAX_SAMPLES: usize = 4096;

/// `(lsn, ms)` samples, both increasing: every entry up to `lsn` was visible at `ms`.
pub struct CommitTimes {
    samples: Mutex<VecDeque<(u64, u64)>>,
}

impl CommitTimes {
    /// Starts with what is known at start: entries up to `lsn` were visible at `ms`.
    #[must_use]
    pub fn new(lsn: u64, ms: u64) -> Self {
        Self {
            samples: Mutex::new(VecDeque::from([(lsn, ms)])),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, u64)>> {
        self.samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that entries up to `lsn` were visible at `ms` (older news is ignored).
    pub fn record(&self, lsn: u64, ms: u64) {
        let mut samples = self.lock();
        if samples.back().is_some_and(|(last, _)| *last >= lsn) {
            return;
        }
        if samples.len() >= MAX_SAMPLES {
            let mut index = 0;
            samples.retain(|_| {
                index += 1;
                index % 2 == 1
            });
        }
        let ms = samples.back().map_or(ms, |(_, last_ms)| ms.max(*last_ms));
        samples.push_back((lsn, ms));
    }

    /// The time by which entry `lsn` was visible: at or after its commit, late by at most
    /// the sampling interval (more for entries older than the primary's start). `None` if
    /// the entry is newer than every sample.
    #[must_use]
    pub fn visible_by(&self, lsn: u64) -> Option<u64> {
        let samples = self.lock();
        let at = samples.partition_point(|(sampled, _)| *sampled < lsn);
        samples.get(at).map(|(_, ms)| *ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_dated_by_the_first_sample_that_covers_it() {
        let times = CommitTimes::new(10, 1_000);
        times.record(15, 2_000);
        times.record(12, 9_000);
        times.record(20, 3_000);
        assert_eq!(times.visible_by(3), Some(1_000), "before the start");
        assert_eq!(times.visible_by(10), Some(1_000));
        assert_eq!(times.visible_by(11), Some(2_000));
        assert_eq!(times.visible_by(15), Some(2_000));
        assert_eq!(times.visible_by(16), Some(3_000));
        assert_eq!(times.visible_by(21), None, "not visible yet");
    }

    #[test]
    fn a_full_list_thins_out_but_still_covers_every_entry_with_a_later_time() {
        let times = CommitTimes::new(0, 0);
        for lsn in 1..=3 * MAX_SAMPLES as u64 {
            times.record(lsn, lsn * 10);
        }
        assert!(times.lock().len() <= MAX_SAMPLES);
        for lsn in 1..=3 * MAX_SAMPLES as u64 {
            let by = times.visible_by(lsn).expect("covered");
            assert!(by >= lsn * 10, "never dated before its commit");
        }
        assert_eq!(
            times.visible_by(3 * MAX_SAMPLES as u64),
            Some(30 * MAX_SAMPLES as u64)
        );
    }
}
