//! A cache cluster as one client sees it: keys spread over nodes by consistent hashing,
//! read and filled with their versions, and invalidated everywhere.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::conn::refused;
use super::member::Member;
use super::reply::Value;
use super::ring::Ring;
use super::routing::Answer;
use crate::cache::lru::Version;
use crate::error::{CacheError, Result};

/// Keys per `RKV.INVALIDATE` command at most (a long list goes as several, pipelined).
const KEYS_PER_INVALIDATE: usize = 1024;
/// ...and bytes of keys, well inside what a node takes in one request.
const INVALIDATE_BYTES: usize = 16 << 20;

/// Whether a node takes `command` as a request at all: an argument longer than its bound,
/// or a request past its bound on one request, is a malformed request to it, and it
/// closes the connection (the client would take that node for down). A key or a value
/// that long is never cached: it is left to the source.
fn a_node_takes(command: &[&[u8]]) -> bool {
    let max_bulk = crate::cache::resp::Limits::default().max_bulk;
    // Each argument's header and line ends: `$` and up to 20 digits, two CRLFs.
    let framed: usize = command.iter().map(|arg| arg.len() + 25).sum();
    command.iter().all(|arg| arg.len() <= max_bulk)
        && framed <= crate::cache::server::MAX_REQUEST_BYTES
}
/// The longest timeout and `retry_after` accepted.
const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// How to reach a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The nodes' addresses (`host:port`); a node's keys follow its address, so the same
    /// node must keep the same address.
    pub nodes: Vec<String>,
    /// The nodes' token (sent with `AUTH` on every new connection), if they have one.
    pub token: Option<String>,
    /// Points per node on the hash ring: more spread keys more evenly.
    pub vnodes: usize,
    /// How long a connect, a write or a read may take before the node counts as failed.
    pub timeout: Duration,
    /// How long a failed node is left out before it is tried again.
    pub retry_after: Duration,
}

impl Default for ClusterOptions {
    /// No nodes yet, no token, 160 points per node, a 1 s timeout, 5 s out after a failure.
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            token: None,
            vnodes: 160,
            timeout: Duration::from_secs(1),
            retry_after: Duration::from_secs(5),
        }
    }
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The cached value and its version.
    Hit {
        /// The value.
        value: Vec<u8>,
        /// The `(epoch, lsn)` of the snapshot it was read from.
        version: Version,
    },
    /// Not cached: read the source at `at.lsn` or later, then fill.
    Miss {
        /// The node's processed log position `(epoch, lsn)`: the source must have reached
        /// it for a fill to be accepted, and a fill of an older epoch is refused.
        at: Version,
    },
    /// No node could be asked: read the source.
    Unavailable,
}

/// A client of a cache cluster, shared by any number of threads.
#[derive(Debug)]
pub struct Cluster {
    pub(super) options: ClusterOptions,
    pub(super) ring: Ring,
    pub(super) members: Vec<Member>,
    /// The highest LSN this client has seen: what a returning node must have reached.
    pub(super) observed: AtomicU64,
}

/// `ttl` as the whole milliseconds of `PX`, rounded up (a node takes no 0).
fn px(ttl: Duration) -> String {
    let ms = ttl.as_nanos().div_ceil(1_000_000).max(1);
    u64::try_from(ms).unwrap_or(u64::MAX).to_string()
}

/// `args` with `PX ms` appended when there is a TTL.
fn with_ttl<'a>(mut args: Vec<&'a [u8]>, ttl: Option<&'a String>) -> Vec<&'a [u8]> {
    if let Some(ms) = ttl {
        args.extend([b"PX".as_slice(), ms.as_bytes()]);
    }
    args
}

impl Cluster {
    /// A client of the nodes in `options`; it connects on first use.
    ///
    /// # Errors
    /// [`NetError::Address`](crate::error::NetError::Address): a node that is not
    /// `host:port` (it would only ever fail, and its keys with it). [`CacheError::Invalid`]:
    /// no node, a node named twice, `vnodes` outside `1..=65536`, a zero timeout, or a
    /// timeout or `retry_after` over a day.
    pub fn new(options: ClusterOptions) -> Result<Self> {
        let invalid = |reason: &str| Err(CacheError::Invalid(reason.to_owned()).into());
        if options.nodes.is_empty() {
            return invalid("a cluster needs at least one node");
        }
        for node in &options.nodes {
            crate::net::client::check_address(node)?;
        }
        if (1..options.nodes.len()).any(|i| options.nodes[..i].contains(&options.nodes[i])) {
            return invalid("a node is named twice");
        }
        if !(1..=1 << 16).contains(&options.vnodes) {
            return invalid("vnodes must be within 1..=65536");
        }
        if options.timeout.is_zero() || options.timeout > MAX_WAIT {
            return invalid("the timeout must be more than 0 and at most a day");
        }
        if options.retry_after > MAX_WAIT {
            return invalid("retry_after must be at most a day");
        }
        Ok(Self {
            ring: Ring::new(&options.nodes, options.vnodes),
            members: options.nodes.iter().cloned().map(Member::new).collect(),
            options,
            observed: AtomicU64::new(0),
        })
    }

