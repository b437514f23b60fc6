//! A running cache node: the Redis-protocol server over a node's state and, when it follows
//! a primary, the log consumer that keeps it consistent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::invalidator::Invalidator;
use super::lru::{Bounds, OnWrite};
use super::node::{Node, NodeOptions};
use super::server::{Server, Shared};
use crate::error::{CacheError, Result};
use crate::net::runtime;
use crate::replication::replica::{Follower, FollowerOptions};

/// How often the node's INFO learns how its log link is doing.
const STATE_INTERVAL: Duration = Duration::from_millis(100);

/// How to start a cache node.
#[derive(Debug, Clone)]
pub struct CacheNodeOptions {
    /// Where it listens (`host:port`, port 0 picks one).
    pub listen: String,
    /// Entries at most.
    pub capacity: usize,
    /// Bytes at most (keys + values + a fixed overhead per entry), if bounded.
    pub max_bytes: Option<usize>,
    /// The TTL of an entry stored without one.
    pub ttl: Option<Duration>,
    /// What a write in the log does to a held key.
    pub on_write: OnWrite,
    /// The primary whose log it follows, if any.
    pub follow: Option<String>,
    /// The token of its clients and of the primary it follows.
    pub token: Option<String>,
    /// Its name on the primary (consumers keep no slot); `None`: `cache-<port>`, unique
    /// among the nodes of one machine (two links under one name displace each other).
    pub name: Option<String>,
}

impl CacheNodeOptions {
    /// Recent log writes remembered: enough to cover every held key being rewritten once,
    /// and never fewer than 64 Ki (a tombstone is a key's 64-bit hash and its LSN, a few
    /// tens of bytes with its slots whatever the key's size: 64 Ki take a few MiB).
    fn tombstones(&self) -> usize {
        self.capacity.max(1 << 16)
    }
}

/// A cache node serving on its port.
pub struct CacheNode {
    shared: Arc<Shared>,
    server: Server,
    follower: Option<Arc<Follower>>,
    reporter: Option<tokio::task::JoinHandle<()>>,
}

impl CacheNode {
    /// Starts listening, and following the primary's log if one is given.
    ///
    /// # Errors
    /// A capacity of 0 or a byte bound below one entry's overhead ([`CacheError::Invalid`]),
    /// or the address cannot be listened on.
    pub fn start(options: &CacheNodeOptions) -> Result<Self> {
        if options.capacity == 0 {
            return Err(CacheError::Invalid("capacity must be at least 1".into()).into());
        }
        super::lru::check_max_bytes(options.max_bytes)?;
        let node = Node::new(NodeOptions {
            bounds: Bounds {
                capacity: options.capacity,
                max_bytes: options.max_bytes,
                tombstones: options.tombstones(),
            },
            on_write: options.on_write,
            ttl_ms: options
                .ttl
                .map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)),
            token: options.token.clone(),
        });
        if let Some(primary) = &options.follow {
            crate::net::client::check_address(primary)?;
        }
        let shared = Shared::new(node);
        let server = Server::start(&options.listen, Arc::clone(&shared))?;
        shared.lock().following.own = Some(server.address());
        let (follower, reporter) = match &options.follow {
            None => (None, None),
            Some(primary) => {
                {
                    // A node that follows a log must never report "none" (a client would
                    // take it as having nothing to catch up), not even before its first
                    // state report.
                    let mut node = shared.lock();
                    node.following.primary = Some(primary.clone());
                    "connecting".clone_into(&mut node.following.state);
                }
                let consumer = Arc::new(Invalidator::new(Arc::clone(&shared)));
                let follower = Arc::new(Follower::start(
                    consumer,
                    FollowerOptions {
                        primary: primary.clone(),
                        token: options.token.clone(),
                        name: options
                            .name
                            .clone()
                            .unwrap_or_else(|| format!("cache-{}", server.address().port())),
                        max_backoff: Duration::from_secs(2),
                    },
                )?);
                let reporter = runtime().spawn(report(Arc::clone(&shared), Arc::clone(&follower)));
                (Some(follower), Some(reporter))
            }
        };
        Ok(Self {
            shared,
            server,
            follower,
            reporter,
        })
    }

    /// The address it listens on (the real port if 0 was asked).
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.server.address()
    }

    /// Follows the primary at `address` from now on (after a failover, say): the node
    /// resumes from its position when its history matches the new primary's, and flushes
    /// on a fork (or if the log it needs is gone there).
    ///
    /// # Errors
    /// The node follows no log ([`CacheError::Invalid`]), or `address` is not `host:port`.
    pub fn follow(&self, address: &str) -> Result<()> {
        let Some(follower) = &self.follower else {
            return Err(CacheError::Invalid(
                "this node follows no log: start it with follow= a primary".into(),
            )
            .into());
        };
        crate::net::client::check_address(address)?;
        if let Some(reason) = self.shared.lock().following.refuse(address) {
            return Err(CacheError::Invalid(reason).into());
        }
        repoint(&self.shared, follower, address);
        Ok(())
    }

    /// The node's state (locked while the guard lives).
    pub fn node(&self) -> std::sync::MutexGuard<'_, Node> {
        self.shared.lock()
    }

    /// Stops following and serving; returns once the port is free.
    pub fn close(&mut self) {
        if let Some(reporter) = self.reporter.take() {
            reporter.abort();
        }
        if let Some(follower) = self.follower.take() {
            follower.close();
        }
        self.server.stop();
        self.shared.lock().following.state = "stopped".into();
    }
}

impl Drop for CacheNode {
    fn drop(&mut self) {
        self.close();
    }
}

/// Points the node's link at `address`.
fn repoint(shared: &Shared, follower: &Follower, address: &str) {
    follower.follow(address);
    let mut node = shared.lock();
    node.following.primary = Some(address.to_owned());
    node.following.wanted = None;
}

/// Copies the follower's link state into the node, for INFO, and takes up a primary a
/// client asked the node to follow (`RKV.FOLLOW`).
async fn report(shared: Arc<Shared>, follower: Arc<Follower>) {
    let mut ticks = tokio::time::interval(STATE_INTERVAL);
    loop {
        ticks.tick().await;
        let wanted = shared.lock().following.wanted.take();
        if let Some(address) = wanted {
            tracing::info!(primary = %address, "a client asked the node to follow another primary");
            repoint(&shared, &follower, &address);
        }
        let state = follower.state();
        let mut node = shared.lock();
        state.state.name().clone_into(&mut node.following.state);
        node.following.last_error = state.last_error;
    }
}
