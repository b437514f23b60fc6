//! The in-process cache: a versioned LRU of Python objects, invalidated directly by the
//! store it reads through (a watcher told of each write before the write is visible).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use bytes::Bytes;
use pyo3::prelude::*;

use crate::cache::lru::{Bounds, Fill, OnWrite, SetIf, Version, VersionedLru, Weigh};
use crate::cache::wire_key::wire_key_of_encoded;
use crate::codec::Op;
use crate::store::{Store, Watched, Watching};

thread_local! {
    /// Objects the LRU let go of while locked on this thread: released once it unlocks, as
    /// releasing the last reference may run Python code (a `__del__`) that uses the cache.
    static RELEASED: RefCell<Vec<Py<PyAny>>> = const { RefCell::new(Vec::new()) };
    /// Whether this thread holds an LRU's lock now.
    static LOCKED: Cell<bool> = const { Cell::new(false) };
}

/// A cached Python object and the size of its encoded form.
pub(super) struct PyValue {
    object: Option<Py<PyAny>>,
    size: usize,
}

impl PyValue {
    pub(super) fn new(object: Py<PyAny>, size: usize) -> Self {
        Self {
            object: Some(object),
            size,
        }
    }

    fn object(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.object.as_ref().map(|o| o.clone_ref(py))
    }
}

impl Weigh for PyValue {
    fn weight(&self) -> usize {
        self.size
    }
}

impl Drop for PyValue {
    fn drop(&mut self) {
        if let Some(object) = self.object.take() {
            if LOCKED.get() {
                RELEASED.with(|released| released.borrow_mut().push(object));
            }
        }
    }
}

/// The LRU, locked; objects it lets go of are released after it unlocks.
pub(super) struct Locked<'a> {
    guard: Option<MutexGuard<'a, VersionedLru<PyValue>>>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = VersionedLru<PyValue>;

    fn deref(&self) -> &Self::Target {
        self.guard
            .as_ref()
            .expect("invariant: the guard is only taken by drop")
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.guard
            .as_mut()
            .expect("invariant: the guard is only taken by drop")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        LOCKED.set(false);
        let released = RELEASED.with(|released| std::mem::take(&mut *released.borrow_mut()));
        drop(released);
    }
}

/// The LRU and the clock its TTLs run on.
///
/// Versions in the LRU carry, in place of an epoch, how many times the store's state was
/// reset under it (a replica re-seeded or resynced): a value read before a reset may be of
/// a state whose writes the cache was never told, or of a history the store threw away at
/// the same LSNs, so its fill is refused for being of an older "epoch".
pub(super) struct Local {
    lru: Mutex<VersionedLru<PyValue>>,
    /// Resets of the source's state so far: changed only under `lru`'s lock.
    resets: AtomicU64,
    started: Instant,
}

impl Local {
    pub(super) fn new(capacity: usize, max_bytes: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            lru: Mutex::new(VersionedLru::new(
                Bounds {
                    capacity,
                    max_bytes,
                    tombstones: capacity.max(1 << 16),
                },
                OnWrite::Drop,
            )),
            resets: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    /// The LRU, locked. Nothing under this lock calls Python or the store.
    pub(super) fn lock(&self) -> Locked<'_> {
        let guard = self
            .lru
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        LOCKED.set(true);
        Locked { guard: Some(guard) }
    }

    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The cached object of `key`, if live (a new reference to the same object).
    pub(super) fn get(&self, py: Python<'_>, key: &[u8]) -> Option<Py<PyAny>> {
        let mut lru = self.lock();
        // The clock is read only when some entry can expire: a hit is a few hundred ns.
        let now = if lru.has_expiring() { self.now_ms() } else { 0 };
        lru.get(key, now).and_then(|(value, _)| value.object(py))
    }

    /// Drops every cached object (its source can no longer tell it of writes).
    pub(super) fn drop_all(&self) {
        let mut lru = self.lock();
        if !lru.is_empty() {
            let processed = lru.processed();
            lru.flush(processed.lsn);
        }
    }

    /// A plain set (unversioned: any write of the key in the log drops it).
    pub(super) fn set(
        &self,
        key: Bytes,
        value: PyValue,
        ttl_ms: Option<u64>,
    ) -> Result<bool, Fill> {
        let now = self.now_ms();
        self.lock().set(key, value, ttl_ms, SetIf::Always, now)
    }

    /// How many times the source's state was reset so far: taken before a read through,
    /// and given back with its fill.
    pub(super) fn resets(&self) -> u64 {
        self.resets.load(Ordering::Acquire)
    }

    /// Stores a value read at `lsn`, after `resets` resets of the source, unless a later
    /// write of its key is known or the source was reset since.
    pub(super) fn fill(
        &self,
        key: Bytes,
        value: PyValue,
        (resets, lsn): (u64, u64),
        ttl_ms: Option<u64>,
    ) -> Fill {
        let now = self.now_ms();
        let version = Version { epoch: resets, lsn };
        let mut lru = self.lock();
        lru.fill(key, value, version, ttl_ms, now)
    }

    /// The last write processed (the floor of a read through). Its epoch is 0: the
    /// count of resets inside is no epoch of the store's.
    pub(super) fn processed(&self) -> Version {
        Version {
            epoch: 0,
            lsn: self.lock().processed().lsn,
        }
    }

    /// Starts dropping what `store`'s writes touch (everything when its state is reset),
    /// until the watcher returned is dropped.
    pub(super) fn watch(self: &Arc<Self>, store: &Store) -> Watching {
        let local: Weak<Self> = Arc::downgrade(self);
        store.watch_writes(Arc::new(move |watched| {
            let Some(local) = local.upgrade() else {
                return;
            };
            match watched {
                Watched::Written { lsn, ops } => local.written(lsn, ops),
                Watched::Reset { lsn } => local.reset(lsn),
            }
        }))
    }

    /// The source's state is now the one at `lsn`, reached without telling its writes (or
    /// in another history): everything goes, and reads through start from `lsn`.
    fn reset(&self, lsn: u64) {
        let mut lru = self.lock();
        let processed = lru.processed();
        lru.flush(processed.lsn);
        let resets = self.resets.load(Ordering::Relaxed) + 1;
        self.resets.store(resets, Ordering::Release);
        lru.restart(Version { epoch: resets, lsn });
    }

    fn written(&self, lsn: u64, ops: &[Op]) {
        let now = self.now_ms();
        let mut lru = self.lock();
        let at = Version {
            epoch: self.resets.load(Ordering::Relaxed),
            lsn,
        };
        for op in ops {
            // Keys in the log were encoded by the store: a bad one cannot be there, and
            // if it were it would match no cached key anyway.
            if let Ok(key) = wire_key_of_encoded(&op.table, &op.key) {
                lru.written(&Bytes::from(key), None, at, now);
            }
        }
        lru.processed_through(at);
    }
}
