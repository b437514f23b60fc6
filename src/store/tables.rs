//! The materialized state in redb: one redb table per user table, plus `__meta` (applied LSN,
//! epoch, format) and `__stats` (per table: row count and order-independent checksum).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};

use crate::codec::Op;
use crate::error::{Result, StoreError};

const META: TableDefinition<&str, u64> = TableDefinition::new("__meta");
const STATS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("__stats");
const FORMAT_VERSION: u64 = 1;

fn data_table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// The contribution of one row to its table's checksum. Checksums are wrapping sums of
/// these, so they are independent of order and updated in O(1) per write.
fn row_hash(key: &[u8], value: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(value, xxhash_rust::xxh3::xxh3_64(key))
}

/// Row count and checksum of one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSum {
    /// Number of rows.
    pub rows: u64,
    /// Wrapping sum of the row hashes.
    pub checksum: u64,
}

/// What the redb file says about itself on open.
pub(crate) struct Meta {
    pub applied_lsn: u64,
    pub epoch: u64,
}

pub(crate) struct Tables {
    db: Database,
}

fn missing_is_none<T>(result: Result<T, TableError>) -> Result<Option<T>> {
    match result {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(other) => Err(other.into()),
    }
}

impl Tables {
    /// Opens or creates the redb file and reads its metadata.
    pub(crate) fn open(path: &Path) -> Result<(Self, Meta)> {
        let db = Database::create(path)?;
        let tables = Self { db };
        let meta = tables.init_meta()?;
        Ok((tables, meta))
    }

    fn init_meta(&self) -> Result<Meta> {
        let txn = self.db.begin_read()?;
        if let Some(meta) = missing_is_none(txn.open_table(META))? {
            let read = |key: &str| -> Result<Option<u64>> { Ok(meta.get(key)?.map(|v| v.value())) };
            return match (
                read("format_version")?,
                read("applied_lsn")?,
                read("epoch")?,
            ) {
                (Some(FORMAT_VERSION), Some(applied_lsn), Some(epoch)) => {
                    Ok(Meta { applied_lsn, epoch })
                }
                (Some(other), ..) if other != FORMAT_VERSION => Err(StoreError::Corrupt {
                    reason: format!("unsupported format version {other}"),
                }
                .into()),
                _ => Err(StoreError::Corrupt {
                    reason: "the metadata table is incomplete".to_owned(),
                }
                .into()),
            };
        }
        if txn.list_tables()?.next().is_some() {
            return Err(StoreError::Corrupt {
                reason: "the redb file holds tables but no replikv metadata: not a replikv store"
                    .to_owned(),
            }
            .into());
        }
        drop(txn);
        let mut write = self.db.begin_write()?;
        write.set_durability(Durability::Immediate)?;
        {
            let mut meta = write.open_table(META)?;
            meta.insert("format_version", FORMAT_VERSION)?;
            meta.insert("applied_lsn", 0)?;
            meta.insert("epoch", 1)?;
            write.open_table(STATS)?;
        }
        write.commit()?;
        Ok(Meta {
            applied_lsn: 0,
            epoch: 1,
        })
    }

    /// Applies whole entries in LSN order in one redb transaction that also records the last
    /// LSN as `applied_lsn`. `durable` makes it a checkpoint (an fsync'ed commit).
    pub(crate) fn apply<'a>(
        &self,
        entries: impl IntoIterator<Item = (u64, &'a [Op])>,
        durable: bool,
    ) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        {
            let mut stats_table = txn.open_table(STATS)?;
            let mut stats: HashMap<&str, TableSum> = HashMap::new();
            let mut open = HashMap::new();
            let mut last_lsn = None;
            for (lsn, ops) in entries {
                last_lsn = Some(lsn);
                for op in ops {
                    let name = op.table.as_str();
                    if !open.contains_key(name) {
                        open.insert(name, txn.open_table(data_table(name))?);
                    }
                    let table = open.get_mut(name).expect("invariant: inserted above");
                    if !stats.contains_key(name) {
                        let (rows, checksum) = stats_table.get(name)?.map_or((0, 0), |v| v.value());
                        stats.insert(name, TableSum { rows, checksum });
                    }
                    let sum = stats.get_mut(name).expect("invariant: inserted above");
                    let old = match &op.value {
                        Some(value) => {
                            sum.rows += 1;
                            sum.checksum = sum.checksum.wrapping_add(row_hash(&op.key, value));
                            table.insert(op.key.as_slice(), value.as_slice())?
                        }
                        None => table.remove(op.key.as_slice())?,
                    };
                    if let Some(old) = old {
                        sum.rows -= 1;
                        sum.checksum = sum.checksum.wrapping_sub(row_hash(&op.key, old.value()));
                    }
                }
            }
            for (name, sum) in stats {
                stats_table.insert(name, (sum.rows, sum.checksum))?;
            }
            if let Some(lsn) = last_lsn {
                txn.open_table(META)?.insert("applied_lsn", lsn)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// An fsync'ed commit that makes every earlier non-durable commit durable.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }

    /// Calls `f` with the value stored under `key`, read in one read transaction.
    pub(crate) fn get_with<R>(
        &self,
        table: &str,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        let txn = self.db.begin_read()?;
        let Some(table) = missing_is_none(txn.open_table(data_table(table)))? else {
            return Ok(f(None));
        };
        let value = table.get(key)?;
        Ok(f(value.as_ref().map(redb::AccessGuard::value)))
    }

    /// Up to `limit` rows between the bounds, in key order or reversed.
    pub(crate) fn scan(
        &self,
        table: &str,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let txn = self.db.begin_read()?;
        let Some(table) = missing_is_none(txn.open_table(data_table(table)))? else {
            return Ok(Vec::new());
        };
        if matches!((lower, upper), (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) if l > u)
        {
            return Ok(Vec::new());
        }
        let range = table.range::<&[u8]>((lower, upper))?;
        let ordered: Box<dyn Iterator<Item = _>> = if reverse {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        ordered
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                Ok((k.value().to_vec(), v.value().to_vec()))
            })
            .collect()
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

    /// One table's row count and checksum (zero for a table never written).
    pub(crate) fn sum(&self, table: &str) -> Result<TableSum> {
        let txn = self.db.begin_read()?;
        let (rows, checksum) = txn
            .open_table(STATS)?
            .get(table)?
            .map_or((0, 0), |v| v.value());
        Ok(TableSum { rows, checksum })
    }
}