    /// Closes its connections to the nodes: the idle ones now, those in use once their
    /// exchange ends. A call after it connects for itself only.
    pub fn close(&self) {
        self.members.iter().for_each(Member::close);
    }

    /// Reads `key` (`RKV.GET`) from its owner, or from the next node if the owner fails.
    ///
    /// # Errors
    /// [`CacheError::Reply`]: the node refused the command or the token.
    pub fn get(&self, key: &[u8]) -> Result<Lookup> {
        let command = [b"RKV.GET".as_slice(), key];
        if !a_node_takes(&command) {
            return Ok(Lookup::Unavailable);
        }
        match self.on_owner(key, &command)? {
            Some((node, reply)) => self.lookup(node, reply),
            None => Ok(Lookup::Unavailable),
        }
    }

    /// Reads many keys, in one pipelined round trip per node (per 64 KiB of requests);
    /// the lookups come in the order of `keys`. Keys whose node fails are read once more
    /// from their next node.
    ///
    /// # Errors
    /// As [`Cluster::get`].
    pub fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Lookup>> {
        let mut lookups = vec![Lookup::Unavailable; keys.len()];
        let mut pending: Vec<usize> = (0..keys.len()).collect();
        for _attempt in 0..2 {
            // Per node, the indexes of the keys it takes.
            let mut taken: Vec<Vec<usize>> = vec![Vec::new(); self.members.len()];
            for index in pending.drain(..) {
                if !a_node_takes(&[b"RKV.GET", &keys[index]]) {
                    continue; // never cached: left unavailable, to the source
                }
                if let Some(node) = self.owner(&keys[index]) {
                    taken[node].push(index);
                }
            }
            let commands: Vec<(usize, Vec<[&[u8]; 2]>)> = taken
                .iter()
                .enumerate()
                .filter(|(_, indexes)| !indexes.is_empty())
                .map(|(node, indexes)| {
                    let gets = indexes.iter().map(|&i| [b"RKV.GET".as_slice(), &keys[i]]);
                    (node, gets.collect())
                })
                .collect();
            let errands: Vec<(usize, &[[&[u8]; 2]])> = commands
                .iter()
                .map(|(node, gets)| (*node, gets.as_slice()))
                .collect();
            for (&(node, _), answer) in errands.iter().zip(self.fan_out(&errands)) {
                match answer? {
                    Answer::Replies(replies) => {
                        for (&index, reply) in taken[node].iter().zip(replies) {
                            lookups[index] = self.lookup(node, reply)?;
                        }
                    }
                    Answer::Failed => pending.extend(&taken[node]),
                }
            }
            if pending.is_empty() {
                break;
            }
        }
        Ok(lookups)
    }

    /// Offers `value`, read from a snapshot at `version`, to `key`'s node (`RKV.FILL`):
    /// stored only if the node knows no newer write or value of the key. Returns whether
    /// it was stored (`false` also when no node could be reached).
    ///
    /// # Errors
    /// [`CacheError::Reply`]: the node refused it (a value over its byte bound, a bad
    /// token).
    pub fn fill(
        &self,
        key: &[u8],
        version: Version,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        self.observe(version.lsn);
        let (epoch, lsn) = (version.epoch.to_string(), version.lsn.to_string());
        let ttl = ttl.map(px);
        let command = with_ttl(
            vec![
                b"RKV.FILL".as_slice(),
                key,
                epoch.as_bytes(),
                lsn.as_bytes(),
                value,
            ],
            ttl.as_ref(),
        );
        if !a_node_takes(&command) {
            return Ok(false);
        }
        match self.on_owner(key, &command)? {
            Some((_, Value::Int(1))) => Ok(true),
            Some((_, Value::Int(0))) | None => Ok(false),
            Some((node, other)) => Err(self.refused(node, "RKV.FILL", &other)),
        }
    }

