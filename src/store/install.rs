//! Snapshots: a consistent copy of every table at one LSN, read on a primary without
//! stopping its writers, and installed on a follower beside its old state, then swapped in
//! whole (readers wait for the swap; they never see a half-installed snapshot).
//!
//! Installation stages `incoming/tables.redb` and `incoming/log/` (a log that starts after
//! the snapshot's LSN), then writes `incoming/COMPLETE`: that file is the commit point. On
//! open, a complete staging area is rolled forward into place and an incomplete one is
//! removed, so a crash at any point leaves either the old state or the new one.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::epochs::EpochHistory;
use super::recover::Parts;
use super::tables::{Snapshot, TableSum, Tables};
use super::{dir_io, validate_table_name, Open, Store};
use crate::codec::Op;
use crate::error::{ReadOnlyReason, Result, StoreError};
use crate::follow::SnapshotStart;
use crate::log::{DirFs, Log, LogOptions};

const INCOMING: &str = "incoming";
const REPLACED: &str = "replaced";
const COMPLETE: &str = "COMPLETE";
/// What a store directory holds besides its lock, in the order they are swapped.
const STATE: [&str; 2] = ["tables.redb", "log"];

/// A read view of every table at one LSN, for sending a snapshot.
pub struct SnapshotView {
    /// Where a follower installing this view starts from: its LSN, epoch and identity.
    pub start: SnapshotStart,
    /// Every table's row count and checksum at that LSN.
    pub sums: BTreeMap<String, TableSum>,
    snapshot: Snapshot,
}

impl SnapshotView {
    /// Up to `limit` rows of `table` after the key `after` (from the start if `None`).
    ///
    /// # Errors
    /// A storage failure.
    pub fn rows(
        &self,
        table: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.snapshot
            .scan(table, (lower, Bound::Unbounded), false, limit, Vec::new())
    }

    /// Calls `f` with each row of `table` between two encoded-key bounds, in key order,
    /// borrowed (nothing is copied), until `f` returns `false`.
    ///
    /// # Errors
    /// A row that fails its check; a storage failure.
    pub fn visit(
        &self,
        table: &str,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.snapshot.visit(table, bounds, f)
    }

    /// Like [`SnapshotView::visit`], with each value as stored: unchecked, its CRC still
    /// on it. [`super::checked_value`] checks one and takes its value (on any thread: a caller
    /// that walks rows on one thread and decodes them on others checks them there).
    ///
    /// # Errors
    /// A storage failure.
    pub fn visit_sealed(
        &self,
        table: &str,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.snapshot.visit_sealed(table, bounds, f)
    }
}

/// A snapshot being installed into a follower store.
pub struct Installer {
    store: Store,
    staging: PathBuf,
    tables: Tables,
    start: SnapshotStart,
    history: EpochHistory,
    rows: u64,
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| dir_io("cannot sync directory", path)(e).into())
}

fn remove_dir(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(dir_io("cannot remove", path)(e).into())
        }
        _ => Ok(()),
    }
}

/// Rolls a complete staged snapshot forward into place, or removes an incomplete one.
pub(super) fn finish_install(path: &Path) -> Result<()> {
    let staging = path.join(INCOMING);
    if !staging.exists() {
        return Ok(());
    }
    if !staging.join(COMPLETE).exists() {
        tracing::warn!(path = %path.display(), "removing an incomplete snapshot");
        return remove_dir(&staging);
    }
    let replaced = path.join(REPLACED);
    // What a crashed earlier attempt moved aside is garbage: the staged state replaces it.
    remove_dir(&replaced)?;
    std::fs::create_dir(&replaced).map_err(dir_io("cannot create", &replaced))?;
    for name in STATE {
        let (live, staged) = (path.join(name), staging.join(name));
        if staged.exists() {
            if live.exists() {
                std::fs::rename(&live, replaced.join(name))
                    .map_err(dir_io("cannot move aside", &live))?;
            }
            std::fs::rename(&staged, &live).map_err(dir_io("cannot install", &staged))?;
        }
    }
    sync_dir(path)?;
    remove_dir(&replaced)?;
    remove_dir(&staging)?;
    sync_dir(path)
}

impl Store {
    /// A consistent view of every table at the current visible LSN. Writers are held only
    /// while the view is taken (the in-memory overlay is moved into redb first).
    ///
    /// # Errors
    /// A closed store or a storage failure.
    pub fn snapshot_view(&self) -> Result<SnapshotView> {
        let (lsn, epoch, sums, snapshot) = self.flushed_snapshot()?;
        Ok(SnapshotView {
            start: self.snapshot_start_at(lsn, epoch)?,
            sums,
            snapshot,
        })
    }

