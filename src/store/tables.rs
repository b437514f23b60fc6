//! The materialized state in redb: one redb table per user table, plus `__meta` (applied LSN,
//! epoch, format, lineage, the store's own id, whether a replica owns the store) and
//! `__stats` (per table: row count and order-independent checksum). Every stored value
//! carries its CRC ([`super::stored`]); it is added here on the way in and checked on the
//! way out.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use redb::{
    Builder, CompactionError, Database, Durability, ReadOnlyTable, ReadTransaction,
    ReadableDatabase, ReadableTable, TableDefinition, TableError, TableHandle, WriteTransaction,
};

use super::apply::Applier;
use super::pace::Pace;
use super::paced::PacedFile;
use super::stored::{seal_into, unseal, without_crc, Damage};
use crate::codec::{EncodedOps, Op};
use crate::error::{LogError, Result, StoreError};
use crate::log::Unsynced;

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("__meta");
pub(super) const STATS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("__stats");
/// The epoch history: epoch -> the LSN of its first entry.
const EPOCHS: TableDefinition<u64, u64> = TableDefinition::new("__epochs");
/// Format 2 added the per-value CRC; format 1 files are migrated on open.
const FORMAT_VERSION: u64 = 2;
/// The metadata key set (to 1) while the store belongs to a replica.
const FOLLOWER: &str = "follower";
/// The `__meta` key of the random id a store directory is given when created (or first
/// opened by a release that gives one), unlike its lineage never inherited.
const STORE_ID: &str = "store_id";
/// Rows a migration reads per batch (it rewrites them before reading on).
const MIGRATION_BATCH: usize = 4096;

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

/// A random identity for a new store's history (replicas inherit their primary's), or for
/// a store directory itself; never 0, which stands for none.
fn random_id() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("invariant: the OS random source is available");
    u64::from_le_bytes(bytes).max(1)
}