    /// Stores `value` at `key` with a plain `SET` (version `(0, 0)`: any fill replaces
    /// it, and any write of the key in the log drops it).
    ///
    /// # Errors
    /// [`CacheError::Unavailable`] when no node could be reached; [`CacheError::Reply`].
    pub fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let ttl = ttl.map(px);
        let command = with_ttl(vec![b"SET".as_slice(), key, value], ttl.as_ref());
        if !a_node_takes(&command) {
            return Err(CacheError::Invalid(format!(
                "a key of {} bytes with a value of {} bytes is more than a cache node takes \
                 in one request (arguments of 64 MiB, requests of 96 MiB)",
                key.len(),
                value.len()
            ))
            .into());
        }
        match self.on_owner(key, &command)? {
            Some((_, Value::Status(_))) => Ok(()),
            Some((node, other)) => Err(self.refused(node, "SET", &other)),
            None => Err(self.unavailable()),
        }
    }

    /// Drops `keys` on every node that is not down (a key may sit on the node that took
    /// it while its owner was down), in one round trip per node; returns how many were
    /// held. A node that is down gets nothing: one that follows the log catches up before
    /// it serves again, one that does not may still hold the keys.
    ///
    /// # Errors
    /// [`CacheError::Unavailable`] when no node answered; [`CacheError::Reply`].
    pub fn invalidate(&self, keys: &[Vec<u8>]) -> Result<u64> {
        // A key no node takes was never cached.
        let keys: Vec<&Vec<u8>> = keys
            .iter()
            .filter(|key| a_node_takes(&[b"RKV.INVALIDATE", key]))
            .collect();
        if keys.is_empty() {
            return Ok(0);
        }
        // Commands of up to KEYS_PER_INVALIDATE keys and INVALIDATE_BYTES of them.
        let mut commands: Vec<Vec<&[u8]>> = Vec::new();
        let mut bytes = 0;
        for key in keys {
            match commands.last_mut() {
                Some(command)
                    if command.len() <= KEYS_PER_INVALIDATE
                        && bytes + key.len() <= INVALIDATE_BYTES =>
                {
                    command.push(key);
                    bytes += key.len();
                }
                _ => {
                    commands.push(vec![b"RKV.INVALIDATE".as_slice(), key]);
                    bytes = key.len();
                }
            }
        }
        self.count_everywhere("RKV.INVALIDATE", &commands)
    }

    /// Drops every key starting with `prefix` on every node that is not down; returns
    /// how many were held.
    ///
    /// # Errors
    /// As [`Cluster::invalidate`].
    pub fn invalidate_prefix(&self, prefix: &[u8]) -> Result<u64> {
        let command = vec![b"RKV.INVALIDATEPREFIX".as_slice(), prefix];
        if !a_node_takes(&command) {
            return Ok(0); // no key that long was ever cached
        }
        self.count_everywhere("RKV.INVALIDATEPREFIX", &[command])
    }

    /// Records that this client has seen `lsn` (a write's receipt, a read's snapshot):
    /// a node back from a failure serves again only once it has processed that far.
    /// Reads and fills record what they see themselves.
    pub fn observe(&self, lsn: u64) {
        self.observed.fetch_max(lsn, Ordering::AcqRel);
    }

    /// The highest LSN this client has seen.
    #[must_use]
    pub fn observed(&self) -> u64 {
        self.observed.load(Ordering::Acquire)
    }

    /// Sums the counts that `commands` return on every node that answers.
    fn count_everywhere(&self, name: &str, commands: &[Vec<&[u8]>]) -> Result<u64> {
        let mut total = 0;
        for (node, replies) in self.everywhere(commands)? {
            for reply in replies {
                match reply {
                    Value::Int(count) => total += u64::try_from(count).unwrap_or(0),
                    other => return Err(self.refused(node, name, &other)),
                }
            }
        }
        Ok(total)
    }

    /// What an `RKV.GET` reply `[value|nil, epoch, lsn]` says.
    fn lookup(&self, node: usize, reply: Value) -> Result<Lookup> {
        let items = match reply {
            Value::Array(items) => <[Value; 3]>::try_from(items).map_err(Value::Array),
            other => Err(other),
        };
        let (value, version) = match items {
            Ok([value, Value::Int(epoch), Value::Int(lsn)]) if epoch >= 0 && lsn >= 0 => {
                let (epoch, lsn) = (epoch.unsigned_abs(), lsn.unsigned_abs());
                (value, Version { epoch, lsn })
            }
            Ok(items) => return Err(self.refused(node, "RKV.GET", &Value::Array(items.into()))),
            Err(other) => return Err(self.refused(node, "RKV.GET", &other)),
        };
        self.observe(version.lsn);
        match value {
            Value::Bulk(value) => Ok(Lookup::Hit { value, version }),
            Value::Nil => Ok(Lookup::Miss { at: version }),
            other => Err(self.refused(node, "RKV.GET", &other)),
        }
    }

    fn refused(&self, node: usize, command: &str, reply: &Value) -> crate::Error {
        refused(&self.members[node].address, command, reply).into()
    }
}
