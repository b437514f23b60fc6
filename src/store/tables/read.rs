//! Reads: a read transaction of the tables, and point reads, scans and walks in it, merged
//! with what the overlay holds.

use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock};

use redb::{ReadOnlyTable, ReadTransaction};

use super::{damaged, data_table, missing_is_none, stored_row_hash, STATS};
use crate::error::{Result, StoreError};
use crate::store::stored::unseal;

/// A read transaction: every read through it sees one committed state.
#[derive(Clone)]
pub(crate) struct Snapshot(pub(super) Arc<ReadView>);

/// A data table as opened in one read transaction.
type OpenedTable = Arc<ReadOnlyTable<&'static [u8], &'static [u8]>>;

/// `name`'s data table in `txn` (`None`: no such table). redb finds a table by its name
/// in its table of tables: a damaged byte there makes it find none, and the table would
/// read as empty, every key of it "missing". A table its stats say holds rows is damaged
/// then, not empty.
fn open_data(
    txn: &ReadTransaction,
    name: &str,
) -> Result<Option<ReadOnlyTable<&'static [u8], &'static [u8]>>> {
    if let Some(table) = missing_is_none(txn.open_table(data_table(name)))? {
        return Ok(Some(table));
    }
    let rows = match missing_is_none(txn.open_table(STATS))? {
        Some(stats) => stats.get(name)?.map_or(0, |sums| sums.value().0),
        None => 0,
    };
    if rows > 0 {
        return Err(StoreError::Corrupt {
            reason: format!(
                "table '{}' holds {rows} row(s) by its stats, but the tables file has no tree \
                 for it: tables.redb is damaged",
                name.escape_debug()
            ),
        }
        .into());
    }
    Ok(None)
}

/// A read transaction and the data tables point reads opened in it. A point read of a
/// table opened before skips the lookup of its root in redb's table tree (two page reads
/// and a decode of the table's definition, about a tenth of a random `get`); a table
/// does not change within one transaction, so neither does its handle.
pub(crate) struct ReadView {
    pub(super) txn: ReadTransaction,
    /// Few tables, so a short list searched by name (tables that exist: a name that is
    /// not a table is looked up each time, so any number of them never grows the list).
    opened: RwLock<Vec<(Box<str>, OpenedTable)>>,
}

impl ReadView {
    pub(super) fn new(txn: ReadTransaction) -> Self {
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
        let Some(table) = open_data(&self.txn, name)? else {
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
/// [`crate::error::StoreError::Corrupt`] naming the table, never a panic that reaches the caller.
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
    /// [`crate::error::StoreError::DamagedRow`] if the stored bytes fail their check.
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
            let table = open_data(&self.0.txn, name)?;
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
    /// [`crate::error::StoreError::DamagedRow`] for a row that fails its check; a storage failure.
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
    /// (see [`super::checked_value`]).
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
            let Some(table) = open_data(&self.0.txn, table)? else {
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
    use crate::codec::Op;
    use crate::store::tables::Tables;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_table_whose_stats_count_rows_but_whose_tree_is_gone_is_damaged_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tables.redb");
        let (tables, _) = Tables::open(&path, false, 1 << 20, Arc::default(), false, None).unwrap();
        let put = |table: &str| Op {
            table: table.to_owned(),
            key: b"k".to_vec(),
            value: Some(vec![0x01]),
        };
        tables.apply([(1, [put("ints")].as_slice())], true).unwrap();
        // What a damaged byte in redb's table of tables shows: the tree is not found, and
        // the stats beside it still count its row.
        let txn = tables.db.begin_write().unwrap();
        txn.delete_table(data_table("ints")).unwrap();
        tables.commit(txn).unwrap();
        let snapshot = tables.snapshot().unwrap();
        let found = snapshot.get_with("ints", b"k", |v| v.is_some());
        assert!(
            found
                .as_ref()
                .is_err_and(|e| e.to_string().contains("holds 1 row(s)")),
            "{found:?}"
        );
        let everything = (Bound::Unbounded, Bound::Unbounded);
        assert!(snapshot
            .scan("ints", everything, false, 10, Vec::new())
            .is_err());
        assert!(snapshot
            .visit("ints", everything, &mut |_, _| true)
            .is_err());
        // A table that never was is empty, as before.
        assert!(!snapshot.get_with("never", b"k", |v| v.is_some()).unwrap());
    }

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
