//! What a store holds and what it takes on disk, as [`Store::stats`] reports it.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{dir_io, Store};
use crate::error::{Error, LogError, Result};
use crate::log::LogPosition;

/// A store's rows, log and files, as [`Store::stats`] reports them.
///
/// Sizes are the bytes the files take on disk (their allocated blocks, as `du` counts
/// them), not their apparent lengths: a log segment is preallocated whole, and a redb file
/// may hold holes. The sizes add up to every file under the store's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    /// Rows per table (tables that were written, including emptied ones).
    pub rows: BTreeMap<String, u64>,
    /// Bytes of the log's segment files (the last one preallocated).
    pub log_bytes: u64,
    /// Bytes of the tables file (redb).
    pub tables_bytes: u64,
    /// Bytes of every other file (lock, replication slots, staging areas).
    pub other_bytes: u64,
    /// The oldest LSN the log retains (`changes()` below it raise `LogTruncated`).
    pub oldest_lsn: u64,
    /// The commit time of that entry (ms since the Unix epoch), `None` if the log holds
    /// no entry yet.
    pub oldest_time_ms: Option<u64>,
    /// The last LSN readers see (durable; on a replica, its own fdatasync may follow).
    pub last_lsn: u64,
}

impl StoreStats {
    /// Every byte the store takes on disk.
    #[must_use]
    pub fn total_bytes(&self) -> u64 {
        self.log_bytes + self.tables_bytes + self.other_bytes
    }
}

/// The bytes a file takes on disk: its allocated 512-byte blocks.
pub(super) fn allocated_bytes(metadata: &Metadata) -> u64 {
    metadata.blocks() * 512
}

/// The allocated bytes of every file under `dir`, recursively.
fn bytes_under(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // A directory removed meanwhile (a staging area) holds nothing.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(dir_io("cannot list", dir)(e).into()),
    };
    for entry in entries {
        let entry = entry.map_err(dir_io("cannot list", dir))?;
        let path = entry.path();
        let metadata = match std::fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(dir_io("cannot stat", &path)(e).into()),
        };
        total += if metadata.is_dir() {
            bytes_under(&path)?
        } else {
            allocated_bytes(&metadata)
        };
    }
    Ok(total)
}

impl Store {
    /// When the entry at `lsn` was committed (ms since the Unix epoch), or `None` if the
    /// log no longer holds it (retention dropped it meanwhile) or does not hold it yet.
    ///
    /// # Errors
    /// A closed store, a damaged or unreadable log.
    pub fn commit_time_ms(&self, lsn: u64) -> Result<Option<u64>> {
        let mut position = LogPosition::after(lsn.saturating_sub(1));
        match self.read_log_raw(&mut position, 1, usize::MAX) {
            Ok(entries) => Ok(entries
                .first()
                .filter(|entry| entry.lsn == lsn)
                .map(|entry| entry.timestamp_ms)),
            Err(Error::Log(LogError::Truncated { .. })) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Rows per table, bytes on disk (log, tables, other files), the oldest retained LSN
    /// and its commit time, and the last LSN.
    ///
    /// # Errors
    /// A closed store, an I/O failure reading the directory.
    pub fn stats(&self) -> Result<StoreStats> {
        let checksum = self.checksum()?;
        let oldest_lsn = self.oldest_lsn()?;
        let oldest_time_ms = if oldest_lsn <= checksum.lsn {
            self.commit_time_ms(oldest_lsn)?
        } else {
            None
        };
        let path = self.path();
        let log_bytes = bytes_under(&path.join("log"))?;
        let all_bytes = bytes_under(path)?;
        let tables_path = path.join("tables.redb");
        let tables_bytes = allocated_bytes(
            &std::fs::metadata(&tables_path).map_err(dir_io("cannot stat", &tables_path))?,
        );
        Ok(StoreStats {
            rows: checksum
                .tables
                .into_iter()
                .map(|(table, sum)| (table, sum.rows))
                .collect(),
            log_bytes,
            tables_bytes,
            other_bytes: all_bytes.saturating_sub(log_bytes + tables_bytes),
            oldest_lsn,
            oldest_time_ms,
            last_lsn: checksum.lsn,
        })
    }
}