fn corrupt(reason: &str) -> crate::Error {
    StoreError::Corrupt {
        reason: reason.to_owned(),
    }
    .into()
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
    pub(crate) fn open(
        path: &Path,
        follower: bool,
        cache_bytes: usize,
        log: Arc<Unsynced>,
    ) -> Result<(Self, Meta)> {
        let pace = Arc::new(Pace::default());
        let file =
            PacedFile::open(path, Arc::clone(&log), Arc::clone(&pace)).map_err(|source| {
                StoreError::Io {
                    context: "cannot open the tables file",
                    path: path.to_path_buf(),
                    source,
                }
            })?;
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
        let meta = tables.init_meta(follower)?;
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

    fn init_meta(&self, follower: bool) -> Result<Meta> {
        let txn = self.db.begin_read()?;
        if let Some(meta) = missing_is_none(txn.open_table(META))? {
            let read = |key: &str| -> Result<Option<u64>> { Ok(meta.get(key)?.map(|v| v.value())) };
            let (version, applied_lsn, epoch, marked, has_id) = (
                read("format_version")?,
                read("applied_lsn")?,
                read("epoch")?,
                read(FOLLOWER)? == Some(1),
                read(STORE_ID)?.is_some(),
            );
            drop((meta, txn));
            let (Some(version), Some(applied_lsn), Some(epoch)) = (version, applied_lsn, epoch)
            else {
                return Err(corrupt("the metadata table is incomplete"));
            };
            match version {
                FORMAT_VERSION => {}
                1 => self.migrate_from_1()?,
                other => {
                    return Err(corrupt(&format!(
                        "unsupported format version {other} (this replikv reads versions 1 \
                         to {FORMAT_VERSION}: the store was written by a newer release)"
                    )))
                }
            }
            if !has_id {
                self.write_meta(&[(STORE_ID, random_id())])?;
            }
            return Ok(Meta {
                applied_lsn,
                epoch,
                follower: marked,
            });
        }
        if txn.list_tables()?.next().is_some() {
            return Err(corrupt(
                "the redb file holds tables but no replikv metadata: not a replikv store",
            ));
        }
        drop(txn);
        let write = self.begin_write(true)?;
        {
            let mut meta = write.open_table(META)?;
            meta.insert("format_version", FORMAT_VERSION)?;
            meta.insert("applied_lsn", 0)?;
            meta.insert("epoch", 1)?;
            meta.insert("lineage", random_id())?;
            meta.insert(STORE_ID, random_id())?;
            if follower {
                meta.insert(FOLLOWER, 1)?;
            }
            write.open_table(STATS)?;
            write.open_table(EPOCHS)?.insert(1, 1)?;
        }
        self.commit(write)?;
        Ok(Meta {
            applied_lsn: 0,
            epoch: 1,
            follower,
        })
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

    /// Rewrites every row of a format-1 file with its CRC, in one durable transaction (a
    /// crash leaves the file at format 1, and the next open migrates it again).
    fn migrate_from_1(&self) -> Result<()> {
        let txn = self.begin_write(true)?;
        let names: Vec<String> = txn
            .list_tables()?
            .map(|handle| handle.name().to_owned())
            .filter(|name| !name.starts_with("__"))
            .collect();
        let mut rows = 0u64;
        let mut sealed = Vec::new();
        for name in &names {
            let mut table = txn.open_table(data_table(name))?;
            let mut after: Option<Vec<u8>> = None;
            loop {
                let lower = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                let batch = table
                    .range::<&[u8]>((lower, Bound::Unbounded))?
                    .take(MIGRATION_BATCH)
                    .map(|item| {
                        let (key, value) = item?;
                        Ok((key.value().to_vec(), value.value().to_vec()))
                    })
                    .collect::<Result<Vec<Row>>>()?;
                let Some((last, _)) = batch.last() else {
                    break;
                };
                after = Some(last.clone());
                for (key, value) in &batch {
                    seal_into(&mut sealed, name, key, value);
                    table.insert(key.as_slice(), sealed.as_slice())?;
                }
                rows += batch.len() as u64;
            }
        }
        txn.open_table(META)?
            .insert("format_version", FORMAT_VERSION)?;
        self.commit(txn)?;
        tracing::info!(
            tables = names.len(),
            rows,
            "migrated the tables from format 1 to {FORMAT_VERSION}: every value now carries its CRC"
        );
        Ok(())
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

    /// Durably writes metadata values (by the one thread that writes redb).
    pub(crate) fn write_meta(&self, values: &[(&str, u64)]) -> Result<()> {
        let before = self.applied_lsn.load(Ordering::Acquire);
        let txn = self.begin_write(true)?;
        {
            let mut meta = txn.open_table(META)?;
            for (key, value) in values {
                meta.insert(*key, *value)?;
            }
        }
        self.commit(txn)?;
        let applied = match values.iter().find(|(key, _)| *key == "applied_lsn") {
            Some((_, lsn)) => {
                self.applied_lsn.store(*lsn, Ordering::Release);
                *lsn
            }
            None => before,
        };
        self.committed_durably(applied);
        Ok(())
    }

    /// Durably marks the store as a replica's, and `lineage` as its history if given.
    pub(crate) fn set_follower(&self, lineage: Option<u64>) -> Result<()> {
        match lineage {
            Some(lineage) => self.write_meta(&[(FOLLOWER, 1), ("lineage", lineage)]),
            None => self.write_meta(&[(FOLLOWER, 1)]),
        }
    }

    /// Durably marks the store as a replica's, or (a promotion) as a primary's.
    pub(crate) fn set_follower_flag(&self, follower: bool) -> Result<()> {
        self.write_meta(&[(FOLLOWER, u64::from(follower))])
    }

    /// Makes a replica's store a standalone one: not a follower, with a lineage of its own
    /// (its history forks from the primary's here, so it can never follow it again).
    pub(crate) fn detach(&self) -> Result<()> {
        self.write_meta(&[(FOLLOWER, 0), ("lineage", random_id())])
    }

    /// The epoch history as stored, `(epoch, start_lsn)` oldest first; empty in a store
    /// written before epochs had a history (all of it was epoch 1).
    pub(crate) fn epochs(&self) -> Result<Vec<(u64, u64)>> {
        let txn = self.db.begin_read()?;
        let Some(table) = missing_is_none(txn.open_table(EPOCHS))? else {
            return Ok(Vec::new());
        };
        table
            .iter()?
            .map(|item| {
                let (epoch, start) = item?;
                Ok((epoch.value(), start.value()))
            })
            .collect()
    }

    /// Durably replaces the epoch history, and records `seen` as the highest epoch seen.
    pub(crate) fn set_epochs(&self, pairs: &[(u64, u64)], seen: u64) -> Result<()> {
        let txn = self.begin_write(true)?;
        {
            let mut table = txn.open_table(EPOCHS)?;
            table.retain(|_, _| false)?;
            for &(epoch, start) in pairs {
                table.insert(epoch, start)?;
            }
            txn.open_table(META)?.insert("epoch", seen)?;
        }
        self.commit(txn)?;
        Ok(())
    }

    /// The store directory's own id (see [`STORE_ID`]).
    pub(crate) fn store_id(&self) -> Result<u64> {
        Ok(self.meta(STORE_ID)?.unwrap_or(0))
    }

    /// Durably gives these tables the id of the store directory they are installed into.
    pub(crate) fn set_store_id(&self, id: u64) -> Result<()> {
        self.write_meta(&[(STORE_ID, id)])
    }

    /// A metadata value, if set.
    pub(crate) fn meta(&self, key: &str) -> Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(META)?.get(key)?.map(|v| v.value()))
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

/// Scrub calls its progress callback after this many rows.
pub(crate) const SCRUB_PROGRESS_EVERY: u64 = 65_536;

/// One problem a scrub found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubDamage {
    /// The table it is in.
    pub table: String,
    /// The damaged row's encoded key; `None` for damage to the table as a whole (its stats
    /// disagree with its rows, or part of it cannot be read).
    pub key: Option<Vec<u8>>,
    /// What is wrong.
    pub reason: String,
}

/// What [`crate::Store::scrub`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubReport {
    /// The LSN of the state that was checked.
    pub lsn: u64,
    /// Per table: the rows checked.
    pub tables: BTreeMap<String, u64>,
    /// Every problem found, in table and key order.
    pub damaged: Vec<ScrubDamage>,
    /// `false` if the scrub was stopped before it checked every row.
    pub complete: bool,
}

impl ScrubReport {
    /// Whether every row was checked and nothing is damaged.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.complete && self.damaged.is_empty()
    }

    /// Rows checked in all tables.
    #[must_use]
    pub fn rows_checked(&self) -> u64 {
        self.tables.values().sum()
    }
}

