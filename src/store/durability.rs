//! How durable a write is when its call returns (DESIGN §1, guarantee 3): committed here
//! only, shipped to replicas in the background, or durable on a quorum of them (applied
//! there too, unless the primary ships ahead: see `PrimaryOptions::ship_ahead`).
//!
//! The store never imports replication: a primary implements [`SyncReplication`] and
//! registers it on the store it serves; a sync commit waits through that trait.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Store;
use crate::error::{ReplicationError, Result, StoreError};

/// The durability of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Durable in this store; no primary serves it, so nothing ships it anywhere.
    Local,
    /// Durable in this store and shipped to the replicas in the background.
    Async,
    /// Durable in this store and on at least `quorum` replicas.
    Sync,
}

impl Durability {
    /// The name shown to users: `"local"`, `"async"` or `"sync"`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Durability::Local => "local",
            Durability::Async => "async",
            Durability::Sync => "sync",
        }
    }
}

/// What a sync write does when its quorum is not reached within the sync timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// Fail with [`ReplicationError::Timeout`] (the write is committed locally).
    Raise,
    /// Return a receipt with `degraded: true`.
    Degrade,
}

/// What a commit returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The write's LSN.
    pub lsn: u64,
    /// The durability it was committed with.
    pub durability: Durability,
    /// The replicas known to hold it durably when the call returned (sync writes only).
    pub acked_by: Vec<String>,
    /// A sync write whose quorum was not reached in time (or whose wait was interrupted).
    pub degraded: bool,
}

/// What a store needs from the primary serving it to commit sync writes. Implemented by
/// the primary (`replication/`), registered with [`Store::serve_replication`].
pub trait SyncReplication: Send + Sync {
    /// The default durability of writes to `table`: its own mode, else the primary's.
    fn default_for(&self, table: &str) -> Durability;
    /// Refuses a sync write before it commits: fewer replicas that could count toward the
    /// quorum are registered than the quorum.
    ///
    /// # Errors
    /// [`ReplicationError::SyncUnavailable`] saying why.
    fn check_sync(&self) -> Result<()>;
    /// A sync write took `lsn` and will wait for its quorum. Called before any leader can
    /// make the write visible (under the commit pipeline's lock: it must be quick), so that
    /// the entry is always shipped as awaited (its replicas fsync it at once), and a link
    /// that paces itself ships it without waiting for its interval.
    fn will_wait(&self, lsn: u64);
    /// Waits up to `patience` until a quorum of counting replicas acked a flushed LSN at or
    /// past `lsn`; returns those that did, or `None` if the quorum is not there yet.
    ///
    /// # Errors
    /// [`ReplicationError::Deposed`] once the primary is deposed: no quorum can form.
    fn wait_quorum(&self, lsn: u64, patience: Duration) -> Result<Option<Vec<String>>>;
    /// The counting replicas that acked a flushed LSN at or past `lsn` so far.
    fn acked_by(&self, lsn: u64) -> Vec<String>;
    /// How long a sync write waits for its quorum.
    fn sync_timeout(&self) -> Duration;
    /// What happens when it waited that long.
    fn on_timeout(&self) -> OnTimeout;
}

/// The replication registered on a store: at most one primary serves a store at a time.
#[derive(Default)]
pub(super) struct Registry {
    slot: Mutex<Option<(u64, Arc<dyn SyncReplication>)>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Option<(u64, Arc<dyn SyncReplication>)>> {
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn current(&self) -> Option<Arc<dyn SyncReplication>> {
        self.lock()
            .as_ref()
            .map(|(_, replication)| Arc::clone(replication))
    }
}

/// Keeps a primary registered on its store; dropping it unregisters that primary. The
/// store holds the primary's [`SyncReplication`] only, never the primary itself, so the
/// two form no reference cycle.
pub struct Registration {
    store: Store,
    id: u64,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("store", &self.store.path())
            .finish_non_exhaustive()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut slot = self.store.inner.replication.lock();
        if slot.as_ref().is_some_and(|(id, _)| *id == self.id) {
            *slot = None;
        }
    }
}

/// A write committed in this store, whose receipt may still wait for replicas.
pub struct Committed {
    lsn: u64,
    durability: Durability,
    /// Set for a sync write: the replication it waits through, and until when.
    sync: Option<(Arc<dyn SyncReplication>, Instant)>,
}

