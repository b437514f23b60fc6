//! Committed writes that are durable in the log but not yet in redb.
//!
//! Applying every commit to redb costs a redb transaction (~12 us of CPU plus dirty pages
//! that the next log fdatasync drags along) on the path of every durable write. Instead the
//! commit leader applies a batch here, in memory, and moves the overlay into redb in one
//! transaction once it holds enough rows or a checkpoint is due. Readers look here first.
//!
//! Invariants: only the commit leader (one thread at a time) changes the overlay or writes
//! redb; a reader takes its redb snapshot while holding the overlay's read lock, so the
//! pair it reads is one state (a flush commits redb before it clears the overlay).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::commit::Pending;
use super::sum_history::SumHistory;
use super::tables::{row_hash, PendingRow, Snapshot, TableSum, Tables};
use crate::codec::Op;
use crate::error::Result;

/// Where a key's current value is, as [`Overlay::lookup`] found it.
pub(crate) enum Found {
    /// Written but not yet in redb (`None`: deleted).
    Pending(Option<Vec<u8>>),
    /// In redb, as of this snapshot.
    In(Snapshot),
}

/// The overlay is moved into redb once it holds this many rows...
const MAX_ROWS: usize = 4096;
/// ...or this many bytes of keys and values.
const MAX_BYTES: usize = 8 << 20;

#[derive(Default)]
struct State {
    rows: HashMap<String, BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    /// Row counts and checksums of the tables including the overlay.
    sums: BTreeMap<String, TableSum>,
    /// The last LSN applied (to the overlay or to redb).
    lsn: u64,
    row_count: usize,
    bytes: usize,
    /// `(lsn, sums)` after each batch, for `Primary::verify`.
    history: SumHistory,
}

pub(crate) struct Overlay {
    state: RwLock<State>,
}

