//! A cache node's state behind its port: the versioned LRU, its settings, and what INFO
//! and `replikv status` report (the log it follows, connections). Pure: no socket, no
//! clock; the server locks it and tells it the time.

use std::fmt::Write as _;

use super::lru::{Bounds, Counters, OnWrite, Version, VersionedLru};

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Entries and bytes at most, and recent writes remembered.
    pub bounds: Bounds,
    /// What a write in the log does to a held key.
    pub on_write: OnWrite,
    /// The TTL of an entry stored without one (`None`: entries never expire by default).
    pub ttl_ms: Option<u64>,
    /// The token clients must give with `AUTH` (or `HELLO … AUTH`), if any.
    pub token: Option<String>,
}

/// How the node follows the log, as INFO shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Following {
    /// The primary's address, if it follows one.
    pub primary: Option<String>,
    /// `"connecting"`, `"streaming"`, `"stopped"`…
    pub state: String,
    /// Times the log it needed was gone, so it flushed and started again from the
    /// primary's position.
    pub log_lost: u64,
    /// Times a fork in the log (a new epoch that rewrote history) flushed it.
    pub forks: u64,
    /// Why the link last failed.
    pub last_error: Option<String>,
    /// The primary a client asked it to follow instead (`RKV.FOLLOW`), until the node's
    /// link takes it up.
    pub wanted: Option<String>,
    /// The node's own address (once it listens): it never follows itself.
    pub own: Option<std::net::SocketAddr>,
}

impl Following {
    /// Why the node may not follow `address`, if it may not: its own address.
    #[must_use]
    pub fn refuse(&self, address: &str) -> Option<String> {
        let own = self.own?;
        (address.parse::<std::net::SocketAddr>().ok() == Some(own))
            .then(|| format!("{address} is this cache node's own address: follow a primary"))
    }
}

/// A node's state.
#[derive(Debug)]
pub struct Node {
    /// The cache itself.
    pub lru: VersionedLru,
    /// Settings.
    pub options: NodeOptions,
    /// The log it follows.
    pub following: Following,
    /// Connections open now, and accepted so far.
    pub clients: (u64, u64),
    /// Requests answered so far (INFO's `total_commands_processed`), and those of them
    /// answered with an error: malformed, unknown, refused (`rejected_commands`). Every
    /// rejected request is counted in both, so the second never exceeds the first.
    pub commands: (u64, u64),
    /// Reply bytes encoded and not yet sent: now over all connections, and the most one
    /// connection has held so far.
    pub unsent: (u64, u64),
}

impl Node {
    /// An empty node.
    #[must_use]
    pub fn new(options: NodeOptions) -> Self {
        Self {
            lru: VersionedLru::new(options.bounds, options.on_write),
            options,
            following: Following::default(),
            clients: (0, 0),
            commands: (0, 0),
            unsent: (0, 0),
        }
    }

    /// The TTL for an entry stored with `asked` (or the node's default).
    #[must_use]
    pub fn ttl_for(&self, asked: Option<u64>) -> Option<u64> {
        asked.or(self.options.ttl_ms)
    }

    /// Counts one request answered, `rejected` if with an error.
    pub fn count_request(&mut self, rejected: bool) {
        self.commands.0 += 1;
        if rejected {
            self.commands.1 += 1;
        }
    }

    /// The log position processed so far.
    #[must_use]
    pub fn processed(&self) -> Version {
        self.lru.processed()
    }

    /// The counters, as INFO's field names pair them.
    #[must_use]
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        let Counters {
            hits,
            misses,
            evictions,
            expirations,
            invalidations,
            stale_fills_refused,
            flushes,
        } = self.lru.counters();
        let (tombstones, watermark) = self.lru.tombstones();
        let processed = self.processed();
        vec![
            ("keyspace_hits", hits),
            ("keyspace_misses", misses),
            ("evicted_keys", evictions),
            ("expired_keys", expirations),
            ("invalidations", invalidations),
            ("stale_fills_refused", stale_fills_refused),
            ("flushes", flushes),
            ("keys", self.lru.len() as u64),
            ("used_memory", self.lru.bytes() as u64),
            ("tombstones", tombstones as u64),
            ("tombstone_watermark", watermark),
            ("processed_epoch", processed.epoch),
            ("processed_lsn", processed.lsn),
            ("log_lost", self.following.log_lost),
            ("forks", self.following.forks),
            ("connected_clients", self.clients.0),
            ("total_connections_received", self.clients.1),
            ("total_commands_processed", self.commands.0),
            ("rejected_commands", self.commands.1),
            ("unsent_reply_bytes", self.unsent.0),
            ("max_unsent_reply_bytes", self.unsent.1),
        ]
    }

    /// The text of `INFO`, Redis's `# Section\r\nfield:value\r\n` layout.
    #[must_use]
    pub fn info(&self) -> String {
        let bounds = self.lru.bounds();
        let mut text = String::from("# Server\r\nredis_version:7.0.0\r\nreplikv_version:");
        text.push_str(env!("CARGO_PKG_VERSION"));
        text.push_str("\r\nredis_mode:standalone\r\n\r\n# Memory\r\n");
        let _ = write!(
            text,
            "used_memory:{}\r\nmaxmemory:{}\r\nmaxmemory_policy:allkeys-lru\r\nmaxkeys:{}\r\n",
            self.lru.bytes(),
            bounds.max_bytes.unwrap_or(0),
            bounds.capacity
        );
        text.push_str("\r\n# Replication\r\nrole:cache\r\n");
        let _ = write!(
            text,
            "follow_primary:{}\r\nfollow_state:{}\r\n",
            self.following.primary.as_deref().unwrap_or(""),
            if self.following.state.is_empty() {
                "none"
            } else {
                &self.following.state
            }
        );
        text.push_str("\r\n# Stats\r\n");
        for (name, value) in self.stats() {
            let _ = write!(text, "{name}:{value}\r\n");
        }
        text.push_str("\r\n# Keyspace\r\n");
        // As Redis: no line for an empty database.
        if !self.lru.is_empty() {
            let _ = write!(
                text,
                "db0:keys={},expires={},avg_ttl=0\r\n",
                self.lru.len(),
                self.lru.expiring()
            );
        }
        text
    }
}
