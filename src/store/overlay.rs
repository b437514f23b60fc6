//! Committed writes that are durable in the log but not yet in redb.
//!
//! Applying every commit to redb costs a redb transaction (~12 us of CPU plus dirty pages
//! that the next log fdatasync drags along) on the path of every durable write. Instead the
//! commit leader applies a batch here, in memory, and the checkpointer thread
//! ([`super::checkpoint`]) moves the overlay into redb in the background once it holds
//! enough rows or a checkpoint is due. Readers look here first.
//!
//! The overlay has two layers: `active`, which the leader adds to, and `frozen`, a copy of
//! an earlier `active` being written to redb. A move freezes `active`, commits its rows to
//! redb with no lock held (the leader keeps adding to the new `active` meanwhile), then drops
//! `frozen`. A reader looks in `active`, then `frozen`, then the redb snapshot it takes
//! while holding the overlay's read lock, so the three it reads are one state: redb commits
//! before `frozen` is dropped, and `frozen` holds nothing `active` does not override.
//!
//! Invariants: only the commit leader adds to `active`; only the holder of `mover` writes
//! user rows to redb (the checkpointer, a bulk leader, or exclusive work such as a snapshot).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::commit::Pending;
use super::sum_history::SumHistory;
use super::tables::{row_hash, PendingRow, Snapshot, Streamed, TableSum, Tables};
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
/// The leader waits (backpressure) only when `active` holds this many rows or bytes while
/// the checkpointer is still writing an earlier layer: it is then far behind the writers.
const MAX_BEHIND_ROWS: usize = 64 * MAX_ROWS;
const MAX_BEHIND_BYTES: usize = 16 * MAX_BYTES;

/// One table's rows by key; `None` is a delete.
type TableRows = BTreeMap<Vec<u8>, Option<Vec<u8>>>;
/// Rows by table.
type Rows = HashMap<String, TableRows>;

/// A layer being written to redb: its rows, and the LSN of the last entry they hold.
struct Frozen {
    rows: Rows,
    lsn: u64,
}

impl Frozen {
    fn ops(&self) -> Vec<Op> {
        self.rows
            .iter()
            .flat_map(|(table, rows)| {
                rows.iter().map(|(key, value)| Op {
                    table: table.clone(),
                    key: key.clone(),
                    value: value.clone(),
                })
            })
            .collect()
    }

    fn get(&self, table: &str, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.rows.get(table).and_then(|rows| rows.get(key))
    }
}

#[derive(Default)]
struct State {
    active: Rows,
    frozen: Option<Arc<Frozen>>,
    /// Row counts and checksums of the tables including the overlay.
    sums: BTreeMap<String, TableSum>,
    /// The last LSN applied (to the overlay or to redb).
    lsn: u64,
    /// Rows and bytes of keys and values in `active`.
    row_count: usize,
    bytes: usize,
    /// `(lsn, sums)` after each batch, for `Primary::verify`.
    history: SumHistory,
}

impl State {
    fn is_far_behind(&self) -> bool {
        self.row_count >= MAX_BEHIND_ROWS || self.bytes >= MAX_BEHIND_BYTES
    }
}

pub(crate) struct Overlay {
    state: RwLock<State>,
    /// Held by whoever writes user rows to redb, for the whole move.
    mover: Mutex<()>,
    /// Signalled when `active` is frozen (it is empty then), for a leader held back by
    /// backpressure; `room_lock` orders the signal after the check.
    room_lock: Mutex<()>,
    room: Condvar,
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
            mover: Mutex::new(()),
            room_lock: Mutex::new(()),
            room: Condvar::new(),
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

    /// The right to move rows into `tables`; a checkpoint's writeback in progress hurries
    /// while the caller waits for it.
    fn mover(&self, tables: &Tables) -> MutexGuard<'_, ()> {
        let _waiting = tables.pace().waiting();
        self.mover
            .lock()
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

