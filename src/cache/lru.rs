//! A cache node's memory: an LRU of versioned values bounded by entries and by bytes, with
//! per-entry TTL, and the log's recent writes so that a fill older than a write it never
//! saw is refused (DESIGN §1, guarantee 7). Pure: every call is told the time.

use bytes::Bytes;
use lru::LruCache;

use super::tombstones::Tombstones;
use crate::error::CacheError;

/// What a value weighs against the byte bound.
pub trait Weigh {
    /// Its size in bytes.
    fn weight(&self) -> usize;
}

impl Weigh for Bytes {
    fn weight(&self) -> usize {
        self.len()
    }
}

/// Bytes counted for each entry beyond its key and value: the LRU's node, the map's slot
/// and the entry's fields, rounded up.
pub const ENTRY_OVERHEAD: usize = 96;

/// Checks a byte bound: one of [`ENTRY_OVERHEAD`] bytes or fewer could never hold an
/// entry, so a cache given it would refuse every value.
///
/// # Errors
/// [`CacheError::Invalid`], saying why.
pub fn check_max_bytes(max_bytes: Option<usize>) -> Result<(), CacheError> {
    match max_bytes {
        Some(max) if max <= ENTRY_OVERHEAD => Err(CacheError::Invalid(format!(
            "max_bytes must exceed the {ENTRY_OVERHEAD} bytes counted for every entry, not {max}"
        ))),
        _ => Ok(()),
    }
}

/// Where a value comes from: the `(epoch, lsn)` of the read snapshot that produced it. A
/// plain `SET` from a Redis client has version `(0, 0)`: any fill replaces it and any write
/// in the log drops it.
///
/// Versions order by epoch first, then LSN (field order is load-bearing: the derived `Ord`
/// compares `epoch` before `lsn`). After a failover the new history reuses the LSNs of the
/// entries the old primary lost, so a value of an older epoch is never newer than one of a
/// later epoch, whatever their LSNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Version {
    /// The epoch of the snapshot's last entry.
    pub epoch: u64,
    /// The snapshot's LSN.
    pub lsn: u64,
}

/// How big the cache may grow.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Entries at most.
    pub capacity: usize,
    /// Bytes at most (keys + values + [`ENTRY_OVERHEAD`] per entry), if bounded.
    pub max_bytes: Option<usize>,
    /// Recent log writes remembered at most (older ones raise the watermark).
    pub tombstones: usize,
}

/// What the log's write of a held key does to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnWrite {
    /// Drop the key: the next read loads it again.
    Drop,
    /// Store the written value (a delete drops the key).
    Refresh,
}

/// Counters, as Redis's INFO and `Cache.stats()` name them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Reads that found a live value.
    pub hits: u64,
    /// Reads that found none.
    pub misses: u64,
    /// Entries dropped to make room.
    pub evictions: u64,
    /// Entries dropped because their TTL passed.
    pub expirations: u64,
    /// Held keys dropped or refreshed by a write (from the log or a client).
    pub invalidations: u64,
    /// Fills refused because a newer write or value was known.
    pub stale_fills_refused: u64,
    /// Times everything was dropped (FLUSHALL, a fork, a lost log position); starting to
    /// follow a log is not one.
    pub flushes: u64,
}

#[derive(Debug)]
struct Cached<V> {
    value: V,
    version: Version,
    expires_at_ms: Option<u64>,
}

/// Whether a fill was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Stored.
    Stored,
    /// Refused: the log wrote the key after the fill's snapshot, a newer value is cached,
    /// or the snapshot is of an older epoch than the node has seen.
    Stale,
    /// Refused: the value alone is larger than the byte bound.
    TooLarge,
}

/// When a plain `SET` stores its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetIf {
    /// Always.
    Always,
    /// Only if the key holds no live value (`NX`).
    Absent,
    /// Only if it does (`XX`).
    Present,
}

/// The versioned LRU of one cache node (values as bytes), or of an in-process cache
/// (values as the caller keeps them).
#[derive(Debug)]
pub struct VersionedLru<V = Bytes> {
    entries: LruCache<Bytes, Cached<V>>,
    bytes: usize,
    /// Entries with a TTL: while there are none, a read skips the expiry check (one hash
    /// lookup per hit, not two).
    expiring: usize,
    bounds: Bounds,
    on_write: OnWrite,
    tombstones: Tombstones,
    /// The last log entry applied: `(epoch, lsn)`.
    processed: Version,
    /// The newest epoch known to have begun, and an LSN at or after its first: a value of
    /// an older epoch read at this LSN or later belongs to a history it cut off.
    cut: Version,
    counters: Counters,
}

