//! The store: a directory holding the change log (the commit point) and the redb tables
//! applied from it. See DESIGN §1 for the commit pipeline and recovery.

mod apply;
mod bulk_delete;
mod checkpoint;
mod commit;
mod compaction;
mod dirlock;
mod diverged;
mod dropped;
mod durability;
mod epochs;
mod follow;
#[cfg(test)]
mod follow_tests;
mod gather;
mod handles;
mod handover;
mod held;
mod history;
mod holding;
#[cfg(test)]
mod holding_tests;
mod install;
mod maintenance;
mod options;
mod overlay;
mod pace;
mod paced;
mod read;
mod recover;
mod retention;
mod stats;
mod stored;
mod streamed;
mod sum_history;
mod tables;
mod transaction;
mod trim;
mod watch;
mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use checkpoint::Checkpointer;
use commit::{Listener, Pipeline, Refused};
pub use compaction::{Compaction, CompactionAttempts};
use dirlock::DirLock;
pub use diverged::{read_divergence_report, DivergenceReport};
pub use durability::{Committed, Durability, OnTimeout, Receipt, Registration, SyncReplication};
use epochs::Epochs;
pub use epochs::{fork_lsn, EpochHistory};
pub use holding::{WrittenSubscription, MAX_HELD_ENTRIES};
pub use install::{Installer, SnapshotView};
use maintenance::Maintenance;
pub use options::{StoreOptions, DEFAULT_CACHE_BYTES, DEFAULT_RETAIN_AGE, DEFAULT_RETAIN_BYTES};
use overlay::Overlay;
use recover::{create_dirs, refuse_foreign, Parts};
pub use retention::{LogHolds, RetentionPolicy};
pub use stats::StoreStats;
pub use stored::describe_key;
pub use streamed::StreamedCommit;
use tables::Tables;
pub use tables::{checked_value, ScrubDamage, ScrubReport, TableSum};
pub use transaction::Transaction;
pub use watch::{Watched, Watching, WriteWatcher};

use crate::error::{ReadOnlyReason, ReplicationError, Result, StoreError};
use crate::fork::Owner;
use crate::log::{DirFs, Log, LogFs};

/// A table's checksum state at one LSN, as returned by [`Store::checksum`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// The LSN the sums were read at.
    pub lsn: u64,
    /// Per table: row count and checksum.
    pub tables: BTreeMap<String, TableSum>,
}

struct Open {
    // Field order is load-bearing: the checkpointer's thread (which holds the other
    // handles of `tables` and `overlay`) stops before the files are released.
    checkpointer: Checkpointer,
    tables: Arc<Tables>,
    overlay: Arc<Overlay>,
    log: Log,
    _lock: DirLock,
}

struct Inner {
    path: PathBuf,
    options: StoreOptions,
    /// The process that opened the store: a child forked from it may not use it.
    owner: Owner,
    pipeline: Pipeline,
    /// Why user writes are refused, if they are: fixed at open, except that a promotion
    /// makes a follower writable.
    read_only: std::sync::Mutex<Option<ReadOnlyReason>>,
    /// The tables are durably marked as a replica's.
    marked_follower: AtomicBool,
    /// The primary serving this store, if one does: sync commits wait through it.
    replication: durability::Registry,
    /// The epoch history and the highest epoch seen.
    epochs: Epochs,
    /// Told of every entry as it is applied (caches in front of the store).
    watchers: watch::Watchers,
    /// Told of each batch written to the log before its fdatasync (see
    /// [`Store::on_written`]), with the id of the subscription that set it.
    written: RwLock<Option<(u64, Listener)>>,
    /// The background retention of the log, while the store is open.
    maintenance: std::sync::Mutex<Option<Maintenance>>,
    // Field order matters only in that `open` is dropped (files released) by `close()`,
    // not by the last handle: transactions and iterators may outlive a close.
    open: RwLock<Option<Open>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // In a forked child the files and the lock are the parent's: closing them here
        // (redb writes its header on drop) would change the parent's store under it.
        if self.owner.inherited() {
            let open = self
                .open
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            std::mem::forget(open);
        }
    }
}

/// A listener registered by [`Store::on_visible`]; dropping it unsubscribes.
#[must_use = "dropping the subscription unsubscribes the listener"]
pub struct VisibleSubscription {
    store: Store,
    id: u64,
}

impl Drop for VisibleSubscription {
    fn drop(&mut self) {
        self.store.inner.pipeline.unsubscribe(self.id);
    }
}

/// A replikv store. Cheap to clone: clones share one open store, and are one handle of it
/// (see [`Store::open_shared`]).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    handle: Arc<handles::Handle>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("last_lsn", &self.last_lsn())
            .finish_non_exhaustive()
    }
}

