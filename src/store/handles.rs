//! Handles: several `Store` values of one open store in a process.
//!
//! [`Store::open_shared`] returns a new handle to a store this process already has open
//! (re-running a notebook cell that opens it must not fail while the old handle lives on in
//! the cell's output history). Each handle closes on its own; the directory is released when
//! the last handle is closed or dropped. A process-wide registry, keyed by the canonical
//! directory, holds only weak references: it never keeps a store open by itself.
//! [`Store::open`] keeps one exclusive handle (replicas use it); the registry remembers it
//! too, so that a refused open can say which part of this process holds the directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::{Inner, Store, StoreOptions};
use crate::error::{Result, StoreError};

/// What one `Store` value (and its clones) is a handle of.
#[derive(Default)]
pub(super) struct Handle {
    /// `close()` was called on this handle (only shared handles close on their own).
    closed: AtomicBool,
    /// Keeps the shared store open; `None` for an exclusive store, or once closed.
    lease: Mutex<Option<Arc<Lease>>>,
    /// Made by [`Store::open_shared`].
    shared: bool,
    /// Set on the handle [`Store::open`] returns: its last clone closes the store. Without
    /// it the store would close with its last reference, which a background thread (the
    /// retention's tick) may hold a moment longer, and a reopen right after the drop
    /// would find the directory still locked.
    closes: Option<Weak<Inner>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let Some(inner) = self.closes.take().and_then(|inner| inner.upgrade()) else {
            return;
        };
        // A forked child's copy belongs to the parent (see `crate::fork`).
        if inner.owner.inherited() {
            return;
        }
        let path = inner.path.clone();
        if let Err(err) = shut(inner) {
            tracing::warn!(path = %path.display(), error = %err, "closing a dropped store failed");
        }
    }
}

impl Handle {
    fn leased(lease: Arc<Lease>) -> Arc<Self> {
        Arc::new(Self {
            closed: AtomicBool::new(false),
            lease: Mutex::new(Some(lease)),
            shared: true,
            closes: None,
        })
    }

    fn exclusive(inner: &Arc<Inner>) -> Arc<Self> {
        Arc::new(Self {
            closed: AtomicBool::new(false),
            lease: Mutex::new(None),
            shared: false,
            closes: Some(Arc::downgrade(inner)),
        })
    }

