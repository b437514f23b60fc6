//! The materialized state in redb: one redb table per user table, plus `__meta` (applied LSN,
//! epoch, format, lineage, the store's own id, whether a replica owns the store) and
//! `__stats` (per table: row count and order-independent checksum). Every stored value
//! carries its CRC ([`super::stored`]); it is added here on the way in and checked on the
//! way out.

mod meta;
mod read;
mod scrub;

/// The logger its submodules log under too (`replikv.store.tables` in Python).
const LOG_TARGET: &str = module_path!();

use read::ReadView;
pub(crate) use read::{PendingRow, Row, Snapshot};
pub use scrub::{ScrubDamage, ScrubReport};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use redb::{
    Builder, CompactionError, Database, Durability, ReadableDatabase, ReadableTable,
    TableDefinition, TableError, WriteTransaction,
};

use super::apply::Applier;
use super::pace::Pace;
use super::paced::PacedFile;
use super::stored::{unseal, without_crc, Damage};
use crate::codec::{EncodedOps, Op};
use crate::error::{LogError, Result, StoreError};
use crate::log::Unsynced;

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("__meta");
pub(super) const STATS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("__stats");

pub(super) fn data_table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// The contribution of one row to its table's checksum. Checksums are wrapping sums of
/// these, so they are independent of order and updated in O(1) per write.
pub(crate) fn row_hash(key: &[u8], value: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(value, xxhash_rust::xxh3::xxh3_64(key))
}

/// What a streamed bulk load sends its applying thread.
pub(crate) enum Streamed {
    /// The next ops of the entry.
    Ops(EncodedOps),
    /// The entry is durable in the log at this LSN: commit.
    Commit(u64),
}

/// Row count and checksum of one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSum {
    /// Number of rows.
    pub rows: u64,
    /// Wrapping sum of the row hashes.
    pub checksum: u64,
}

/// The hash of a row as stored, for the checksum update of an overwrite or a delete. The
/// CRC is not checked here: hashing needs only the value's bytes, and checking would cost
/// a CRC pass on every overwrite. A write over a damaged row replaces the damaged value,
/// but the damaged row's original hash is unknown, so the table's checksum stays off until
/// the store is re-seeded; scrub reports it.
pub(super) fn stored_row_hash(key: &[u8], stored: &[u8]) -> u64 {
    row_hash(key, without_crc(stored))
}

/// The value of a row as stored (see [`crate::store::SnapshotView::visit_sealed`]), once
/// its CRC checks: on any thread, for a caller that walks rows on one thread and decodes
/// them on others.
///
/// # Errors
/// [`StoreError::DamagedRow`] if the stored bytes fail their check.
pub fn checked_value<'a>(table: &str, key: &[u8], stored: &'a [u8]) -> Result<&'a [u8]> {
    unseal(table, key, stored).map_err(|found| damaged(table, key, found))
}

fn damaged(table: &str, key: &[u8], damage: Damage) -> crate::Error {
    StoreError::DamagedRow {
        table: table.to_owned(),
        key: key.to_vec(),
        reason: damage.to_string(),
    }
    .into()
}

/// What the redb file says about itself on open.
pub(crate) struct Meta {
    pub applied_lsn: u64,
    pub epoch: u64,
    /// The store belongs to a replica: only a follower may write to it.
    pub follower: bool,
}

pub(crate) struct Tables {
    /// A read transaction of the last commit, shared by the reads that come before the
    /// next one: beginning a transaction per point read cost about a tenth of a `get`.
    /// Every commit goes through [`Tables::commit`], which drops it, so it never keeps
    /// pages alive that a later commit freed. (redb's `compact` needs no read transaction
    /// open: clear it first.) Field order is load-bearing: it must drop before `db`.
    latest: Mutex<Option<Snapshot>>,
    db: Database,
    /// The `applied_lsn` of the last commit, durable or not.
    applied_lsn: AtomicU64,
    /// The `applied_lsn` of the last fsync'ed commit: what a crash keeps, so the log before
    /// it is no longer needed by recovery.
    durable_lsn: AtomicU64,
    /// The log's segments written without their fdatasync (a follower's): synced before a
    /// durable transaction begins, since redb writes its new header before its own sync
    /// and the kernel may write it back first. The file's syncs sync them too.
    log: Arc<Unsynced>,
    /// The schedule the file's syncs keep (see [`super::paced`]).
    pace: Arc<Pace>,
}

