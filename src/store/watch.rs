//! What a cache in front of a store needs from it: reads that carry the LSN of the state
//! they read, and every write as it is applied, before it becomes visible.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

use super::commit::Pending;
use super::overlay::Found;
use super::{validate_table_name, Inner, Store};
use crate::codec::Op;
use crate::error::Result;

/// What a [`WriteWatcher`] is told.
#[derive(Debug, Clone, Copy)]
pub enum Watched<'a> {
    /// The entry at `lsn` applied `ops`.
    Written {
        /// The entry's LSN.
        lsn: u64,
        /// What it wrote.
        ops: &'a [Op],
    },
    /// The store's state was replaced whole (a replica seeded by a snapshot, or emptied for
    /// a resync): it is now the state at `lsn`, and the writes between what the watcher was
    /// told and `lsn` (or, after a resync, a whole other history) are never told.
    Reset {
        /// The LSN of the state installed; the next entry follows it.
        lsn: u64,
    },
}

/// Told each applied entry's LSN and operations, in LSN order, and each reset of the
/// store's state, on the thread that makes them and before they are visible. It must be
/// quick and must not use the store.
pub type WriteWatcher = Arc<dyn Fn(Watched<'_>) + Send + Sync>;

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
            watcher(Watched::Written { lsn, ops: &ops });
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
                watcher(Watched::Written {
                    lsn: entry.lsn,
                    ops: &entry.ops,
                });
            }
        }
    }

    /// Tells every watcher that the store's state is now the one at `lsn`, replaced whole.
    pub(super) fn tell_reset(&self, lsn: u64) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        for (_, watcher) in self.list().iter() {
            watcher(Watched::Reset { lsn });
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

    /// Tells `watcher` of every entry applied and every reset of the state from now on,
    /// until the [`Watching`] returned is dropped.
    pub fn watch_writes(&self, watcher: WriteWatcher) -> Watching {
        let watchers = &self.inner.watchers;
        let id = watchers.next_id.fetch_add(1, Ordering::Relaxed);
        watchers.edit(|list| list.push((id, watcher)));
        Watching {
            store: Arc::downgrade(&self.inner),
            id,
        }
    }
}

/// A watcher registered by [`Store::watch_writes`]: told of every write until this is
/// dropped, so that an owner that goes away without closing (a cache object a notebook
/// dropped) never leaves a watcher behind that every later write calls. It does not keep
/// the store open.
#[must_use = "the watcher is removed when this is dropped"]
pub struct Watching {
    store: Weak<Inner>,
    id: u64,
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(inner) = self.store.upgrade() {
            let id = self.id;
            inner
                .watchers
                .edit(|list| list.retain(|(watching, _)| *watching != id));
        }
    }
}

impl std::fmt::Debug for Watching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watching")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::super::{Store, StoreOptions};
    use super::Watched;
    use crate::codec::{encode_key, KeyRef, Op};

    fn put(store: &Store, key: &str) {
        let op = Op {
            table: "t".to_owned(),
            key: encode_key(KeyRef::Str(key)),
            value: Some(vec![0xc3]),
        };
        store.commit(vec![op], None).unwrap();
    }

    #[test]
    fn a_watcher_is_told_until_its_watching_is_dropped_and_does_not_keep_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s"), StoreOptions::default()).unwrap();
        let told = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&told);
        let watching = store.watch_writes(Arc::new(move |watched| {
            if let Watched::Written { lsn, .. } = watched {
                sink.lock().unwrap().push(lsn);
            }
        }));
        put(&store, "a");
        drop(watching);
        put(&store, "b");
        assert_eq!(
            *told.lock().unwrap(),
            [1],
            "told of the write before the drop only"
        );
        assert!(store.inner.watchers.list().is_empty());
        // One that outlives its store neither keeps it open nor fails when dropped.
        let late = store.watch_writes(Arc::new(|_| {}));
        let inner = Arc::downgrade(&store.inner);
        store.close().unwrap();
        drop(store);
        assert!(inner.upgrade().is_none(), "the store's state is released");
        drop(late);
    }
}
