//! A simulated log disk: appended entries sit in a page cache until an fsync that started
//! after them completes; a crash keeps only what was fsynced.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::codec::payload_epoch;

/// The checksum of the entries before the first one.
pub const EMPTY_CHECKSUM: u64 = 0;

/// The checksum of a log after `payload` is added to one whose checksum is `previous`:
/// a chained hash, so equal checksums at one LSN mean equal histories.
#[must_use]
pub fn chain(previous: u64, payload: &[u8]) -> u64 {
    xxh3_64_with_seed(payload, previous)
}

/// One store's log as the simulation sees it.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    entries: Vec<Vec<u8>>,
    checksums: Vec<u64>,
    durable: u64,
    syncing: Option<u64>,
    incarnation: u64,
}

impl SimDisk {
    /// Entries in the log, durable or not.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Whether the log is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries that survive a crash: LSNs `1..=durable_lsn`.
    #[must_use]
    pub fn durable_lsn(&self) -> u64 {
        self.durable
    }

    /// The payload of the entry at `lsn`.
    #[must_use]
    pub fn entry(&self, lsn: u64) -> Option<&[u8]> {
        let index = lsn.checked_sub(1)?;
        self.entries.get(index as usize).map(Vec::as_slice)
    }

    /// The identity of the entry at `lsn` as a handshake compares it, `(epoch, crc)`;
    /// `(0, 0)` for LSN 0, before the first.
    #[must_use]
    pub fn id(&self, lsn: u64) -> Option<(u64, u32)> {
        if lsn == 0 {
            return Some((0, 0));
        }
        let payload = self.entry(lsn)?;
        Some((payload_epoch(payload)?, crc32c::crc32c(payload)))
    }

    /// The chained checksum of entries `1..=lsn`, computed from this disk's own bytes.
    #[must_use]
    pub fn checksum(&self, lsn: u64) -> Option<u64> {
        match lsn {
            0 => Some(EMPTY_CHECKSUM),
            _ => self.checksums.get(lsn as usize - 1).copied(),
        }
    }

    /// Adds an entry to the page cache; returns its LSN.
    pub fn append(&mut self, payload: Vec<u8>) -> u64 {
        let previous = self.checksums.last().copied().unwrap_or(EMPTY_CHECKSUM);
        self.checksums.push(chain(previous, &payload));
        self.entries.push(payload);
        self.len()
    }

    /// Starts an fsync of everything appended so far, unless one is running or nothing
    /// is waiting; returns the LSN it will make durable and the disk's incarnation, which
    /// the completion must quote (an fsync that a crash interrupted completes nothing).
    pub fn start_fsync(&mut self) -> Option<(u64, u64)> {
        if self.syncing.is_some() || self.durable == self.len() {
            return None;
        }
        self.syncing = Some(self.len());
        Some((self.len(), self.incarnation))
    }

    /// The fsync started at `incarnation` completed: entries up to `lsn` are durable.
    /// Returns whether it belonged to this incarnation.
    pub fn fsynced(&mut self, lsn: u64, incarnation: u64) -> bool {
        if incarnation != self.incarnation {
            return false;
        }
        self.durable = self.durable.max(lsn);
        self.syncing = None;
        true
    }

    /// The log is cut after `lsn` (durably: the store syncs the cut before it appends),
    /// and a running fsync no longer stands for what it covered.
    pub fn cut(&mut self, lsn: u64) {
        self.entries.truncate(lsn as usize);
        self.checksums.truncate(lsn as usize);
        self.durable = self.durable.min(lsn);
        self.syncing = None;
        self.incarnation += 1;
    }

    /// Power loss: the page cache is gone, and so is a running fsync.
    pub fn crash(&mut self) {
        self.entries.truncate(self.durable as usize);
        self.checksums.truncate(self.durable as usize);
        self.syncing = None;
        self.incarnation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_only_what_an_fsync_completed_for() {
        let mut disk = SimDisk::default();
        disk.append(b"one".to_vec());
        let (lsn, incarnation) = disk.start_fsync().unwrap();
        disk.append(b"two".to_vec());
        assert_eq!(disk.start_fsync(), None, "one fsync at a time");
        assert!(disk.fsynced(lsn, incarnation));
        assert_eq!(disk.durable_lsn(), 1, "the fsync began before entry 2");
        let (lsn, incarnation) = disk.start_fsync().unwrap();
        disk.crash();
        assert!(!disk.fsynced(lsn, incarnation), "interrupted by the crash");
        assert_eq!(disk.len(), 1);
        assert_eq!(disk.checksum(1), Some(chain(EMPTY_CHECKSUM, b"one")));
    }
}