/// A read transaction: every read through it sees one committed state.
#[derive(Clone)]
pub(crate) struct Snapshot(Arc<ReadView>);

/// A data table as opened in one read transaction.
type OpenedTable = Arc<ReadOnlyTable<&'static [u8], &'static [u8]>>;

/// A read transaction and the data tables point reads opened in it. A point read of a
/// table opened before skips the lookup of its root in redb's table tree (two page reads
/// and a decode of the table's definition, about a tenth of a random `get`); a table
/// does not change within one transaction, so neither does its handle.
pub(crate) struct ReadView {
    txn: ReadTransaction,
    /// Few tables, so a short list searched by name (tables that exist: a name that is
    /// not a table is looked up each time, so any number of them never grows the list).
    opened: RwLock<Vec<(Box<str>, OpenedTable)>>,
}

impl ReadView {
    fn new(txn: ReadTransaction) -> Self {
        Self {
            txn,
            opened: RwLock::new(Vec::new()),
        }
    }

    /// `name`'s data table in this transaction, opened once (`None`: no such table).
    fn data(&self, name: &str) -> Result<Option<OpenedTable>> {
        let find = |opened: &[(Box<str>, OpenedTable)]| {
            opened
                .iter()
                .find(|(n, _)| &**n == name)
                .map(|(_, table)| Arc::clone(table))
        };
        if let Some(table) = find(&self.opened.read().unwrap_or_else(PoisonError::into_inner)) {
            return Ok(Some(table));
        }
        let Some(table) = missing_is_none(self.txn.open_table(data_table(name)))? else {
            return Ok(None);
        };
        let mut opened = self.opened.write().unwrap_or_else(PoisonError::into_inner);
        // Another reader may have opened it meanwhile: either handle reads the same.
        Ok(Some(find(&opened).unwrap_or_else(|| {
            let table = Arc::new(table);
            opened.push((name.into(), Arc::clone(&table)));
            table
        })))
    }
}

