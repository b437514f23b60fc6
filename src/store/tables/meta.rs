//! The tables' metadata in `__meta` and `__epochs`: what a store says about itself on
//! open (applied LSN, epoch, format, lineage, its id, whether a replica owns it), and the
//! migration of an older format.

use std::ops::Bound;
use std::sync::atomic::Ordering;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use super::{data_table, missing_is_none, Meta, Row, Tables, META, STATS};
use crate::error::{Result, StoreError};
use crate::store::stored::seal_into;

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

impl Tables {
    pub(super) fn init_meta(&self, follower: bool, store_id: Option<u64>) -> Result<Meta> {
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
                self.write_meta(&[(STORE_ID, store_id.unwrap_or_else(random_id))])?;
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
            meta.insert(STORE_ID, store_id.unwrap_or_else(random_id))?;
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
            target: super::LOG_TARGET,
            tables = names.len(),
            rows,
            "migrated the tables from format 1 to {FORMAT_VERSION}: every value now carries its CRC"
        );
        Ok(())
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

    /// A metadata value, if set.
    pub(crate) fn meta(&self, key: &str) -> Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(META)?.get(key)?.map(|v| v.value()))
    }
}