fn footprint(key: &[u8], value: &impl Weigh) -> usize {
    entry_bytes(key.len(), value.weight())
}

fn entry_bytes(key_bytes: usize, value_weight: usize) -> usize {
    key_bytes + value_weight + ENTRY_OVERHEAD
}

impl<V: Weigh> VersionedLru<V> {
    /// An empty cache within `bounds` (a capacity of 0 is taken as 1).
    #[must_use]
    pub fn new(bounds: Bounds, on_write: OnWrite) -> Self {
        let bounds = Bounds {
            capacity: bounds.capacity.max(1),
            ..bounds
        };
        Self {
            entries: LruCache::unbounded(),
            bytes: 0,
            expiring: 0,
            bounds,
            on_write,
            tombstones: Tombstones::new(bounds.tombstones),
            processed: Version::default(),
            cut: Version::default(),
            counters: Counters::default(),
        }
    }

    /// The live value of `key` and its version, marking it most recently used.
    pub fn get(&mut self, key: &[u8], now_ms: u64) -> Option<(&V, Version)> {
        if self.expiring > 0 && self.expire_if_due(key, now_ms) {
            self.counters.misses += 1;
            return None;
        }
        let Self {
            entries, counters, ..
        } = self;
        if let Some(cached) = entries.get(key) {
            counters.hits += 1;
            Some((&cached.value, cached.version))
        } else {
            counters.misses += 1;
            None
        }
    }

    /// Whether any entry has a TTL (if none, reads need no clock).
    #[must_use]
    pub fn has_expiring(&self) -> bool {
        self.expiring > 0
    }

    /// How many entries have a TTL (some may be past it, not dropped yet).
    #[must_use]
    pub fn expiring(&self) -> usize {
        self.expiring
    }

    /// Drops `key` if its TTL has passed; returns whether it did. Due once the clock is
    /// past the deadline, as in Redis: on a clock of whole milliseconds, rounded down, an
    /// entry never expires before its TTL has fully passed.
    fn expire_if_due(&mut self, key: &[u8], now_ms: u64) -> bool {
        let due = self
            .entries
            .peek(key)
            .is_some_and(|c| c.expires_at_ms.is_some_and(|at| at < now_ms));
        if due {
            self.remove(key);
            self.counters.expirations += 1;
        }
        due
    }

    /// Whether `key` holds a live value (no hit or miss is counted, recency unchanged).
    pub fn contains(&mut self, key: &[u8], now_ms: u64) -> bool {
        !self.expire_if_due(key, now_ms) && self.entries.contains(key)
    }

    /// A plain `SET`: stores `value` unversioned (any later write or fill replaces it), if
    /// `condition` holds; returns whether it stored.
    ///
    /// # Errors
    /// [`Fill::TooLarge`]: the value alone exceeds the byte bound (nothing changes).
    pub fn set(
        &mut self,
        key: Bytes,
        value: V,
        ttl_ms: Option<u64>,
        condition: SetIf,
        now_ms: u64,
    ) -> Result<bool, Fill> {
        let present = self.contains(&key, now_ms);
        let allowed = match condition {
            SetIf::Always => true,
            SetIf::Absent => !present,
            SetIf::Present => present,
        };
        if !allowed {
            return Ok(false);
        }
        self.store(key, value, Version::default(), ttl_ms, now_ms)?;
        Ok(true)
    }

    /// A versioned fill ("set if newer"): stored only if no write of `key` after the fill's
    /// snapshot is known, no newer value is cached, and the snapshot is not of an older
    /// epoch than the node has seen.
    pub fn fill(
        &mut self,
        key: Bytes,
        value: V,
        version: Version,
        ttl_ms: Option<u64>,
        now_ms: u64,
    ) -> Fill {
        let newer_cached = self.entries.peek(&key).is_some_and(|c| c.version > version);
        if version.lsn < self.tombstones.floor(&key)
            || version.epoch < self.processed.epoch
            || (version.epoch < self.cut.epoch && version.lsn >= self.cut.lsn)
            || newer_cached
        {
            self.counters.stale_fills_refused += 1;
            return Fill::Stale;
        }
        match self.store(key, value, version, ttl_ms, now_ms) {
            Ok(()) => Fill::Stored,
            Err(refused) => refused,
        }
    }