/// What [`Tables::compact`] found.
pub(crate) enum Compacted {
    /// Free pages were given back (or none were left to give).
    Done,
    /// A read transaction was still open: nothing was done.
    ReadersActive,
}

fn missing_is_none<T>(result: Result<T, TableError>) -> Result<Option<T>> {
    match result {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(other) => Err(other.into()),
    }
}

impl Tables {
    /// Opens or creates the redb file and reads its metadata, migrating an older format.
    /// `follower` marks a new store durably as a replica's, in the transaction that creates
    /// it: no window exists in which a new replica's store is unmarked. An existing store is
    /// marked by [`Tables::set_follower`] once it takes on a primary's history.
    /// `cache_bytes` bounds redb's page cache (read cache and write buffer together).
    /// Without `fsync` (a store opened with `fsync=False`) its durable commits sync
    /// nothing: they survive a crash of the process, not a power loss. New tables (or
    /// tables of a release that gave none) take `store_id` as the id of their store
    /// directory, in the transaction that writes it, or a random one if `None`.
    pub(crate) fn open(
        path: &Path,
        follower: bool,
        cache_bytes: usize,
        log: Arc<Unsynced>,
        fsync: bool,
        store_id: Option<u64>,
    ) -> Result<(Self, Meta)> {
        let pace = Arc::new(Pace::default());
        let file = PacedFile::open(path, Arc::clone(&log), Arc::clone(&pace), fsync).map_err(
            |source| StoreError::Io {
                context: "cannot open the tables file",
                path: path.to_path_buf(),
                source,
            },
        )?;
        let db = Builder::new()
            .set_cache_size(cache_bytes)
            .create_with_backend(file)?;
        let tables = Self {
            latest: Mutex::new(None),
            db,
            applied_lsn: AtomicU64::new(0),
            durable_lsn: AtomicU64::new(0),
            log,
            pace,
        };
        let meta = tables.init_meta(follower, store_id)?;
        tables
            .applied_lsn
            .store(meta.applied_lsn, Ordering::Release);
        tables
            .durable_lsn
            .store(meta.applied_lsn, Ordering::Release);
        Ok((tables, meta))
    }

    /// The schedule the file's syncs keep: the checkpointer sets its own for its syncs.
    pub(super) fn pace(&self) -> &Pace {
        &self.pace
    }

    /// The last LSN an fsync'ed commit of the tables holds: recovery replays the log
    /// after it, so the log up to it may be dropped.
    pub(crate) fn durable_lsn(&self) -> u64 {
        self.durable_lsn.load(Ordering::Acquire)
    }

    /// An `Immediate` commit made every commit before it durable: `applied_lsn` must have
    /// been read before that commit began (a commit that ends after it read is not in it).
    fn committed_durably(&self, applied_lsn: u64) {
        self.durable_lsn.fetch_max(applied_lsn, Ordering::AcqRel);
    }

    /// Gives the free pages of the file back to the file system (redb's compaction). Needs
    /// the database to itself: with a read transaction still open it does nothing.
    pub(crate) fn compact(&mut self) -> Result<Compacted> {
        // The read transaction kept for point reads would block the compaction.
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = None;
        match self.db.compact() {
            Ok(_) => Ok(Compacted::Done),
            Err(CompactionError::TransactionInProgress) => Ok(Compacted::ReadersActive),
            Err(other) => Err(redb::Error::from(other).into()),
        }
    }

    /// A write transaction; a `durable` one fsyncs on commit and records redb's allocator
    /// state (quick repair), so that opening the file after a crash does not walk every
    /// page of it to rebuild that state (time that grows with the file). It costs the durable
    /// commit a second fsync, which the checkpointer pays in the background.
    fn begin_write(&self, durable: bool) -> Result<redb::WriteTransaction> {
        let mut txn = {
            let _waiting = self.pace.waiting();
            self.db.begin_write()?
        };
        if durable {
            // Every row committed to redb, and every row this transaction will hold, was
            // written to the log first (and no other commit can come in while this one is
            // open): once the log is durable, the tables can never be durable past it,
            // whatever reaches the disk first.
            self.log.sync().map_err(|source| LogError::Io {
                context: "fdatasync of the log before a checkpoint".to_owned(),
                source,
            })?;
            txn.set_durability(Durability::Immediate)?;
            txn.set_quick_repair(true);
        } else {
            txn.set_durability(Durability::None)?;
        }
        Ok(txn)
    }