    /// Whether `close()` was called on this shared handle.
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Keeps a shared store open: every handle holds one clone, and the last one dropped
/// closes the store.
struct Lease {
    /// Taken by [`Lease::release`] when it closes the store itself.
    inner: Option<Arc<Inner>>,
}

impl Lease {
    /// Closes the store once no other handle holds it; returns the close's outcome.
    fn release(self: Arc<Self>) -> Result<()> {
        // Under the registry's lock no other thread can make a new handle from this lease.
        let mut registry = registry();
        match Arc::try_unwrap(self) {
            Ok(mut last) => {
                let inner = last.inner.take().expect("invariant: only release takes it");
                forget_dead(&mut registry);
                shut(inner)
            }
            Err(others) => {
                // Dropped after the lock: if another handle went meanwhile, this drop is
                // the last one and closes the store, taking the lock itself.
                drop(registry);
                drop(others);
                Ok(())
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        // A forked child's copy belongs to the parent (see `crate::fork`).
        if inner.owner.inherited() {
            std::mem::forget(inner);
            return;
        }
        let path = inner.path.clone();
        // Closed under the registry's lock: a reopen waits until the directory is free.
        let mut registry = registry();
        forget_dead(&mut registry);
        if let Err(err) = shut(inner) {
            tracing::warn!(path = %path.display(), error = %err, "closing the last handle of a store failed");
        }
        drop(registry);
    }
}

/// Closes the store for every handle (the registry's lock, if held, stays held).
fn shut(inner: Arc<Inner>) -> Result<()> {
    Store {
        inner,
        handle: Arc::default(),
    }
    .shut()
}

/// Who holds a directory in this process.
enum Holder {
    /// Shared handles: the lease they hold, and the store itself, which outlives the last
    /// lease while the thread that dropped it closes the store.
    Shared {
        lease: Weak<Lease>,
        inner: Weak<Inner>,
    },
    Exclusive(Weak<Inner>),
}

static REGISTRY: Mutex<BTreeMap<PathBuf, Holder>> = Mutex::new(BTreeMap::new());

type Registry = BTreeMap<PathBuf, Holder>;

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Holder {
    fn is_alive(&self) -> bool {
        match self {
            Holder::Shared { inner, .. } | Holder::Exclusive(inner) => inner.strong_count() > 0,
        }
    }
}

/// Removes the entries of stores that are gone (a weak reference keeps its allocation,
/// so dead ones are not left to pile up). A store whose last handle was dropped stays
/// until its close is over: a reopen then knows to wait for it.
fn forget_dead(registry: &mut Registry) {
    registry.retain(|_, holder| holder.is_alive());
}

/// The directory's canonical path, the registry's key (it exists once the store opened).
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Names the holder in this process of a directory whose open was refused as locked.
fn name_holder(registry: &Registry, err: crate::Error) -> crate::Error {
    match err {
        crate::Error::Store(StoreError::Locked {
            path,
            owner: Some(pid),
            ..
        }) if pid == std::process::id() => StoreError::Locked {
            holder: holder(registry, &path),
            path,
            owner: Some(pid),
            command: None,
        }
        .into(),
        other => other,
    }
}

/// What holds `path` in this process, in words.
fn holder(registry: &Registry, path: &Path) -> Option<&'static str> {
    match registry.get(&canonical(path))? {
        Holder::Shared { lease, .. } if lease.strong_count() > 0 => Some(
            "by Store handles: close every Store handle of it first (handle.close(), or let \
             them be collected)",
        ),
        Holder::Exclusive(inner) => {
            let inner = inner.upgrade()?;
            Some(if inner.options.follower {
                "by a Replica (or the Primary promoted from it): use its .store, or close \
                 it first"
            } else {
                "by a Store opened for exclusive use: close it first"
            })
        }
        Holder::Shared { .. } => None,
    }
}

/// The first option in which `asked` differs from `open`: its Python name and both values.
fn first_difference(
    open: &StoreOptions,
    asked: &StoreOptions,
) -> Option<(&'static str, String, String)> {
    /// Each option by its Python name, as Python writes its value. The destructuring names
    /// every field, so an option added later cannot be left out of the comparison.
    fn named(options: &StoreOptions) -> [(&'static str, String); 11] {
        let StoreOptions {
            fsync,
            max_key_bytes,
            max_value_bytes,
            max_transaction_bytes,
            segment_bytes,
            retain_bytes,
            retain_seconds,
            cache_bytes,
            checkpoint_entries,
            checkpoint_interval,
            follower,
        } = options;
        let flag = |b: bool| if b { "True" } else { "False" }.to_owned();
        let none = || "None".to_owned();
        [
            ("fsync", flag(*fsync)),
            ("max_key_bytes", max_key_bytes.to_string()),
            ("max_value_bytes", max_value_bytes.to_string()),
            ("max_transaction_bytes", max_transaction_bytes.to_string()),
            ("segment_bytes", segment_bytes.to_string()),
            ("checkpoint_entries", checkpoint_entries.to_string()),
            (
                "checkpoint_seconds",
                format!("{:?}", checkpoint_interval.as_secs_f64()),
            ),
            (
                "retain_bytes",
                retain_bytes.map_or_else(none, |b| b.to_string()),
            ),
            (
                "retain_seconds",
                retain_seconds.map_or_else(none, |d| format!("{:?}", d.as_secs_f64())),
            ),
            ("cache_bytes", cache_bytes.to_string()),
            ("follower", flag(*follower)),
        ]
    }
    named(open)
        .into_iter()
        .zip(named(asked))
        .find(|((_, was), (_, now))| was != now)
        .map(|((name, was), (_, now))| (name, was, now))
}

/// How long [`Store::open_shared`] waits for a store that another thread is closing.
const CLOSING_PATIENCE: Duration = Duration::from_secs(30);

/// An open refused because the store is being closed by the thread that dropped its last
/// handle (see [`is_closing`]), with the options to try again with.
struct Closing(crate::Error, StoreOptions);

/// Whether `err` refused an open of `key` because this process still holds the directory
/// through a shared store whose last handle is gone: its close is under way.
fn is_closing(registry: &Registry, key: &Path, err: &crate::Error) -> bool {
    let locked_here = matches!(
        err,
        crate::Error::Store(StoreError::Locked { owner: Some(pid), .. })
            if *pid == std::process::id()
    );
    locked_here
        && matches!(
            registry.get(key),
            Some(Holder::Shared { lease, inner })
                if lease.strong_count() == 0 && inner.strong_count() > 0
        )
}

/// What `open_shared` found in the registry for a directory.
enum Found {
    /// A live shared store with the same options: the new handle.
    Same(Store),
    /// A live shared store opened with other options.
    Differs(StoreError),
    /// Nothing usable (no entry, a closed store, a forked child's copy): open it.
    Nothing,
}

impl Store {
    /// Opens the store at `path` like [`Store::open`], or, if this process already has it
    /// open through this function with the same options, returns a new handle to that open
    /// store (the same tables, log and writers).
    ///
    /// Each handle is closed by its own [`Store::close`] (its later use is refused as
    /// closed); the store is closed, and the directory released, when its last handle is
    /// closed or dropped. An open that comes while another thread is closing the store
    /// (its last handle just dropped) waits for that close, up to 30 s.
    ///
    /// # Errors
    /// As [`Store::open`]; [`StoreError::OptionsDiffer`] if the open store was opened with
    /// other options; [`StoreError::Locked`] naming the holder if [`Store::open`] (a
    /// replica) holds the directory in this process.
    pub fn open_shared(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        let path = path.as_ref();
        options.validate()?;
        let deadline = Instant::now() + CLOSING_PATIENCE;
        let mut options = options;
        loop {
            match Self::try_open_shared(path, options) {
                // Another thread dropped the last handle a moment ago and is closing the
                // store: the directory is free once it holds the registry's lock and
                // finishes, which it does next.
                Err(closing) if Instant::now() < deadline => {
                    options = closing.1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(closing) => return Err(closing.0),
                Ok(opened) => return opened,
            }
        }
    }

    /// One attempt of [`Store::open_shared`]; `Err` if the directory is still held by a
    /// store whose last handle is gone (its close has not taken the registry's lock yet).
    fn try_open_shared(
        path: &Path,
        options: StoreOptions,
    ) -> std::result::Result<Result<Self>, Box<Closing>> {
        let key = canonical(path);
        let mut registry = registry();
        let (found, upgraded) = match registry.get(&key) {
            Some(Holder::Shared { lease, .. }) => match lease.upgrade() {
                Some(lease) => (Self::share(&lease, &key, &options), Some(lease)),
                None => (Found::Nothing, None),
            },
            _ => (Found::Nothing, None),
        };
        let opened = match found {
            Found::Same(store) => Ok(store),
            Found::Differs(err) => Err(err.into()),
            Found::Nothing => match Self::open_unregistered(path, options.clone()) {
                Ok(store) => {
                    let lease = Arc::new(Lease {
                        inner: Some(Arc::clone(&store.inner)),
                    });
                    forget_dead(&mut registry);
                    let holder = Holder::Shared {
                        lease: Arc::downgrade(&lease),
                        inner: Arc::downgrade(&store.inner),
                    };
                    registry.insert(canonical(path), holder);
                    Ok(Self {
                        inner: store.inner,
                        handle: Handle::leased(lease),
                    })
                }
                Err(err) if is_closing(&registry, &key, &err) => {
                    return Err(Box::new(Closing(err, options)))
                }
                Err(err) => Err(name_holder(&registry, err)),
            },
        };
        // A lease dropped here may be the last one, whose drop takes the registry's lock.
        drop(registry);
        drop(upgraded);
        Ok(opened)
    }

    fn share(lease: &Arc<Lease>, path: &Path, options: &StoreOptions) -> Found {
        let inner = lease
            .inner
            .as_ref()
            .expect("invariant: a live lease holds its store");
        if inner.owner.inherited() || inner.pipeline.is_closed() {
            return Found::Nothing;
        }
        match first_difference(&inner.options, options) {
            None => Found::Same(Self {
                inner: Arc::clone(inner),
                handle: Handle::leased(Arc::clone(lease)),
            }),
            Some((option, open, asked)) => Found::Differs(StoreError::OptionsDiffer {
                path: path.to_path_buf(),
                option,
                open,
                asked,
            }),
        }
    }

    /// Registers a store opened by [`Store::open`] as the exclusive holder of its directory,
    /// or names the holder in this process if the open was refused as locked.
    pub(super) fn register_exclusive(opened: Result<Self>) -> Result<Self> {
        let mut registry = registry();
        match opened {
            Ok(store) => {
                forget_dead(&mut registry);
                registry.insert(
                    canonical(&store.inner.path),
                    Holder::Exclusive(Arc::downgrade(&store.inner)),
                );
                Ok(Self {
                    handle: Handle::exclusive(&store.inner),
                    inner: store.inner,
                })
            }
            Err(err) => Err(name_holder(&registry, err)),
        }
    }

    /// Whether closing this handle would close the store: no other handle holds it.
    pub(super) fn is_last_handle(&self) -> bool {
        if !self.handle.shared {
            return true;
        }
        self.handle
            .lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|lease| Arc::strong_count(lease) == 1)
    }

    /// Closes this handle: the store itself once no other handle holds it.
    pub(super) fn close_handle(&self) -> Result<()> {
        if !self.handle.shared {
            return self.shut();
        }
        self.handle.closed.store(true, Ordering::Release);
        let lease = self
            .handle
            .lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        lease.map_or(Ok(()), Lease::release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Op;
    use crate::codec::{encode_key, KeyRef};

    fn put(store: &Store, key: &str) -> Result<u64> {
        let op = Op {
            table: "t".to_owned(),
            key: encode_key(KeyRef::Str(key)),
            value: Some(b"\xc3".to_vec()),
        };
        Ok(store.commit(vec![op], None)?.lsn)
    }

    /// The last handle's drop closes the store in the dropping thread; a reopen that comes
    /// in between (the handle gone, the directory not yet released) waits for that close
    /// instead of failing as locked.
    #[test]
    fn a_reopen_racing_the_last_handles_drop_waits_for_the_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..150 {
                        let store = Store::open_shared(&path, StoreOptions::default())?;
                        put(&store, &format!("{t}-{i}"))?;
                    }
                    Ok::<_, crate::Error>(())
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap().unwrap();
        }
        let store = Store::open_shared(&path, StoreOptions::default()).unwrap();
        assert_eq!(store.last_lsn(), 300);
    }

    #[test]
    fn shared_handles_close_one_by_one_and_the_last_releases_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let first = Store::open_shared(&path, StoreOptions::default()).unwrap();
        let second = Store::open_shared(&path, StoreOptions::default()).unwrap();
        assert_eq!(put(&first, "a").unwrap(), 1);
        assert_eq!(second.last_lsn(), 1, "one open store behind both handles");
        first.close().unwrap();
        assert!(first.is_closed() && !second.is_closed());
        assert!(matches!(
            put(&first, "b"),
            Err(crate::Error::Store(StoreError::Closed { .. }))
        ));
        assert_eq!(put(&second, "b").unwrap(), 2);
        assert!(matches!(
            Store::open(&path, StoreOptions::default()),
            Err(crate::Error::Store(StoreError::Locked {
                holder: Some(_),
                ..
            }))
        ));
        drop(second);
        let reopened = Store::open(&path, StoreOptions::default()).unwrap();
        assert_eq!(reopened.last_lsn(), 2);
    }

    #[test]
    fn a_transaction_of_a_closed_handle_is_refused_and_frees_the_writer_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let first = Store::open_shared(&path, StoreOptions::default()).unwrap();
        let second = Store::open_shared(&path, StoreOptions::default()).unwrap();
        let mut tx = first.begin().unwrap();
        tx.put("t", encode_key(KeyRef::Str("k")), b"\xc3".to_vec())
            .unwrap();
        first.close().unwrap();
        assert!(matches!(
            tx.commit(None),
            Err(crate::Error::Store(StoreError::Closed { .. }))
        ));
        assert_eq!(
            put(&second, "k").unwrap(),
            1,
            "the writer lock was released"
        );
    }

    #[test]
    fn a_shared_store_refuses_other_options_naming_the_first_that_differs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let _open = Store::open_shared(&path, StoreOptions::default()).unwrap();
        let other = StoreOptions {
            cache_bytes: 2 << 20,
            ..StoreOptions::default()
        };
        match Store::open_shared(&path, other) {
            Err(crate::Error::Store(StoreError::OptionsDiffer {
                option,
                open,
                asked,
                ..
            })) => {
                assert_eq!((option, open.as_str()), ("cache_bytes", "134217728"));
                assert_eq!(asked, "2097152");
            }
            other => panic!("expected OptionsDiffer, got {other:?}"),
        }
    }
}
