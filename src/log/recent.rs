//! The newest batches of the log, kept in memory as they were appended: a consumer that
//! follows the end of the log (shipping to replicas, `changes()`) reads them with no system
//! call and no re-read of a segment.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// A batch of records as [`super::Log::append`] wrote and synced it.
pub(super) struct Appended {
    /// The first LSN of the segment it was written to.
    pub segment_first_lsn: u64,
    /// The offset of its first record in that segment.
    pub offset: u64,
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub records: Box<[u8]>,
}

struct Kept {
    /// Oldest first, with dense LSNs from one batch to the next.
    batches: VecDeque<Arc<Appended>>,
    bytes: usize,
}

/// The newest appended batches, at most `limit` bytes of records in all.
pub(super) struct Recent {
    limit: usize,
    kept: Mutex<Kept>,
}

impl Recent {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            limit,
            kept: Mutex::new(Kept {
                batches: VecDeque::new(),
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // Nothing panics while the lock is held: a poisoned lock only drops the batches.
        self.kept.lock().unwrap_or_else(|poisoned| {
            let mut kept = poisoned.into_inner();
            kept.batches.clear();
            kept.bytes = 0;
            kept
        })
    }

    /// Drops every batch kept: the newest one appended is not in memory.
    pub(super) fn forget(&self) {
        let mut kept = self.lock();
        kept.batches.clear();
        kept.bytes = 0;
    }

    /// Keeps a batch that was just appended after the newest one kept, dropping the oldest
    /// beyond the limit. A batch larger than the limit is not kept, and neither is anything
    /// before it: what is kept always runs without a gap to the end of the log.
    pub(super) fn keep(
        &self,
        segment_first_lsn: u64,
        offset: u64,
        first_lsn: u64,
        last_lsn: u64,
        records: &[u8],
    ) {
        if records.len() > self.limit {
            self.forget();
            return;
        }
        let mut kept = self.lock();
        while kept.bytes + records.len() > self.limit {
            let oldest = kept
                .batches
                .pop_front()
                .expect("invariant: bytes count only kept batches");
            kept.bytes -= oldest.records.len();
        }
        kept.bytes += records.len();
        kept.batches.push_back(Arc::new(Appended {
            segment_first_lsn,
            offset,
            first_lsn,
            last_lsn,
            records: records.into(),
        }));
    }

    /// The kept batches from the one holding `lsn` on, as far as `up_to` and at most
    /// `max_batches` of them; `None` if `lsn` is not kept.
    pub(super) fn from(
        &self,
        lsn: u64,
        up_to: u64,
        max_batches: usize,
    ) -> Option<Vec<Arc<Appended>>> {
        let kept = self.lock();
        let first = kept.batches.front()?;
        let last = kept.batches.back()?;
        if lsn < first.first_lsn || lsn > last.last_lsn {
            return None;
        }
        let at = kept.batches.partition_point(|batch| batch.last_lsn < lsn);
        Some(
            kept.batches
                .range(at..)
                .take_while(|batch| batch.first_lsn <= up_to)
                .take(max_batches)
                .cloned()
                .collect(),
        )
    }
}
