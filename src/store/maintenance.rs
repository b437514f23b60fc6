//! The store's background upkeep, off the writers' path: applying the retention policy to
//! the log. One thread per open store, which ends once the store is closed or dropped.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::retention::LogHolds;
use super::{Inner, Store};

/// How often the retention policy is applied: the log may outgrow its cap by what is
/// written in this time (and until the next durable checkpoint covers it).
const RETENTION_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps the maintenance thread alive; dropping it (with the store) ends the thread.
pub(super) struct Maintenance {
    _stop: Sender<()>,
}

impl Maintenance {
    /// Starts the thread for `inner`, unless its policy keeps the whole log.
    pub(super) fn start(inner: &Arc<Inner>) -> Option<Self> {
        let store = Store {
            inner: Arc::clone(inner),
            handle: Arc::default(),
        };
        if store.retention_policy().keeps_everything() {
            return None;
        }
        let (stop, stopped) = mpsc::channel();
        let weak = Arc::downgrade(inner);
        let spawned = std::thread::Builder::new()
            .name("replikv-retention".to_owned())
            .spawn(move || run(&weak, &stopped));
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "could not start log retention: the log is kept whole");
            return None;
        }
        Some(Self { _stop: stop })
    }
}

/// Applies the policy as the store opens (a store opened after a long pause trims its log
/// at once), then every [`RETENTION_INTERVAL`].
fn run(inner: &Weak<Inner>, stopped: &Receiver<()>) {
    let mut wait = Duration::ZERO;
    loop {
        match stopped.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        wait = RETENTION_INTERVAL;
        let Some(inner) = inner.upgrade() else { return };
        let store = Store {
            inner,
            handle: Arc::default(),
        };
        if store.is_closed() {
            return;
        }
        // A primary serving the store applies the policy itself, with its slots.
        if store.inner.replication.current().is_some() {
            continue;
        }
        if let Err(err) = store.retain_log(store.retention_policy(), LogHolds::default()) {
            if !store.is_closed() {
                tracing::warn!(path = %store.path().display(), error = %err, "log retention failed");
            }
        }
    }
}
