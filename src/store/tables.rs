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
pub(crate) fn row_hash(key: &[u8], value: &[u8]) -> u64 {
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

/// A random identity for a new store's history; replicas inherit their primary's.
fn new_lineage() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("invariant: the OS random source is available");
    u64::from_le_bytes(bytes)
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
            meta.insert("lineage", new_lineage())?;
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
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut meta = txn.open_table(META)?;
            for (key, value) in values {
                meta.insert(*key, *value)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A metadata value, if set.
    pub(crate) fn meta(&self, key: &str) -> Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(META)?.get(key)?.map(|v| v.value()))
    }

    /// An fsync'ed commit that makes every earlier non-durable commit durable.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }

    /// A consistent read view of the tables as last committed.
    pub(crate) fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot(self.db.begin_read()?))
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

/// A read transaction: every read through it sees one committed state.
pub(crate) struct Snapshot(redb::ReadTransaction);

/// A row read from redb.
pub(crate) type Row = (Vec<u8>, Vec<u8>);
type Guards<'a> = (
    redb::AccessGuard<'a, &'static [u8]>,
    redb::AccessGuard<'a, &'static [u8]>,
);

fn owned_row(item: Result<Guards<'_>, redb::StorageError>) -> Result<Row> {
    let (k, v) = item?;
    Ok((k.value().to_vec(), v.value().to_vec()))
}

/// A row as the overlay holds it: `None` is a delete not yet applied to redb.
pub(crate) type PendingRow = (Vec<u8>, Option<Vec<u8>>);

impl Snapshot {
    /// Calls `f` with the value stored under `key`.
    pub(crate) fn get_with<R>(
        &self,
        table: &str,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        let Some(table) = missing_is_none(self.0.open_table(data_table(table)))? else {
            return Ok(f(None));
        };
        let value = table.get(key)?;
        Ok(f(value.as_ref().map(redb::AccessGuard::value)))
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
        let table = missing_is_none(self.0.open_table(data_table(table)))?;
        let base: Box<dyn Iterator<Item = Result<Row>>> = match &table {
            None => Box::new(std::iter::empty()),
            Some(table) => {
                let range = table.range::<&[u8]>((lower, upper))?;
                if reverse {
                    Box::new(range.rev().map(owned_row))
                } else {
                    Box::new(range.map(owned_row))
                }
            }
        };
        merge(base, pending, reverse, limit)
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