    /// Applies whole entries in LSN order in one redb transaction that also records the last
    /// LSN as `applied_lsn`. `durable` makes it a checkpoint (an fsync'ed commit).
    pub(crate) fn apply<'a>(
        &self,
        entries: impl IntoIterator<Item = (u64, &'a [Op])>,
        durable: bool,
    ) -> Result<()> {
        let before = self.applied_lsn.load(Ordering::Acquire);
        let txn = self.begin_write(durable)?;
        let applied = {
            let mut applier = Applier::new(&txn)?;
            for (lsn, ops) in entries {
                applier.entry(lsn, ops)?;
            }
            applier.finish()?
        };
        self.commit(txn)?;
        if let Some(lsn) = applied {
            self.applied_lsn.store(lsn, Ordering::Release);
        }
        if durable {
            self.committed_durably(applied.unwrap_or(before));
        }
        Ok(())
    }

    /// Applies the chunks of one entry as they arrive on `chunks`, in one non-durable
    /// write transaction. Commits it only when
    /// told the entry's LSN (after the entry is durable in the log); if `chunks` closes
    /// first, or `abort` is set, nothing is committed. Runs on a bulk load's own thread.
    pub(crate) fn apply_streamed(
        &self,
        chunks: &std::sync::mpsc::Receiver<Streamed>,
        abort: &std::sync::atomic::AtomicBool,
    ) -> Result<Option<u64>> {
        let txn = self.begin_write(false)?;
        let applied = {
            let mut applier = Applier::new(&txn)?;
            loop {
                match chunks.recv() {
                    // Given up: the chunks still queued are not worth applying.
                    Ok(Streamed::Ops(_)) if abort.load(Ordering::Acquire) => return Ok(None),
                    Ok(Streamed::Ops(ops)) => applier.ops(ops.iter())?,
                    Ok(Streamed::Commit(lsn)) => {
                        applier.applied(lsn);
                        break applier.finish()?;
                    }
                    // Dropping the transaction aborts it.
                    Err(_) => return Ok(None),
                }
            }
        };
        self.commit(txn)?;
        if let Some(lsn) = applied {
            self.applied_lsn.store(lsn, Ordering::Release);
        }
        Ok(applied)
    }

    /// Records, durably, that the tables hold the state at `lsn` in `epoch` (a snapshot).
    /// `base` is the identity `(epoch, crc)` of the entry at `lsn` on the store the snapshot
    /// came from, and `lineage` that store's: a resume right after the snapshot is checked
    /// against them, since the log that follows starts after `lsn`.
    pub(crate) fn set_position(
        &self,
        lsn: u64,
        epoch: u64,
        base: (u64, u32),
        lineage: u64,
    ) -> Result<()> {
        self.write_meta(&[
            ("applied_lsn", lsn),
            ("epoch", epoch),
            ("base_lsn", lsn),
            ("base_epoch", base.0),
            ("base_crc", u64::from(base.1)),
            ("lineage", lineage),
        ])
    }

    /// An fsync'ed commit that makes every earlier non-durable commit durable.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        let before = self.applied_lsn.load(Ordering::Acquire);
        let txn = self.begin_write(true)?;
        self.commit(txn)?;
        self.committed_durably(before);
        Ok(())
    }

    /// Commits `txn`, and drops the read transaction kept for reads of the state before.
    fn commit(&self, txn: WriteTransaction) -> Result<()> {
        txn.commit()?;
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = None;
        Ok(())
    }

    /// A consistent read view of the tables as last committed.
    pub(crate) fn snapshot(&self) -> Result<Snapshot> {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(snapshot) = &*latest {
            return Ok(snapshot.clone());
        }
        let snapshot = Snapshot(Arc::new(ReadView::new(self.db.begin_read()?)));
        *latest = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// The applied LSN and every table's row count and checksum, read atomically.
    pub(crate) fn sums(&self) -> Result<(u64, BTreeMap<String, TableSum>)> {
        let txn = self.db.begin_read()?;
        let applied = txn
            .open_table(META)?
            .get("applied_lsn")?
            .map_or(0, |v| v.value());
        let mut sums = BTreeMap::new();
        for item in txn.open_table(STATS)?.iter()? {
            let (name, value) = item?;
            let (rows, checksum) = value.value();
            sums.insert(name.value().to_owned(), TableSum { rows, checksum });
        }
        Ok((applied, sums))
    }
}