    /// Where a snapshot taken now would start, without reading a row: the visible LSN,
    /// its entry's identity, the lineage and the epochs up to it. A consumer that keeps no
    /// data is seeded with this alone.
    ///
    /// # Errors
    /// A closed store or a storage failure.
    pub fn snapshot_start(&self) -> Result<SnapshotStart> {
        self.snapshot_start_at(self.last_lsn(), self.epoch())
    }

    /// The start of a snapshot at `lsn`, taken while the store was at `epoch`.
    fn snapshot_start_at(&self, lsn: u64, epoch: u64) -> Result<SnapshotStart> {
        Ok(SnapshotStart {
            lsn,
            epoch,
            id: self.entry_id(lsn)?.unwrap_or((0, 0)),
            lineage: self.lineage()?,
            history: self.epoch_history().up_to(lsn).pairs().to_vec(),
        })
    }

    /// Starts installing a snapshot taken at `start.lsn` (follower stores only).
    ///
    /// # Errors
    /// [`StoreError::ReadOnly`] on a store that is not a follower; I/O failures.
    pub fn begin_install(&self, start: SnapshotStart) -> Result<Installer> {
        if self.read_only_reason() != Some(ReadOnlyReason::Replica) {
            return Err(self.read_only(ReadOnlyReason::NotAFollower));
        }
        // A primary that sends no history predates it: its log was all epoch 1.
        let history = if start.history.is_empty() {
            EpochHistory::default()
        } else {
            EpochHistory::new(start.history.clone()).map_err(|reason| StoreError::Corrupt {
                reason: format!("the snapshot's epoch history is invalid: {reason}"),
            })?
        };
        let staging = self.inner.path.join(INCOMING);
        remove_dir(&staging)?;
        std::fs::create_dir(&staging).map_err(dir_io("cannot create", &staging))?;
        let cache_bytes = self.inner.options.cache_bytes;
        // The directory stays the same store to its primary (a reconnection replaces).
        let (tables, _) = Tables::open(
            &staging.join("tables.redb"),
            true,
            cache_bytes,
            Arc::default(),
            self.inner.options.fsync,
            Some(self.store_id()?),
        )?;
        Ok(Installer {
            store: self.clone(),
            staging,
            tables,
            start,
            history,
            rows: 0,
        })
    }

    /// Swaps a complete staged snapshot in: readers wait on the open lock meanwhile.
    fn swap_in(&self) -> Result<()> {
        let mut guard = self
            .inner
            .open
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(old) = guard.take() else {
            return Err(self.closed_error(None));
        };
        let Open {
            checkpointer,
            tables,
            overlay,
            log,
            _lock: lock,
        } = old;
        // The checkpointer first: it holds handles of the tables.
        drop(checkpointer);
        drop((tables, overlay, log));
        finish_install(&self.inner.path)?;
        let log_dir = self.inner.path.join("log");
        let parts = Parts::recover(
            &self.inner.path,
            &self.inner.options,
            Box::new(DirFs::new(&log_dir)),
        )?;
        self.inner
            .pipeline
            .reset(parts.next_lsn, parts.history.last_epoch());
        self.reset_epochs(parts.history, parts.epoch);
        self.inner
            .marked_follower
            .store(parts.follower, std::sync::atomic::Ordering::Release);
        *guard = Some(Open {
            checkpointer: parts.checkpointer,
            tables: parts.tables,
            overlay: parts.overlay,
            log: parts.log,
            _lock: lock,
        });
        // Before any reader sees the new state (they wait on `guard`): a cache in front of
        // this store never learns of the writes the snapshot skipped, so it must drop
        // everything it holds first.
        self.inner.watchers.tell_reset(parts.next_lsn - 1);
        // Listeners run with no lock of the store held (see `Store::on_visible`): one
        // that reads the log would wait forever on the lock this swap holds.
        drop(guard);
        self.inner.pipeline.announce_reset();
        Ok(())
    }
}