/// A row read from redb.
pub(crate) type Row = (Vec<u8>, Vec<u8>);
type Guards<'a> = (
    redb::AccessGuard<'a, &'static [u8]>,
    redb::AccessGuard<'a, &'static [u8]>,
);

/// Checks a row read from redb and copies it out without its CRC.
fn owned_row(table: &str, item: Result<Guards<'_>, redb::StorageError>) -> Result<Row> {
    let (key, stored) = item?;
    let key = key.value();
    let value = unseal(table, key, stored.value()).map_err(|d| damaged(table, key, d))?;
    Ok((key.to_vec(), value.to_vec()))
}

/// Runs a read of `table`: redb panics on some damaged pages, and a read that met one is
/// [`StoreError::Corrupt`] naming the table, never a panic that reaches the caller.
fn reading<T>(table: &str, read: impl FnOnce() -> Result<T>) -> Result<T> {
    /// What was read, put in words only if it panicked (a read is a hot path).
    struct Reading<'a>(&'a str);
    impl std::fmt::Display for Reading<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "reading table '{}'", self.0.escape_debug())
        }
    }
    crate::error::corrupt_on_panic(Reading(table), read)
}

/// A row as the overlay holds it: `None` is a delete not yet applied to redb.
pub(crate) type PendingRow = (Vec<u8>, Option<Vec<u8>>);

impl Snapshot {
    /// Calls `f` with the bytes stored under `key` (value and CRC), unchecked.
    fn stored_with<R>(
        &self,
        table: &str,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        reading(table, || {
            let Some(table) = self.0.data(table)? else {
                return Ok(f(None));
            };
            let stored = table.get(key)?;
            Ok(f(stored.as_ref().map(redb::AccessGuard::value)))
        })
    }

    /// Calls `f` with the value stored under `key`, once its CRC checks (on the borrowed
    /// bytes: a read copies nothing).
    ///
    /// # Errors
    /// [`StoreError::DamagedRow`] if the stored bytes fail their check.
    pub(crate) fn get_with<R>(
        &self,
        table: &str,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        self.stored_with(table, key, |stored| match stored {
            None => Ok(f(None)),
            Some(stored) => match unseal(table, key, stored) {
                Ok(value) => Ok(f(Some(value))),
                Err(damage) => Err(damaged(table, key, damage)),
            },
        })?
    }

    /// Whether a row is stored under `key`. Its value is not read, so not checked either:
    /// whether a key exists does not depend on its value, and reading the value would cost
    /// a cache miss that an existence check otherwise never pays.
    pub(crate) fn contains(&self, table: &str, key: &[u8]) -> Result<bool> {
        self.stored_with(table, key, |stored| stored.is_some())
    }

    /// The checksum contribution of the row under `key`, if any (see [`stored_row_hash`]:
    /// a write over a damaged row does not fail).
    pub(crate) fn row_hash(&self, table: &str, key: &[u8]) -> Result<Option<u64>> {
        self.stored_with(table, key, |stored| {
            stored.map(|stored| stored_row_hash(key, stored))
        })
    }