    /// Waits while `active` is far behind (see [`MAX_BEHIND_ROWS`]) and `stopped()` is
    /// false: the only time a writer waits for the checkpointer.
    pub(crate) fn wait_for_room(&self, stopped: &dyn Fn() -> bool) {
        let mut lock = self
            .room_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while self.read().is_far_behind() && !stopped() {
            // A bounded wait: `stopped` has no signal of its own.
            lock = self
                .room
                .wait_timeout(lock, std::time::Duration::from_millis(50))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Applies whole entries, in order, to `active`, updating the checksums (leader only).
    pub(crate) fn apply(&self, tables: &Tables, entries: &[Pending]) -> Result<()> {
        let mut guard = self.write();
        let state = &mut *guard;
        // Taken under the lock, as a reader's: `frozen` and redb are then one state.
        let mut snapshot = None;
        for entry in entries {
            for op in &entry.ops {
                let rows = state.active.entry(op.table.clone()).or_default();
                let pending = rows.get(&op.key).or_else(|| {
                    state
                        .frozen
                        .as_ref()
                        .and_then(|frozen| frozen.get(&op.table, &op.key))
                });
                let old_hash = if let Some(pending) = pending {
                    pending.as_ref().map(|old| row_hash(&op.key, old))
                } else {
                    if snapshot.is_none() {
                        snapshot = Some(tables.snapshot()?);
                    }
                    snapshot
                        .as_ref()
                        .expect("invariant: taken above")
                        .row_hash(&op.table, &op.key)?
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

    /// Moves everything in the overlay into redb in one transaction (`durable` makes it a
    /// checkpoint) and returns an LSN that redb then holds every entry up to. Writers keep
    /// adding to the overlay meanwhile. redb panics on some damaged pages: such a move is
    /// [`crate::error::StoreError::Corrupt`], whoever asked for it (a checkpoint, a close,
    /// a compaction).
    pub(crate) fn move_to_tables(&self, tables: &Tables, durable: bool) -> Result<u64> {
        crate::error::corrupt_on_panic("moving writes into the tables", || {
            let _mover = self.mover(tables);
            self.move_locked(tables, durable)
        })
    }

    fn move_locked(&self, tables: &Tables, durable: bool) -> Result<u64> {
        let (lsn, frozen) = {
            let mut state = self.write();
            let lsn = state.lsn;
            let left = state.frozen.take();
            let frozen = if left.is_none() && state.active.is_empty() {
                None
            } else {
                // A move that failed left its layer frozen: it is written again (the same
                // rows give the same sums), under what is active now.
                let active = std::mem::take(&mut state.active);
                let rows = match left {
                    None => active,
                    Some(left) => {
                        let mut rows = left.rows.clone();
                        for (table, active) in active {
                            rows.entry(table).or_default().extend(active);
                        }
                        rows
                    }
                };
                let frozen = Arc::new(Frozen {
                    rows,
                    lsn: state.lsn,
                });
                state.frozen = Some(Arc::clone(&frozen));
                state.row_count = 0;
                state.bytes = 0;
                Some(frozen)
            };
            (lsn, frozen)
        };
        let Some(frozen) = frozen else {
            if durable {
                tables.checkpoint()?;
            }
            return Ok(lsn);
        };
        drop(
            self.room_lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.room.notify_all();
        // redb first, then `frozen` is dropped: readers never see a row in neither place.
        // On failure `frozen` stays (readers still see it) and the store closes itself.
        tables.apply([(frozen.lsn, frozen.ops().as_slice())], durable)?;
        self.write().frozen = None;
        Ok(lsn)
    }

    /// Applies a bulk batch straight to redb (after what the overlay holds), then takes the
    /// sums and LSN from redb (leader only).
    pub(crate) fn apply_bulk(&self, tables: &Tables, entries: &[Pending]) -> Result<()> {
        let _mover = self.mover(tables);
        self.move_locked(tables, false)?;
        tables.apply(entries.iter().map(|e| (e.lsn, e.ops.as_slice())), false)?;
        self.took_bulk(tables)
    }

    /// Applies a streamed bulk load's chunks straight to redb as they come (after what the
    /// overlay holds), see [`Tables::apply_streamed`]; once committed, takes the sums and
    /// LSN from redb. Moves are held off meanwhile: the load holds the writer lock, so
    /// nothing is added to the overlay either.
    pub(crate) fn apply_streamed(
        &self,
        tables: &Tables,
        chunks: &std::sync::mpsc::Receiver<Streamed>,
        abort: &std::sync::atomic::AtomicBool,
    ) -> Result<Option<u64>> {
        let _mover = self.mover(tables);
        self.move_locked(tables, false)?;
        let applied = tables.apply_streamed(chunks, abort)?;
        if applied.is_some() {
            self.took_bulk(tables)?;
        }
        Ok(applied)
    }

    /// Takes the sums and LSN from redb after a bulk batch went there directly.
    fn took_bulk(&self, tables: &Tables) -> Result<()> {
        let (lsn, sums) = tables.sums()?;
        let mut state = self.write();
        debug_assert!(
            state.active.is_empty() && state.frozen.is_none(),
            "only the leader adds to the overlay, and it is here"
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
        let pending = state
            .active
            .get(table)
            .and_then(|rows| rows.get(key))
            .or_else(|| state.frozen.as_ref().and_then(|f| f.get(table, key)));
        if let Some(pending) = pending {
            return Ok((Found::Pending(pending.clone()), state.lsn));
        }
        // Taken under the lock: a move commits redb before it drops `frozen`.
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
            let layers = [
                state
                    .frozen
                    .as_ref()
                    .and_then(|frozen| frozen.rows.get(table)),
                state.active.get(table),
            ];
            let pending = if in_order(bounds) {
                pending_range(&layers, bounds, reverse)
            } else {
                Vec::new()
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

/// The rows of `layers` (oldest first, a newer one overriding) between the bounds, in order
/// or reversed. The whole range: any pending delete may hide a row redb would return. The
/// overlay is bounded (see [`MAX_BEHIND_ROWS`]), so this copy is too.
fn pending_range(
    layers: &[Option<&TableRows>],
    bounds: (Bound<&[u8]>, Bound<&[u8]>),
    reverse: bool,
) -> Vec<PendingRow> {
    let present: Vec<_> = layers.iter().flatten().collect();
    let clone = |(k, v): (&Vec<u8>, &Option<Vec<u8>>)| (k.clone(), v.clone());
    let rows: Vec<PendingRow> = match present.as_slice() {
        [] => Vec::new(),
        [only] => only.range::<[u8], _>(bounds).map(clone).collect(),
        _ => {
            let mut merged = BTreeMap::new();
            for layer in present {
                merged.extend(layer.range::<[u8], _>(bounds).map(clone));
            }
            merged.into_iter().collect()
        }
    };
    if reverse {
        rows.into_iter().rev().collect()
    } else {
        rows
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
