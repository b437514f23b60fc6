//! One node as a client sees it: its idle connections, its health and its round trips.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::health::Health;
use crate::error::Result;

/// Idle connections kept per node, at most; more concurrent callers open more, and the
/// extra ones close after use.
const MAX_IDLE: usize = 16;

/// A node of a cluster.
#[derive(Debug)]
pub(super) struct Member {
    /// Its address, as given.
    pub address: String,
    /// Connections no caller is using. A caller takes one for a whole exchange, so no
    /// two threads ever share a socket.
    idle: Mutex<Vec<Conn>>,
    /// Set once its client is closed: connections given back then are closed instead.
    closed: AtomicBool,
    health: Mutex<Health>,
    round_trips: AtomicU64,
}

/// Locks `mutex`. Nothing panics while holding these locks; if something did, the state
/// inside (a list of idle connections, a health record) is still whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Member {
    /// The node at `address`, up, with no connection yet.
    pub fn new(address: String) -> Self {
        Self {
            address,
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            health: Mutex::new(Health::default()),
            round_trips: AtomicU64::new(0),
        }
    }

    /// An idle connection, or a new one.
    pub fn take(&self, token: Option<&str>, timeout: Duration) -> Result<Conn> {
        let idle = lock(&self.idle).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => Conn::connect(&self.address, token, timeout),
        }
    }

    /// Gives back a connection whose exchange ended cleanly.
    pub fn give_back(&self, conn: Conn) {
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE && !self.closed.load(Ordering::Acquire) {
            idle.push(conn);
        }
    }

    /// Closes its idle connections, and each one in use once its exchange ends.
    pub fn close(&self) {
        let mut idle = lock(&self.idle);
        self.closed.store(true, Ordering::Release);
        idle.clear();
    }

    /// It failed: out for `retry_after`, and its idle connections are dropped (they would
    /// fail too once it restarts, and each failure would keep it out again).
    pub fn fail(&self, retry_after: Duration, error: String) {
        self.health().failed(Instant::now(), retry_after, error);
        lock(&self.idle).clear();
    }

    /// Its health record, locked.
    pub fn health(&self) -> MutexGuard<'_, Health> {
        lock(&self.health)
    }

    /// Counts a write of requests.
    pub fn sent(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes of requests so far (each one a round trip).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}