impl Installer {
    /// Adds rows of one table (keys and values as stored).
    ///
    /// # Errors
    /// An invalid table name or a storage failure.
    pub fn add(&mut self, table: &str, rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        validate_table_name(table)?;
        self.rows += rows.len() as u64;
        let ops: Vec<Op> = rows
            .into_iter()
            .map(|(key, value)| Op {
                table: table.to_owned(),
                key,
                value: Some(value),
            })
            .collect();
        self.tables.apply([(0, ops.as_slice())], false)
    }

    /// Rows added so far.
    #[must_use]
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Checks the staged tables against the sender's checksums, makes them durable with a
    /// log that starts after the snapshot, commits the staging area and swaps it in.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the checksums differ (nothing is installed); I/O failures.
    pub fn finish(self, expected: &BTreeMap<String, TableSum>) -> Result<()> {
        let (_, sums) = self.tables.sums()?;
        let nonempty = |sums: &BTreeMap<String, TableSum>| -> BTreeMap<String, TableSum> {
            sums.iter()
                .filter(|(_, s)| s.rows > 0)
                .map(|(n, s)| (n.clone(), *s))
                .collect()
        };
        if nonempty(&sums) != nonempty(expected) {
            remove_dir(&self.staging)?;
            return Err(StoreError::Corrupt {
                reason: "the snapshot's tables do not match the sender's checksums".to_owned(),
            }
            .into());
        }
        let start = &self.start;
        self.tables.set_epochs(self.history.pairs(), start.epoch)?;
        self.tables
            .set_position(start.lsn, start.epoch, start.id, start.lineage)?;
        drop(self.tables);
        let log_dir = self.staging.join("log");
        std::fs::create_dir(&log_dir).map_err(dir_io("cannot create", &log_dir))?;
        let options = LogOptions {
            fsync: true,
            ..self.store.inner.options.log_options()
        };
        drop(Log::open(
            Box::new(DirFs::new(&log_dir)),
            options,
            self.start.lsn,
            |_| Ok(()),
        )?);
        let marker = self.staging.join(COMPLETE);
        File::create(&marker)
            .and_then(|f| f.sync_all())
            .map_err(dir_io("cannot write", &marker))?;
        sync_dir(&self.staging)?;
        tracing::info!(
            lsn = self.start.lsn,
            rows = self.rows,
            "installing a snapshot"
        );
        self.store.swap_in()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(root: &Path, staged: bool, complete: bool) {
        std::fs::write(root.join("tables.redb"), b"old tables").unwrap();
        std::fs::create_dir_all(root.join("log")).unwrap();
        std::fs::write(root.join("log/1.seg"), b"old log").unwrap();
        if staged {
            let staging = root.join(INCOMING);
            std::fs::create_dir_all(staging.join("log")).unwrap();
            std::fs::write(staging.join("tables.redb"), b"new tables").unwrap();
            std::fs::write(staging.join("log/41.seg"), b"new log").unwrap();
            if complete {
                std::fs::write(staging.join(COMPLETE), b"").unwrap();
            }
        }
    }

    #[test]
    fn a_complete_staging_area_is_rolled_forward() {
        let dir = tempfile::tempdir().unwrap();
        layout(dir.path(), true, true);
        finish_install(dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("tables.redb")).unwrap(),
            b"new tables"
        );
        assert!(dir.path().join("log/41.seg").exists() && !dir.path().join("log/1.seg").exists());
        assert!(!dir.path().join(INCOMING).exists() && !dir.path().join(REPLACED).exists());
    }

    #[test]
    fn a_roll_forward_interrupted_halfway_finishes_on_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        layout(dir.path(), true, true);
        // The crash came after the tables were swapped and before the log was.
        std::fs::create_dir(dir.path().join(REPLACED)).unwrap();
        std::fs::rename(
            dir.path().join("tables.redb"),
            dir.path().join(REPLACED).join("tables.redb"),
        )
        .unwrap();
        std::fs::rename(
            dir.path().join(INCOMING).join("tables.redb"),
            dir.path().join("tables.redb"),
        )
        .unwrap();
        finish_install(dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("tables.redb")).unwrap(),
            b"new tables"
        );
        assert!(dir.path().join("log/41.seg").exists() && !dir.path().join("log/1.seg").exists());
    }

    #[test]
    fn an_incomplete_staging_area_is_removed_and_the_old_state_kept() {
        let dir = tempfile::tempdir().unwrap();
        layout(dir.path(), true, false);
        finish_install(dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("tables.redb")).unwrap(),
            b"old tables"
        );
        assert!(dir.path().join("log/1.seg").exists());
        assert!(!dir.path().join(INCOMING).exists());
    }
}
