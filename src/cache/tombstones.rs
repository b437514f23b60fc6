//! What a node remembers of the log's writes, so that a slow reader's fill can be refused:
//! the LSN of the last write of each recent key, and a watermark below which it has
//! forgotten (every fill older than the watermark is refused).

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// The recent writes of the log, by key, in a bounded memory.
#[derive(Debug)]
pub struct Tombstones {
    /// The LSN of the last write seen for each remembered key.
    by_key: HashMap<Bytes, u64>,
    /// The same writes in LSN order (a key written twice appears twice; only the entry that
    /// matches `by_key` counts), oldest first: the log delivers them in order, so aging out
    /// from the front is exact.
    order: VecDeque<(u64, Bytes)>,
    /// Remembered writes at most.
    max: usize,
    /// Every write at or below this LSN may be forgotten: a fill must be at least this new.
    watermark: u64,
}

impl Tombstones {
    /// Remembers at most `max` writes (at least one).
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            by_key: HashMap::new(),
            order: VecDeque::new(),
            max: max.max(1),
            watermark: 0,
        }
    }

    /// Records that the entry at `lsn` wrote `key` (LSNs arrive in order).
    pub fn record(&mut self, key: Bytes, lsn: u64) {
        self.by_key.insert(key.clone(), lsn);
        self.order.push_back((lsn, key));
        while self.by_key.len() > self.max || self.order.len() > 2 * self.max {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        let Some((lsn, key)) = self.order.pop_front() else {
            return;
        };
        if self.by_key.get(&key) == Some(&lsn) {
            self.by_key.remove(&key);
            self.watermark = self.watermark.max(lsn);
        }
    }

    /// The oldest read snapshot whose value of `key` may still be cached: a fill read at a
    /// lower LSN may predate a write it never saw.
    #[must_use]
    pub fn floor(&self, key: &[u8]) -> u64 {
        self.by_key
            .get(key)
            .map_or(self.watermark, |&lsn| lsn.max(self.watermark))
    }

    /// Forgets everything up to `lsn` at once (a flush, a fork, a restart from a new
    /// position): the watermark rises to `lsn`, never falls.
    pub fn forget_through(&mut self, lsn: u64) {
        self.by_key.clear();
        self.order.clear();
        self.watermark = self.watermark.max(lsn);
    }

    /// Everything at or below this LSN is forgotten.
    #[must_use]
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Writes remembered now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Bytes {
        Bytes::copy_from_slice(name.as_bytes())
    }

    #[test]
    fn a_write_sets_the_floor_of_its_key_only() {
        let mut tombstones = Tombstones::new(8);
        tombstones.record(key("a"), 5);
        assert_eq!(tombstones.floor(b"a"), 5);
        assert_eq!(tombstones.floor(b"b"), 0);
    }

    #[test]
    fn aging_out_raises_the_watermark_to_the_forgotten_write() {
        let mut tombstones = Tombstones::new(2);
        tombstones.record(key("a"), 1);
        tombstones.record(key("b"), 2);
        tombstones.record(key("c"), 3);
        assert_eq!(tombstones.len(), 2);
        assert_eq!(tombstones.watermark(), 1);
        // "a" is forgotten, but no fill older than its write gets through.
        assert_eq!(tombstones.floor(b"a"), 1);
        assert_eq!(tombstones.floor(b"c"), 3);
    }

    #[test]
    fn a_key_written_again_keeps_its_newest_lsn_and_memory_stays_bounded() {
        let mut tombstones = Tombstones::new(4);
        for lsn in 1..=1000 {
            tombstones.record(key("hot"), lsn);
        }
        assert_eq!(tombstones.floor(b"hot"), 1000);
        assert!(tombstones.order.len() <= 8);
        // Forgetting stale duplicates of "hot" never raised the watermark past its writes.
        assert!(tombstones.watermark() < 1000);
    }

    #[test]
    fn forgetting_through_never_lowers_the_watermark() {
        let mut tombstones = Tombstones::new(4);
        tombstones.forget_through(10);
        tombstones.forget_through(3);
        assert_eq!(tombstones.watermark(), 10);
        assert!(tombstones.is_empty());
    }
}