/// Checks a table name: `[A-Za-z0-9_.-]{1,64}`, not starting with `__` (internal).
///
/// # Errors
/// [`StoreError::InvalidTable`] with the reason.
pub fn validate_table_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() || name.len() > 64 {
        Some("must be 1 to 64 characters long")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        Some("may only contain letters, digits, '_', '.' and '-'")
    } else if name.starts_with("__") {
        Some("names starting with '__' are reserved")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::InvalidTable {
            name: name.to_owned(),
            reason,
        }
        .into()),
        None => Ok(()),
    }
}

fn dir_io(context: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        context,
        path,
        source,
    }
}

impl Store {
    /// Opens the store at `path`, creating the directory and its parents if missing, and
    /// recovers it: the log is replayed into the tables after their last checkpoint.
    ///
    /// # Errors
    /// I/O failures (missing parent, permissions), [`StoreError::NotAStore`] for a
    /// directory of other files, [`StoreError::Locked`] if another handle owns the
    /// directory, corruption of the log or of the redb file.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        Self::register_exclusive(Self::open_unregistered(path.as_ref(), options))
    }

    /// Opens the store at `path` (see [`Store::open`]) without entering it in the registry
    /// of handles.
    fn open_unregistered(path: &Path, options: StoreOptions) -> Result<Self> {
        let log_dir = path.join("log");
        Self::open_with(path, options, |_| {
            match std::fs::create_dir(&log_dir) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                other => other.map_err(dir_io("cannot create log directory", &log_dir))?,
            }
            Ok(Box::new(DirFs::new(&log_dir)))
        })
    }

    /// Opens a store whose log lives in the file layer made by `log_fs` (called once the
    /// directory is locked): tests use it to inject failures.
    fn open_with(
        path: &Path,
        options: StoreOptions,
        log_fs: impl FnOnce(&Path) -> Result<Box<dyn LogFs>>,
    ) -> Result<Self> {
        options.validate()?;
        let path = path.to_path_buf();
        refuse_foreign(&path)?;
        create_dirs(&path).map_err(dir_io("cannot create store directory", &path))?;
        let lock = DirLock::acquire(&path)?;
        let log_fs = log_fs(&path)?;
        install::finish_install(&path)?;
        let parts = crate::error::corrupt_on_panic("opening the tables", || {
            Parts::recover(&path, &options, log_fs)
        })?;
        let pipeline = Pipeline::new(
            parts.next_lsn,
            parts.history.last_epoch(),
            parts.log.last_timestamp_ms(),
        );
        if let Some(held) = parts.held {
            let held = held.into_iter().map(|e| commit::Pending {
                lsn: e.lsn,
                ops: e.ops,
                quick: None,
                replicated: true,
            });
            pipeline.hold(held.collect());
        }
        let read_only = if options.follower {
            Some(ReadOnlyReason::Replica)
        } else if parts.follower {
            Some(ReadOnlyReason::BelongsToReplica)
        } else {
            None
        };
        let Parts {
            tables,
            overlay,
            log,
            checkpointer,
            ..
        } = parts;
        let store = Self {
            inner: Arc::new(Inner {
                path,
                options,
                owner: Owner::current(),
                pipeline,
                read_only: std::sync::Mutex::new(read_only),
                marked_follower: AtomicBool::new(parts.follower),
                replication: durability::Registry::default(),
                epochs: Epochs::new(parts.history, parts.epoch),
                watchers: watch::Watchers::default(),
                written: RwLock::new(None),
                maintenance: std::sync::Mutex::new(None),
                open: RwLock::new(Some(Open {
                    checkpointer,
                    tables,
                    overlay,
                    log,
                    _lock: lock,
                })),
            }),
            handle: Arc::default(),
        };
        *store.maintenance() = Maintenance::start(&store.inner);
        Ok(store)
    }

    fn maintenance(&self) -> std::sync::MutexGuard<'_, Option<Maintenance>> {
        self.inner
            .maintenance
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The store's directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options it was opened with.
    #[must_use]
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    fn closed_error(&self, cause: Option<String>) -> crate::Error {
        StoreError::Closed {
            path: self.inner.path.clone(),
            cause,
        }
        .into()
    }

    /// Refuses a handle inherited through `fork()` (see [`crate::fork`]).
    ///
    /// # Errors
    /// [`StoreError::Inherited`] in a process forked after the store was opened.
    pub fn check_process(&self) -> Result<()> {
        let owner = &self.inner.owner;
        if owner.inherited() {
            return Err(StoreError::Inherited {
                path: self.inner.path.clone(),
                owner: owner.pid(),
                pid: std::process::id(),
            }
            .into());
        }
        Ok(())
    }

    /// Refuses a handle inherited through `fork()`, or one closed by its own
    /// [`Store::close`] while other handles keep the store open.
    ///
    /// # Errors
    /// [`StoreError::Inherited`], or [`StoreError::Closed`].
    pub fn check_usable(&self) -> Result<()> {
        self.check_process()?;
        if self.handle.is_closed() {
            return Err(self.closed_error(None));
        }
        Ok(())
    }

    fn open_state(&self) -> Result<RwLockReadGuard<'_, Option<Open>>> {
        self.check_usable()?;
        self.store_state()
    }

    /// The store's open state whether or not this handle was closed: for the work one
    /// handle does for all of them (a commit leader writes every handle's writes, and a
    /// close of its own handle meanwhile must not fail theirs, nor close the store).
    fn store_state(&self) -> Result<RwLockReadGuard<'_, Option<Open>>> {
        self.check_process()?;
        let guard = self
            .inner
            .open
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // After a failed write the store refuses reads too: it closed itself.
        if guard.is_none() || self.inner.pipeline.has_failed() {
            return Err(self.closed_error(self.inner.pipeline.failure()));
        }
        if let Some(cause) = guard.as_ref().and_then(|open| open.checkpointer.failure()) {
            return Err(self.closed_error(Some(cause)));
        }
        Ok(guard)
    }

    fn with_open<R>(&self, f: impl FnOnce(&Open) -> Result<R>) -> Result<R> {
        let guard = self.open_state()?;
        f(guard
            .as_ref()
            .expect("invariant: open_state checked it is open"))
    }

    /// As [`Store::with_open`], whether or not this handle was closed (see
    /// [`Store::store_state`]).
    fn with_store_open<R>(&self, f: impl FnOnce(&Open) -> Result<R>) -> Result<R> {
        let guard = self.store_state()?;
        f(guard
            .as_ref()
            .expect("invariant: store_state checked it is open"))
    }

    /// `err`, or if it left nothing written (no room in the log), the store's error for
    /// that, which says the store stays open.
    fn not_written(&self, err: crate::Error) -> crate::Error {
        let cause = err.to_string();
        match err {
            crate::Error::Log(crate::error::LogError::NotWritten { source, .. }) => {
                self.not_written_error(cause, source)
            }
            other => other,
        }
    }

    fn not_written_error(&self, cause: String, source: std::io::Error) -> crate::Error {
        StoreError::NotWritten {
            path: self.inner.path.clone(),
            cause,
            source,
        }
        .into()
    }

    fn refused(&self, refused: Refused) -> crate::Error {
        match refused {
            Refused::Closed(cause) => self.closed_error(cause),
            Refused::Failed(failure) => match failure.os_error() {
                Some(source) => StoreError::Failed {
                    path: self.inner.path.clone(),
                    cause: failure.cause,
                    source,
                }
                .into(),
                None => match failure.corrupt {
                    Some(reason) => StoreError::Corrupt {
                        reason: format!("{reason}; the store closed itself"),
                    }
                    .into(),
                    None => self.closed_error(Some(failure.cause)),
                },
            },
            Refused::OutOfOrder { expected, got } => {
                StoreError::OutOfOrder { expected, got }.into()
            }
            Refused::NotWritten(failure) => {
                let source = failure
                    .os_error()
                    .unwrap_or_else(|| std::io::Error::other(failure.cause.clone()));
                self.not_written_error(failure.cause, source)
            }
            Refused::Busy => StoreError::Busy.into(),
            Refused::Paused(reason) => ReplicationError::Paused { reason }.into(),
            Refused::WouldDeadlock => StoreError::WouldDeadlock(
                "this thread is inside a write to this store (an open transaction, or the rows a \
                 put_many is reading): write through the transaction, or after it ends",
            )
            .into(),
        }
    }

    /// Takes the writer lock without the follower check: for work that must be the only
    /// one touching the overlay and redb (snapshots, dropping log segments).
    fn begin_exclusive(&self) -> Result<Transaction> {
        self.check_usable()?;
        self.inner
            .pipeline
            .acquire_writer(None)
            .map_err(|r| self.refused(r))?;
        Ok(Transaction::new(self.clone()))
    }

    /// Waits up to `patience` for no transaction to hold the writer lock; returns whether
    /// it is free. For callers that must stay interruptible (Ctrl-C) while a long
    /// transaction runs on another thread.
    ///
    /// # Errors
    /// A closed store, or a transaction already open on this thread.
    pub fn writer_free_within(&self, patience: Duration) -> Result<bool> {
        self.check_usable()?;
        match self
            .inner
            .pipeline
            .writer_free_by(Instant::now() + patience)
        {
            Ok(()) => Ok(true),
            Err(Refused::Busy) => Ok(false),
            Err(refused) => Err(self.refused(refused)),
        }
    }

    /// Whether another transaction may hold the writer lock (a check without locking).
    #[must_use]
    pub fn writer_maybe_busy(&self) -> bool {
        self.inner.pipeline.writer_maybe_held()
    }

    /// Begins a transaction if the writer lock comes free within `patience`.
    ///
    /// # Errors
    /// As [`Store::begin`].
    pub fn begin_within(&self, patience: Duration) -> Result<Option<Transaction>> {
        self.check_usable()?;
        self.check_writable()?;
        match self
            .inner
            .pipeline
            .acquire_writer(Some(Instant::now() + patience))
        {
            Ok(()) => Ok(Some(Transaction::new(self.clone()))),
            Err(Refused::Busy) => Ok(None),
            Err(refused) => Err(self.refused(refused)),
        }
    }

    /// Begins a transaction: it holds the writer lock until it commits or is dropped.
    ///
    /// # Errors
    /// A closed store, or a transaction already open on this thread.
    pub fn begin(&self) -> Result<Transaction> {
        self.check_usable()?;
        self.check_writable()?;
        self.inner
            .pipeline
            .acquire_writer(None)
            .map_err(|r| self.refused(r))?;
        Ok(Transaction::new(self.clone()))
    }

    /// Waits until every LSN handed out so far is visible (used by transactions that read),
    /// but those a follower holds back.
    fn drain(&self) -> Result<()> {
        self.wait_visible(self.inner.pipeline.last_releasable())
    }

    /// Refuses a handle that is closed, inherited, or whose store closed itself (a fatal
    /// failure) or is closing: what a read would refuse, without reading.
    ///
    /// # Errors
    /// [`StoreError::Closed`] (with the failure that closed it, if any) or
    /// [`StoreError::Inherited`].
    pub fn check_open(&self) -> Result<()> {
        drop(self.open_state()?);
        if self.is_closed() {
            return Err(self.closed_error(self.inner.pipeline.failure()));
        }
        Ok(())
    }

    /// Whether the store has been closed (on request or by a fatal failure).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed() || self.inner.pipeline.is_closed()
    }

    /// Closes this handle. A store opened by [`Store::open`] (one handle) is closed: what
    /// is pending is flushed, the tables are checkpointed and every file is released. A
    /// handle from [`Store::open_shared`] is refused from now on; the store closes with its
    /// last handle. Closing twice is a no-op.
    ///
    /// # Errors
    /// The final checkpoint failed (the log still holds every committed entry). This
    /// thread is inside a streamed bulk load of this store ([`StoreError::WouldDeadlock`]):
    /// nothing is closed.
    pub fn close(&self) -> Result<()> {
        self.check_process()?;
        // Closing would wait for the load's applying thread, which waits for this one.
        self.outside_bulk_load()?;
        self.close_handle()
    }

    /// Refuses a call from inside a streamed bulk load on this thread (the rows a
    /// `put_many` is reading, its progress callback) that would wait for the load's
    /// applying thread, which waits for this one.
    fn outside_bulk_load(&self) -> Result<()> {
        if self.inner.pipeline.streaming_here() {
            return Err(StoreError::WouldDeadlock(
                "this thread is inside a bulk write to this store (the rows a put_many is \
                 reading, or its progress callback): make this call after the load ends",
            )
            .into());
        }
        Ok(())
    }

    /// Closes the store for every handle: flushes what is pending, checkpoints the tables
    /// and releases every file. Closing twice is a no-op.
    fn shut(&self) -> Result<()> {
        self.check_process()?;
        let first = self.inner.pipeline.mark_closed();
        // Ends the background retention at once rather than at its next tick.
        drop(self.maintenance().take());
        if first {
            // Entries that already took an LSN are flushed; later commits are refused.
            let _ = self.drain();
        }
        let open = self
            .inner
            .open
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut open) = open {
            open.checkpointer.stop();
            if self.inner.pipeline.failure().is_none() && open.checkpointer.failure().is_none() {
                // Durable, so that the next open replays nothing (without `fsync` it syncs
                // nothing either, see `Tables::open`).
                open.overlay.move_to_tables(&open.tables, true)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod no_room_tests;
#[cfg(test)]
mod recover_tests;
#[cfg(test)]
mod tests;