    /// Up to `limit` rows between the bounds, in key order or reversed, with `pending`
    /// (rows not yet in redb, sorted in the same direction) taking precedence.
    pub(crate) fn scan(
        &self,
        table: &str,
        (lower, upper): (Bound<&[u8]>, Bound<&[u8]>),
        reverse: bool,
        limit: usize,
        pending: Vec<PendingRow>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if matches!((lower, upper), (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) if l > u)
        {
            return Ok(Vec::new());
        }
        let name = table;
        reading(name, || {
            let table = missing_is_none(self.0.txn.open_table(data_table(name)))?;
            let checked = |item| owned_row(name, item);
            let base: Box<dyn Iterator<Item = Result<Row>>> = match &table {
                None => Box::new(std::iter::empty()),
                Some(table) => {
                    let range = table.range::<&[u8]>((lower, upper))?;
                    if reverse {
                        Box::new(range.rev().map(checked))
                    } else {
                        Box::new(range.map(checked))
                    }
                }
            };
            merge(base, pending, reverse, limit)
        })
    }

    /// Calls `f` with each row between the bounds in key order (its value checked and
    /// borrowed, nothing copied) until `f` returns `false`.
    ///
    /// # Errors
    /// [`StoreError::DamagedRow`] for a row that fails its check; a storage failure.
    pub(crate) fn visit(
        &self,
        table: &str,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let mut damage = None;
        self.visit_sealed(
            table,
            bounds,
            &mut |key, stored| match unseal(table, key, stored) {
                Ok(value) => f(key, value),
                Err(found) => {
                    damage = Some(damaged(table, key, found));
                    false
                }
            },
        )?;
        damage.map_or(Ok(()), Err)
    }

    /// Like [`Snapshot::visit`], with each value as stored: its CRC still on it, unchecked
    /// (see [`checked_value`]).
    pub(crate) fn visit_sealed(
        &self,
        table: &str,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        if matches!(bounds, (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) if l > u)
        {
            return Ok(());
        }
        reading(table, || {
            let Some(table) = missing_is_none(self.0.txn.open_table(data_table(table)))? else {
                return Ok(());
            };
            for item in table.range::<&[u8]>(bounds)? {
                let (key, stored) = item?;
                if !f(key.value(), stored.value()) {
                    break;
                }
            }
            Ok(())
        })
    }
}