impl Overlay {
    /// An empty overlay over tables whose state is `(lsn, sums)`.
    pub(crate) fn new(lsn: u64, sums: BTreeMap<String, TableSum>) -> Self {
        let mut history = SumHistory::default();
        history.record(lsn, &sums);
        Self {
            state: RwLock::new(State {
                sums,
                lsn,
                history,
                ..State::default()
            }),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a batch of `ops` operations should bypass the overlay (a bulk load).
    pub(crate) fn is_bulk(ops: usize) -> bool {
        ops >= MAX_ROWS
    }

    /// Whether the overlay should be moved into redb now.
    pub(crate) fn is_full(&self) -> bool {
        let state = self.read();
        state.row_count >= MAX_ROWS || state.bytes >= MAX_BYTES
    }

    /// Applies whole entries, in order, updating the checksums (leader only).
    pub(crate) fn apply(&self, tables: &Tables, entries: &[Pending]) -> Result<()> {
        let snapshot = tables.snapshot()?;
        let mut guard = self.write();
        let state = &mut *guard;
        for entry in entries {
            for op in &entry.ops {
                let rows = state.rows.entry(op.table.clone()).or_default();
                let old_hash = match rows.get(&op.key) {
                    Some(pending) => pending.as_ref().map(|old| row_hash(&op.key, old)),
                    None => snapshot.row_hash(&op.table, &op.key)?,
                };
                let sum = state.sums.entry(op.table.clone()).or_default();
                if let Some(old_hash) = old_hash {
                    sum.rows -= 1;
                    sum.checksum = sum.checksum.wrapping_sub(old_hash);
                }
                if let Some(value) = &op.value {
                    sum.rows += 1;
                    sum.checksum = sum.checksum.wrapping_add(row_hash(&op.key, value));
                }
                state.bytes += op.key.len() + op.value.as_ref().map_or(0, Vec::len);
                if rows.insert(op.key.clone(), op.value.clone()).is_none() {
                    state.row_count += 1;
                }
            }
            state.lsn = entry.lsn;
        }
        state.history.record(state.lsn, &state.sums);
        Ok(())
    }

    /// Moves the overlay into redb in one transaction (`durable` makes it a checkpoint).
    pub(crate) fn flush(&self, tables: &Tables, durable: bool) -> Result<()> {
        let (lsn, ops) = {
            let state = self.read();
            let ops: Vec<Op> = state
                .rows
                .iter()
                .flat_map(|(table, rows)| {
                    rows.iter().map(|(key, value)| Op {
                        table: table.clone(),
                        key: key.clone(),
                        value: value.clone(),
                    })
                })
                .collect();
            (state.lsn, ops)
        };
        if ops.is_empty() {
            return if durable { tables.checkpoint() } else { Ok(()) };
        }
        // Only the leader changes the overlay, so `ops` is still all of it: redb first,
        // then the overlay is cleared (readers never see a row in neither place).
        tables.apply([(lsn, ops.as_slice())], durable)?;
        let mut state = self.write();
        state.rows.clear();
        state.row_count = 0;
        state.bytes = 0;
        Ok(())
    }

    /// Takes the sums and LSN from redb after a batch was applied there directly.
    pub(crate) fn reload(&self, tables: &Tables) -> Result<()> {
        let (lsn, sums) = tables.sums()?;
        let mut state = self.write();
        debug_assert!(
            state.rows.is_empty(),
            "the overlay is flushed before a direct apply"
        );
        state.lsn = lsn;
        state.history.record(lsn, &sums);
        state.sums = sums;
        Ok(())
    }

    /// Where the current value of `key` is: a copy of a pending row, or the redb snapshot
    /// to read it from. Either is used after the overlay's lock is released.
    pub(crate) fn lookup(&self, tables: &Tables, table: &str, key: &[u8]) -> Result<Found> {
        self.lookup_at(tables, table, key).map(|(found, _)| found)
    }

    /// Like [`Overlay::lookup`], with the LSN of the state it reads (taken under the same
    /// lock, so the value is exactly that state's).
    pub(crate) fn lookup_at(
        &self,
        tables: &Tables,
        table: &str,
        key: &[u8],
    ) -> Result<(Found, u64)> {
        let state = self.read();
        if let Some(pending) = state.rows.get(table).and_then(|rows| rows.get(key)) {
            return Ok((Found::Pending(pending.clone()), state.lsn));
        }
        // Taken under the lock: a flush commits redb before it clears the overlay.
        Ok((Found::In(tables.snapshot()?), state.lsn))
    }

    /// Up to `limit` current rows between the bounds, in order or reversed.
    pub(crate) fn scan(
        &self,
        tables: &Tables,
        table: &str,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (snapshot, pending): (Snapshot, Vec<PendingRow>) = {
            let state = self.read();
            let pending = match state.rows.get(table) {
                Some(_) if !in_order(bounds) => Vec::new(),
                Some(rows) => {
                    // The whole range: any pending delete may hide a row redb would return.
                    // The overlay is small (bounded by MAX_ROWS), so this copy is too.
                    let range = rows.range::<[u8], _>(bounds);
                    let clone = |(k, v): (&Vec<u8>, &Option<Vec<u8>>)| (k.clone(), v.clone());
                    if reverse {
                        range.rev().map(clone).collect()
                    } else {
                        range.map(clone).collect()
                    }
                }
                None => Vec::new(),
            };
            (tables.snapshot()?, pending)
        };
        snapshot.scan(table, bounds, reverse, limit, pending)
    }

    /// The sums recorded after each batch at `since_lsn` or later, oldest first.
    pub(crate) fn history(&self, since_lsn: u64) -> Vec<super::Checksum> {
        self.read().history.since(since_lsn)
    }

    /// The applied LSN and every table's sums, read atomically.
    pub(crate) fn sums(&self) -> (u64, BTreeMap<String, TableSum>) {
        let state = self.read();
        (state.lsn, state.sums.clone())
    }
}

/// Whether the bounds describe a non-empty-able range (`BTreeMap::range` panics otherwise).
fn in_order((lower, upper): (Bound<&[u8]>, Bound<&[u8]>)) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l <= u,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) => l < u,
        _ => true,
    }
}