impl std::fmt::Debug for Committed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committed")
            .field("lsn", &self.lsn)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl Committed {
    /// The write's LSN (committed locally: durable and visible here).
    #[must_use]
    pub fn lsn(&self) -> u64 {
        self.lsn
    }

    fn receipt(&self, acked_by: Vec<String>, degraded: bool) -> Receipt {
        Receipt {
            lsn: self.lsn,
            durability: self.durability,
            acked_by,
            degraded,
        }
    }

    /// Waits up to `patience` (never past the sync timeout) for the durability asked for.
    /// Returns `None` while a sync write's quorum is still awaited and its time is not up:
    /// callers that must stay interruptible wait in slices.
    ///
    /// # Errors
    /// [`ReplicationError::Timeout`] once the sync timeout passed without a quorum, if the
    /// primary's `on_timeout` is [`OnTimeout::Raise`]; [`ReplicationError::Deposed`] if the
    /// primary was deposed first (whatever `on_timeout` says: a deposed primary's write is
    /// never reported as merely degraded).
    pub fn wait(&self, patience: Duration) -> Result<Option<Receipt>> {
        let Some((replication, deadline)) = &self.sync else {
            return Ok(Some(self.receipt(Vec::new(), false)));
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some(acked_by) = replication.wait_quorum(self.lsn, patience.min(left))? {
            return Ok(Some(self.receipt(acked_by, false)));
        }
        if Instant::now() < *deadline {
            return Ok(None);
        }
        let acked_by = replication.acked_by(self.lsn);
        match replication.on_timeout() {
            OnTimeout::Raise => Err(ReplicationError::Timeout {
                lsn: self.lsn,
                acked_by,
            }
            .into()),
            OnTimeout::Degrade => {
                // Said where it shows even when the call returns no receipt (`del
                // table[key]`, `delete_prefix`, ...): never weaker silently.
                tracing::warn!(lsn = self.lsn, acked_by = ?acked_by, "a sync write was not acknowledged by its quorum in time: it is committed here and on the replicas named only (on_timeout=\"degrade\")");
                Ok(Some(self.receipt(acked_by, true)))
            }
        }
    }

    /// Waits until the durability asked for is reached or the sync timeout passes.
    ///
    /// # Errors
    /// As [`Committed::wait`].
    pub fn finish(&self) -> Result<Receipt> {
        loop {
            if let Some(receipt) = self.wait(Duration::MAX)? {
                return Ok(receipt);
            }
        }
    }

    /// The receipt of a wait given up early (Ctrl-C): a sync write not yet acknowledged
    /// by its quorum is marked degraded, with the replicas that hold it so far.
    #[must_use]
    pub fn abandoned(&self) -> Receipt {
        match &self.sync {
            None => self.receipt(Vec::new(), false),
            Some((replication, _)) => match replication.wait_quorum(self.lsn, Duration::ZERO) {
                Ok(Some(acked_by)) => self.receipt(acked_by, false),
                Ok(None) | Err(_) => self.receipt(replication.acked_by(self.lsn), true),
            },
        }
    }
}

impl Store {
    /// Registers the primary serving this store, for sync writes; it stays registered
    /// until the returned [`Registration`] is dropped.
    ///
    /// # Errors
    /// [`StoreError::AlreadyServed`] if another primary serves the store.
    pub fn serve_replication(&self, replication: Arc<dyn SyncReplication>) -> Result<Registration> {
        let registry = &self.inner.replication;
        let mut slot = registry.lock();
        if slot.is_some() {
            return Err(StoreError::AlreadyServed {
                path: self.inner.path.clone(),
            }
            .into());
        }
        let id = registry
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *slot = Some((id, replication));
        Ok(Registration {
            store: self.clone(),
            id,
        })
    }

    /// Who else uses this store, which closing this handle would stop (it is the last): a
    /// `Primary` serving it, or a `Replica` following into it (`None`: nobody, or other
    /// handles keep it open).
    #[must_use]
    pub fn in_use_by(&self) -> Option<&'static str> {
        if !self.is_last_handle() {
            None
        } else if self.inner.replication.current().is_some() {
            Some("a Primary serves it: close the Primary first, then the store")
        } else if self.is_follower() {
            Some("a Replica follows into it: close the Replica, which closes its store")
        } else {
            None
        }
    }

    /// The durability a commit writing `tables` gets, and the replication a sync one waits
    /// through: `requested`, or else the strongest default of those tables.
    pub(super) fn resolve_durability<'t>(
        &self,
        tables: impl IntoIterator<Item = &'t str>,
        requested: Option<Durability>,
    ) -> Result<(Durability, Option<Arc<dyn SyncReplication>>)> {
        let Some(replication) = self.inner.replication.current() else {
            return match requested {
                Some(Durability::Sync) => Err(ReplicationError::SyncUnavailable(format!(
                    "no Primary serves store {}: a sync write needs replicas to acknowledge it",
                    self.inner.path.display()
                ))
                .into()),
                _ => Ok((Durability::Local, None)),
            };
        };
        // Served by a primary, every write ships: one asked for as local is async.
        let sync = match requested {
            Some(requested) => requested == Durability::Sync,
            None => tables
                .into_iter()
                .any(|table| replication.default_for(table) == Durability::Sync),
        };
        let durability = if sync {
            Durability::Sync
        } else {
            Durability::Async
        };
        if durability == Durability::Sync {
            replication.check_sync()?;
            return Ok((durability, Some(replication)));
        }
        Ok((durability, None))
    }
}

/// A local commit at `lsn` with its durability, starting its sync timeout now.
pub(super) fn committed(
    lsn: u64,
    durability: Durability,
    replication: Option<Arc<dyn SyncReplication>>,
) -> Committed {
    let sync = replication.map(|replication| {
        let deadline = Instant::now()
            .checked_add(replication.sync_timeout())
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        (replication, deadline)
    });
    Committed {
        lsn,
        durability,
        sync,
    }
}