impl Snapshot {
    /// Reads every stored row, checks its CRC, and recomputes each table's row count and
    /// checksum against the stats recorded beside the rows. `progress` is called with the
    /// rows checked so far every [`SCRUB_PROGRESS_EVERY`] rows; returning `false` stops
    /// the scrub (the report then says it is incomplete).
    ///
    /// # Errors
    /// A storage failure outside the rows (the metadata or the table list).
    pub(crate) fn scrub(&self, progress: &mut dyn FnMut(u64) -> bool) -> Result<ScrubReport> {
        let lsn = self
            .0
            .txn
            .open_table(META)?
            .get("applied_lsn")?
            .map_or(0, |v| v.value());
        let mut recorded = BTreeMap::new();
        for item in self.0.txn.open_table(STATS)?.iter()? {
            let (name, value) = item?;
            let (rows, checksum) = value.value();
            recorded.insert(name.value().to_owned(), TableSum { rows, checksum });
        }
        let mut names: Vec<String> = self
            .0
            .txn
            .list_tables()?
            .map(|handle| handle.name().to_owned())
            .filter(|name| !name.starts_with("__"))
            .chain(recorded.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        let mut report = ScrubReport {
            lsn,
            tables: BTreeMap::new(),
            damaged: Vec::new(),
            complete: true,
        };
        let mut checked = 0u64;
        for name in names {
            let mut found = TableSum::default();
            let mut damaged_rows = 0u64;
            if let Some(table) = missing_is_none(self.0.txn.open_table(data_table(&name)))? {
                for item in table.iter()? {
                    let (key, stored) = match item {
                        Ok(row) => row,
                        Err(err) => {
                            report.damaged.push(ScrubDamage {
                                table: name.clone(),
                                key: None,
                                reason: format!("the rest of the table cannot be read: {err}"),
                            });
                            break;
                        }
                    };
                    let key = key.value();
                    found.rows += 1;
                    match unseal(&name, key, stored.value()) {
                        Ok(value) => {
                            found.checksum = found.checksum.wrapping_add(row_hash(key, value));
                        }
                        Err(damage) => {
                            damaged_rows += 1;
                            report.damaged.push(ScrubDamage {
                                table: name.clone(),
                                key: Some(key.to_vec()),
                                reason: damage.to_string(),
                            });
                        }
                    }
                    checked += 1;
                    if checked.is_multiple_of(SCRUB_PROGRESS_EVERY) && !progress(checked) {
                        report.complete = false;
                        return Ok(report);
                    }
                }
            }
            let expected = recorded.get(&name).copied().unwrap_or_default();
            // A damaged row's original hash is unknown: only the count can be compared.
            let agrees = if damaged_rows > 0 {
                found.rows == expected.rows
            } else {
                found == expected
            };
            if !agrees {
                report.damaged.push(ScrubDamage {
                    table: name.clone(),
                    key: None,
                    reason: format!(
                        "the table holds {} rows with checksum {:#018x}, its recorded stats say \
                         {} rows with checksum {:#018x}",
                        found.rows, found.checksum, expected.rows, expected.checksum
                    ),
                });
            }
            report.tables.insert(name, found.rows);
        }
        progress(checked);
        Ok(report)
    }
}

/// Merges rows from redb with pending rows (both sorted in the scan's direction); on equal
/// keys the pending row wins, and a pending delete hides the key.
fn merge(
    base: impl Iterator<Item = Result<Row>>,
    pending: Vec<PendingRow>,
    reverse: bool,
    limit: usize,
) -> Result<Vec<Row>> {
    let mut base = base.peekable();
    let mut pending = pending.into_iter().peekable();
    let mut out = Vec::new();
    while out.len() < limit {
        if let Some(Err(_)) = base.peek() {
            return Err(base
                .next()
                .expect("invariant: peeked")
                .expect_err("invariant: peeked an error"));
        }
        let order = match (base.peek(), pending.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(Ok((b, _))), Some((p, _))) => {
                let order = b.cmp(p);
                if reverse {
                    order.reverse()
                } else {
                    order
                }
            }
            (Some(Err(_)), _) => unreachable!("errors are returned above"),
        };
        if order.is_lt() {
            out.push(base.next().expect("invariant: peeked")?);
            continue;
        }
        if order.is_eq() {
            base.next();
        }
        let (key, value) = pending.next().expect("invariant: peeked");
        if let Some(value) = value {
            out.push((key, value));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// The merge equals applying the pending rows to a `BTreeMap` of the base rows.
        #[test]
        fn merge_matches_a_btreemap_model(
            base in proptest::collection::btree_map(0u8..40, any::<u8>(), 0..30),
            pending in proptest::collection::btree_map(0u8..40, proptest::option::of(any::<u8>()), 0..30),
            reverse: bool,
            limit in 0usize..50,
        ) {
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = base.iter().map(|(k, v)| (vec![*k], vec![*v])).collect();
            for (k, v) in &pending {
                match v {
                    Some(v) => { model.insert(vec![*k], vec![*v]); }
                    None => { model.remove(&vec![*k]); }
                }
            }
            let mut expected: Vec<_> = model.into_iter().collect();
            let mut base_rows: Vec<_> = base.iter().map(|(k, v)| Ok((vec![*k], vec![*v]))).collect();
            let mut pending_rows: Vec<_> = pending.iter().map(|(k, v)| (vec![*k], v.map(|v| vec![v]))).collect();
            if reverse {
                expected.reverse();
                base_rows.reverse();
                pending_rows.reverse();
            }
            expected.truncate(limit);
            let merged = merge(base_rows.into_iter(), pending_rows, reverse, limit).unwrap();
            prop_assert_eq!(merged, expected);
        }
    }
}
