//! Applying ops to the tables inside one redb write transaction: whole entries (the
//! overlay's moves, a bulk batch) or chunks as a streamed bulk load encodes them. Each
//! table's row count and checksum are updated in O(1) per op, from the row it replaces.

use redb::{ReadableTable, Table, WriteTransaction};

use super::stored::seal_into;
use super::tables::{data_table, row_hash, stored_row_hash, TableSum, META, STATS};
use crate::codec::{Op, OpRef};
use crate::error::Result;

/// One table opened in the transaction, with its sums so far.
struct Open<'t> {
    name: String,
    table: Table<'t, &'static [u8], &'static [u8]>,
    sum: TableSum,
}

/// Applies ops in order inside `txn`; [`Applier::finish`] records the sums and the LSN.
pub(super) struct Applier<'t> {
    txn: &'t WriteTransaction,
    stats: Table<'t, &'static str, (u64, u64)>,
    /// The tables written so far: an entry writes few (a bulk load one), so a short list
    /// searched from the last one used beats hashing every op's table name.
    open: Vec<Open<'t>>,
    sealed: Vec<u8>,
    last_lsn: Option<u64>,
}

impl<'t> Applier<'t> {
    pub(super) fn new(txn: &'t WriteTransaction) -> Result<Self> {
        Ok(Self {
            txn,
            stats: txn.open_table(STATS)?,
            open: Vec::new(),
            sealed: Vec::new(),
            last_lsn: None,
        })
    }

    /// The open table `name`, opened (with its sums read) on first use.
    fn table(&mut self, name: &str) -> Result<&mut Open<'t>> {
        let index = if let Some(index) = self.open.iter().rposition(|open| open.name == name) {
            index
        } else {
            let (rows, checksum) = self.stats.get(name)?.map_or((0, 0), |v| v.value());
            self.open.push(Open {
                name: name.to_owned(),
                table: self.txn.open_table(data_table(name))?,
                sum: TableSum { rows, checksum },
            });
            self.open.len() - 1
        };
        Ok(&mut self.open[index])
    }

    /// Applies the ops of the entry at `lsn`, in order.
    pub(super) fn entry(&mut self, lsn: u64, ops: &[Op]) -> Result<()> {
        self.ops(ops.iter().map(Op::borrowed))?;
        self.last_lsn = Some(lsn);
        Ok(())
    }

    /// Applies `ops`, in order (part of an entry whose LSN comes later).
    pub(super) fn ops<'o>(&mut self, ops: impl IntoIterator<Item = OpRef<'o>>) -> Result<()> {
        let mut sealed = std::mem::take(&mut self.sealed);
        for op in ops {
            let open = self.table(op.table)?;
            let old = match op.value {
                Some(value) => {
                    open.sum.rows += 1;
                    open.sum.checksum = open.sum.checksum.wrapping_add(row_hash(op.key, value));
                    seal_into(&mut sealed, op.table, op.key, value);
                    open.table.insert(op.key, sealed.as_slice())?
                }
                None => open.table.remove(op.key)?,
            };
            if let Some(old) = old {
                open.sum.rows -= 1;
                open.sum.checksum = open
                    .sum
                    .checksum
                    .wrapping_sub(stored_row_hash(op.key, old.value()));
            }
        }
        self.sealed = sealed;
        Ok(())
    }

    /// Records the sums of the tables written and, if an entry was applied, the last
    /// LSN as applied; returns that LSN. The caller commits the transaction.
    pub(super) fn finish(mut self) -> Result<Option<u64>> {
        for open in &self.open {
            self.stats
                .insert(open.name.as_str(), (open.sum.rows, open.sum.checksum))?;
        }
        if let Some(lsn) = self.last_lsn {
            self.txn.open_table(META)?.insert("applied_lsn", lsn)?;
        }
        Ok(self.last_lsn)
    }

    /// Sets the LSN that [`Applier::finish`] records (the entry whose chunks were applied).
    pub(super) fn applied(&mut self, lsn: u64) {
        self.last_lsn = Some(lsn);
    }
}
