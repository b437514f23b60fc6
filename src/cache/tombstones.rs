//! What a node remembers of the log's writes, so that a slow reader's fill can be refused:
//! the LSN of the last write of each recent key, and a watermark below which it has
//! forgotten (every fill older than the watermark is refused).
//!
//! A key is remembered by a 64-bit hash of its wire key (`table:tag:key`, so of the table
//! and the key), never by its bytes: keys may be kilobytes each, and tens of thousands are
//! remembered whatever the cache's byte bound. Two keys whose hashes collide share one
//! floor: a fill of one may be refused for a write of the other, never accepted for a
//! write it missed, so a collision costs a miss and never a stale value. The hash is keyed
//! at random per node, so no client can aim collisions at a key.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

/// The recent writes of the log, by key hash, in a bounded memory: a few tens of bytes per
/// write remembered, whatever the key's size.
#[derive(Debug)]
pub struct Tombstones {
    /// The LSN of the last write seen for each remembered key's hash.
    by_key: HashMap<u64, u64>,
    /// The same writes in LSN order (a key written twice appears twice; only the entry that
    /// matches `by_key` counts), oldest first: the log delivers them in order, so aging out
    /// from the front is exact.
    order: VecDeque<(u64, u64)>,
    /// Remembered writes at most.
    max: usize,
    /// Every write at or below this LSN may be forgotten: a fill must be at least this new.
    watermark: u64,
    /// Seeds the hash of each key, at random per node.
    hasher: RandomState,
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
            hasher: RandomState::new(),
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Records that the entry at `lsn` wrote `key` (LSNs arrive in order).
    pub fn record(&mut self, key: &[u8], lsn: u64) {
        let hash = self.hash(key);
        self.by_key.insert(hash, lsn);
        self.order.push_back((lsn, hash));
        while self.by_key.len() > self.max || self.order.len() > 2 * self.max {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        let Some((lsn, hash)) = self.order.pop_front() else {
            return;
        };
        if self.by_key.get(&hash) == Some(&lsn) {
            self.by_key.remove(&hash);
            self.watermark = self.watermark.max(lsn);
        }
    }

    /// The oldest read snapshot whose value of `key` may still be cached: a fill read at a
    /// lower LSN may predate a write it never saw (or, on a hash collision, a write of
    /// another key: refused all the same, which is safe).
    #[must_use]
    pub fn floor(&self, key: &[u8]) -> u64 {
        self.by_key
            .get(&self.hash(key))
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
    use bytes::Bytes;

    use super::*;

    fn key(name: &str) -> &[u8] {
        name.as_bytes()
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
    fn a_remembered_write_keeps_no_copy_of_its_key() {
        let mut tombstones = Tombstones::new(8);
        let written = Bytes::from(vec![b'k'; 4000]);
        tombstones.record(&written, 1);
        assert!(written.is_unique(), "the key's bytes are not shared");
        assert_eq!(tombstones.floor(&written), 1);
        assert_eq!(tombstones.floor(&vec![b'k'; 4000]), 1, "found by value");
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
