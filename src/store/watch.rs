//! What a cache in front of a store needs from it: reads that carry the LSN of the state
//! they read, and every write as it is applied, before it becomes visible.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::commit::Pending;
use super::overlay::Found;
use super::{validate_table_name, Store};
use crate::codec::Op;
use crate::error::Result;

/// Told each applied entry's LSN and operations, in LSN order, on the committing thread
/// and before the entry is visible. It must be quick and must not use the store.
pub type WriteWatcher = Arc<dyn Fn(u64, &[Op]) + Send + Sync>;

/// The watchers of one store.
#[derive(Default)]
pub(super) struct Watchers {
    list: RwLock<Vec<(u64, WriteWatcher)>>,
    /// Whether any is registered (checked without the lock on every batch).
    any: AtomicBool,
    next_id: AtomicU64,
}

impl Watchers {
    fn list(&self) -> std::sync::RwLockReadGuard<'_, Vec<(u64, WriteWatcher)>> {
        // Watchers never run under the write lock, so none can poison it.
        self.list
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn edit(&self, change: impl FnOnce(&mut Vec<(u64, WriteWatcher)>)) {
        let mut list = self
            .list
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut list);
        self.any.store(!list.is_empty(), Ordering::Release);
    }

    /// Tells every watcher about the entry at `lsn`, whose ops `read` gives: called only if
    /// a watcher is registered, under the list's lock, so that one registered meanwhile is
    /// told them too.
    pub(super) fn tell_read(&self, lsn: u64, read: impl FnOnce() -> Result<Vec<Op>>) -> Result<()> {
        let list = self.list();
        if list.is_empty() {
            return Ok(());
        }
        let ops = read()?;
        for (_, watcher) in list.iter() {
            watcher(lsn, &ops);
        }
        Ok(())
    }

    /// Tells every watcher about `entries`.
    pub(super) fn tell(&self, entries: &[Pending]) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        for (_, watcher) in self.list().iter() {
            for entry in entries {
                watcher(entry.lsn, &entry.ops);
            }
        }
    }
}

impl Store {
    /// Calls `f` with the value of `key` (encoded) in `table`, or `None`, and returns its
    /// result with the LSN of the state the value was read from: a cache stores the value
    /// with that version, and refuses it if a later write of the key is known.
    ///
    /// # Errors
    /// A closed store or a storage failure.
    pub fn get_versioned<R>(
        &self,
        table: &str,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<(R, u64)> {
        validate_table_name(table)?;
        // `f` runs with no lock of the store held (it may be Python code).
        let (found, lsn) =
            self.with_open(|open| open.overlay.lookup_at(&open.tables, table, key))?;
        let value = match found {
            Found::Pending(value) => f(value.as_deref()),
            Found::In(snapshot) => snapshot.get_with(table, key, f)?,
        };
        Ok((value, lsn))
    }

    /// Tells `watcher` of every entry applied from now on, until [`Store::unwatch_writes`]
    /// with the id returned.
    pub fn watch_writes(&self, watcher: WriteWatcher) -> u64 {
        let watchers = &self.inner.watchers;
        let id = watchers.next_id.fetch_add(1, Ordering::Relaxed);
        watchers.edit(|list| list.push((id, watcher)));
        id
    }

    /// Stops telling the watcher registered as `id`.
    pub fn unwatch_writes(&self, id: u64) {
        self.inner
            .watchers
            .edit(|list| list.retain(|(watching, _)| *watching != id));
    }
}