    /// Counts a fill refused before it reached [`Self::fill`] (a version no source holds).
    pub fn refuse_fill(&mut self) {
        self.counters.stale_fills_refused += 1;
    }

    /// Whether a key of `key_bytes` with a value weighing `value_weight` fits the byte
    /// bound at all (what [`Self::set`] refuses with [`Fill::TooLarge`] otherwise).
    #[must_use]
    pub fn fits(&self, key_bytes: usize, value_weight: usize) -> bool {
        self.bounds
            .max_bytes
            .is_none_or(|max| entry_bytes(key_bytes, value_weight) <= max)
    }

    fn store(
        &mut self,
        key: Bytes,
        value: V,
        version: Version,
        ttl_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<(), Fill> {
        let size = footprint(&key, &value);
        if self.bounds.max_bytes.is_some_and(|max| size > max) {
            return Err(Fill::TooLarge);
        }
        self.remove(&key);
        self.bytes += size;
        let cached = Cached {
            value,
            version,
            expires_at_ms: ttl_ms.map(|ttl| now_ms.saturating_add(ttl)),
        };
        if cached.expires_at_ms.is_some() {
            self.expiring += 1;
        }
        self.entries.push(key, cached);
        self.make_room();
        Ok(())
    }

    /// Evicts least recently used entries until both bounds hold.
    fn make_room(&mut self) {
        while self.entries.len() > self.bounds.capacity
            || self.bounds.max_bytes.is_some_and(|max| self.bytes > max)
        {
            let Some((key, cached)) = self.entries.pop_lru() else {
                return;
            };
            self.forget(&key, &cached);
            self.counters.evictions += 1;
        }
    }

    /// Takes a removed entry out of the counts.
    fn forget(&mut self, key: &[u8], cached: &Cached<V>) {
        self.bytes -= footprint(key, &cached.value);
        if cached.expires_at_ms.is_some() {
            self.expiring -= 1;
        }
    }

    /// Drops `key`; returns whether it was held.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        match self.entries.pop(key) {
            Some(cached) => {
                self.forget(key, &cached);
                true
            }
            None => false,
        }
    }

    /// Drops `key` because a client said it changed; returns whether it was held.
    pub fn invalidate(&mut self, key: &[u8]) -> bool {
        let held = self.remove(key);
        if held {
            self.counters.invalidations += 1;
        }
        held
    }

    /// Applies the log's write of `key` by the entry `at`: remembers it, and drops or
    /// refreshes the key if held (`value` is `None` for a delete).
    pub fn written(&mut self, key: &Bytes, value: Option<V>, at: Version, now_ms: u64) {
        self.tombstones.record(key, at.lsn);
        let Some(held) = self.entries.peek(key) else {
            return;
        };
        // A fill read after this write, in this history, already holds a value at least
        // this new. One at this very entry holds the entry's end (and so does a value an
        // earlier op of the entry dropped, as dropping leaves nothing); a value an earlier
        // op of the entry refreshed may not (`put_many` of one key twice, or a put then a
        // delete in a transaction): refreshing goes on through the entry's last op of the
        // key, which is its end.
        let newer = match self.on_write {
            OnWrite::Refresh => held.version > at,
            OnWrite::Drop => held.version >= at,
        };
        if newer && held.version != Version::default() {
            return;
        }
        self.counters.invalidations += 1;
        let ttl_left = held.expires_at_ms.map(|at_ms| at_ms.saturating_sub(now_ms));
        match (self.on_write, value) {
            (OnWrite::Refresh, Some(value)) => {
                // Keeps the key's remaining TTL; a value too large is dropped instead.
                if self
                    .store(key.clone(), value, at, ttl_left, now_ms)
                    .is_err()
                {
                    self.remove(key);
                }
            }
            _ => {
                self.remove(key);
            }
        }
    }

    /// Learns that epoch `start.epoch` began at `start.lsn` or before it: from the first
    /// entry of a new epoch (before its writes), or from a new primary's welcome (its log's
    /// end + 1). A value of an older epoch read at `start.lsn` or later comes from entries
    /// the new history cut off (a primary lost them when it failed over): a held one is
    /// dropped even if its key is never written again, and a fill of one is refused from
    /// now on. Returns how many were dropped.
    pub fn epoch_begins(&mut self, start: Version) -> usize {
        if start.epoch > self.cut.epoch
            || (start.epoch == self.cut.epoch && start.lsn < self.cut.lsn)
        {
            self.cut = start;
        }
        self.invalidate_where(|_, cached| {
            cached.version.epoch < start.epoch && cached.version.lsn >= start.lsn
        })
    }

    /// Records that the log was applied up to `at`.
    pub fn processed_through(&mut self, at: Version) {
        self.processed = at;
    }

    /// The last log entry applied.
    #[must_use]
    pub fn processed(&self) -> Version {
        self.processed
    }

    /// The newest epoch known to have begun: that of the last entry applied, or one a
    /// primary's welcome announced (see [`Self::epoch_begins`]).
    #[must_use]
    pub fn newest_epoch(&self) -> u64 {
        self.processed.epoch.max(self.cut.epoch)
    }

    /// Drops everything and forgets every write up to `lsn`: fills older than it are
    /// refused from now on (FLUSHALL, a fork, a lost log position).
    pub fn flush(&mut self, lsn: u64) {
        self.entries.clear();
        self.bytes = 0;
        self.expiring = 0;
        self.tombstones.forget_through(lsn);
        self.counters.flushes += 1;
    }

    /// Forgets every write up to `lsn`, dropping nothing: fills older than it are refused
    /// from now on. For a cache that holds nothing and starts following a log (not a
    /// flush: `flushes` counts only what dropped, or could have dropped, a value).
    pub fn start_after(&mut self, lsn: u64) {
        debug_assert!(self.entries.is_empty(), "a cache that starts holds nothing");
        self.tombstones.forget_through(lsn);
    }

    /// Drops everything and starts over at `at` in a new history (a fork): what was
    /// remembered of the old history no longer applies, so the watermark becomes exactly
    /// `at.lsn`, and fills of an epoch older than `at.epoch` are refused. Not counted as a
    /// flush: the fork's [`flush`](Self::flush) was.
    pub fn restart(&mut self, at: Version) {
        self.entries.clear();
        self.bytes = 0;
        self.expiring = 0;
        self.tombstones = Tombstones::new(self.bounds.tombstones);
        self.tombstones.forget_through(at.lsn);
        self.processed = at;
        // Epochs of the old history say nothing of the new one's.
        self.cut = Version::default();
    }

    /// Sets the TTL of a live `key` (`None` removes it); returns whether the key is held.
    pub fn expire(&mut self, key: &[u8], ttl_ms: Option<u64>, now_ms: u64) -> bool {
        if !self.contains(key, now_ms) {
            return false;
        }
        if let Some(cached) = self.entries.peek_mut(key) {
            let had = cached.expires_at_ms.is_some();
            cached.expires_at_ms = ttl_ms.map(|ttl| now_ms.saturating_add(ttl));
            match (had, ttl_ms.is_some()) {
                (false, true) => self.expiring += 1,
                (true, false) => self.expiring -= 1,
                _ => {}
            }
        }
        true
    }

    /// The TTL left on `key`: `None` if not held, `Some(None)` if it never expires.
    pub fn ttl_left(&mut self, key: &[u8], now_ms: u64) -> Option<Option<u64>> {
        if !self.contains(key, now_ms) {
            return None;
        }
        let cached = self.entries.peek(key)?;
        Some(cached.expires_at_ms.map(|at| at.saturating_sub(now_ms)))
    }

    /// Drops the held keys that start with `prefix`; returns how many.
    pub fn remove_prefix(&mut self, prefix: &[u8]) -> usize {
        self.invalidate_where(|key, _| key.starts_with(prefix))
    }

    /// Drops the held entries `doomed` picks, counted as invalidations; returns how many.
    fn invalidate_where(&mut self, doomed: impl Fn(&Bytes, &Cached<V>) -> bool) -> usize {
        let keys: Vec<Bytes> = self
            .entries
            .iter()
            .filter(|(key, cached)| doomed(key, cached))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &keys {
            self.remove(key);
        }
        self.counters.invalidations += keys.len() as u64;
        keys.len()
    }

    /// Entries held (expired ones not yet dropped included, as Redis's DBSIZE counts them).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held, as the byte bound counts them.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The bounds it keeps.
    #[must_use]
    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// Recent writes remembered, and the watermark below which writes are forgotten.
    #[must_use]
    pub fn tombstones(&self) -> (usize, u64) {
        (self.tombstones.len(), self.tombstones.watermark())
    }

    /// The counters so far.
    #[must_use]
    pub fn counters(&self) -> Counters {
        self.counters
    }
}

#[cfg(test)]
mod tests;
