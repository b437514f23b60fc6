//! Error types: one enum per subsystem under the umbrella [`Error`].

use std::io;
use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors from encoding and decoding keys, values and log entries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Bytes that do not decode as what they claim to be.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded ("key", "entry", "value").
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
}

/// Errors from the segmented change log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The requested LSN is older than the oldest entry still retained.
    // Said as the Python API says it, of the LSN a reader has (`since`): the one before.
    #[error(
        "log entries after LSN {} are no longer retained (oldest retained LSN is {oldest})",
        .requested.saturating_sub(1)
    )]
    Truncated {
        /// The first LSN the caller asked for.
        requested: u64,
        /// The oldest LSN still in the log.
        oldest: u64,
    },
    /// The log directory a reader followed was replaced (a snapshot was installed): the
    /// entries from `next_lsn` on may belong to another history.
    #[error("the log in {} was replaced while it was read (a snapshot was installed): entries from LSN {next_lsn} on may belong to another history; read it again", dir.display())]
    Replaced {
        /// The log directory.
        dir: PathBuf,
        /// The next LSN the reader would have handed out.
        next_lsn: u64,
    },
    /// A record that is damaged somewhere other than a torn tail.
    #[error("log segment {segment} is corrupt at offset {offset}: {reason}")]
    Corrupt {
        /// The segment file's name.
        segment: String,
        /// Byte offset of the bad record.
        offset: u64,
        /// What was wrong with it.
        reason: String,
    },
    /// The space for a write could not be reserved (a full disk): nothing of it was
    /// written, and the log is as it was.
    #[error("no room in the log ({context}): {source}; nothing was written")]
    NotWritten {
        /// What the log was reserving.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// An I/O failure on a log file.
    #[error("log I/O failed while {context}: {source}")]
    Io {
        /// What the log was doing.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// Errors from the store: its directory, its tables and its commits.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store was closed (by `close()`, or by itself after a fatal failure).
    #[error("store {path} is closed{}", cause.as_ref().map(|c| format!(": {c}")).unwrap_or_default())]
    Closed {
        /// The store's directory.
        path: PathBuf,
        /// Why it closed itself, if it was not closed on request.
        cause: Option<String>,
    },
    /// Writing to disk failed on the operating system's error `source` while a write
    /// waited, and the store closed itself (later calls get [`StoreError::Closed`]).
    /// Whether that write is durable is not known: it is whole or absent after a reopen,
    /// which replays what reached the log.
    #[error("store {path} closed itself: {cause}")]
    Failed {
        /// The store's directory.
        path: PathBuf,
        /// What failed.
        cause: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A write the log had no room for (a full disk), with the writes queued behind it:
    /// none of them was written, and the store stays open.
    #[error("store {path} could not take this write: {cause}; the store stays open (if its disk is full, free space and write again)")]
    NotWritten {
        /// The store's directory.
        path: PathBuf,
        /// What failed.
        cause: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Another process (or another open handle in this one) owns the directory.
    #[error("store {path} is already open {}", match (owner, holder) {
        (Some(pid), Some(holder)) if *pid == std::process::id() => format!("in this process {holder}"),
        (Some(pid), None) if *pid == std::process::id() => "in this process: close the other Store object first".to_owned(),
        (Some(pid), _) => match command {
            Some(command) => format!("in process {pid} ({command}): stop it first"),
            None => format!("in process {pid}: stop it first"),
        },
        (None, _) => "in another process".to_owned(),
    })]
    Locked {
        /// The store's directory.
        path: PathBuf,
        /// The pid written by the owner, when readable.
        owner: Option<u32>,
        /// The owner's command line, when it is another process that is still running.
        command: Option<String>,
        /// What holds it, when that is this process: "by a Replica: ...".
        holder: Option<&'static str>,
    },
    /// A directory that holds other files and none of a store's, given as a store's.
    #[error(
        "{} is not a replikv store: it holds other files (such as {example:?}), and a store \
         is not created among them: pass a new or empty directory, or an existing store's",
        path.display()
    )]
    NotAStore {
        /// The directory.
        path: PathBuf,
        /// One of the files it holds.
        example: String,
    },
    /// The store is already open in this process with other options than asked for.
    #[error(
        "store {path} is already open in this process with {option}={open}, but this \
             call asked for {option}={asked}: pass the same options to share the open store, \
             or close every handle of it first"
    )]
    OptionsDiffer {
        /// The store's directory.
        path: PathBuf,
        /// The first option that differs, by its Python name.
        option: &'static str,
        /// Its value in the open store.
        open: String,
        /// Its value in this call.
        asked: String,
    },
    /// A handle used in a process forked after it was opened (it belongs to the parent).
    #[error(
        "store {path} was opened by process {owner} and cannot be used in process {pid}, \
             which inherited it through fork(): open the store in the child after the fork, \
             or start workers with the 'spawn' method (multiprocessing.get_context(\"spawn\"))"
    )]
    Inherited {
        /// The store's directory.
        path: PathBuf,
        /// The process that opened it.
        owner: u32,
        /// The process that tried to use it.
        pid: u32,
    },
    /// A write on a read-only store.
    #[error("store {path} is read-only: {}", why.explain(path))]
    ReadOnly {
        /// The store's directory.
        path: PathBuf,
        /// Why it is read-only.
        why: ReadOnlyReason,
    },
    /// A key, value or entry over its configured limit.
    #[error("{what} of {size} bytes exceeds the limit of {limit} bytes set by max_{what}_bytes: \
             {}", if *what == "transaction" {
                 "split the write into smaller transactions, or open the Store with a larger max_transaction_bytes"
             } else {
                 "open the Store with a larger limit"
             })]
    TooLarge {
        /// "key", "value" or "transaction".
        what: &'static str,
        /// Its encoded size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A table name that is malformed or reserved.
    #[error("invalid table name {name:?}: {reason}")]
    InvalidTable {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A table whose rows cannot be exported as asked.
    #[error("table {table:?} cannot be exported: {reason}")]
    Unexportable {
        /// The table.
        table: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// A store option outside its allowed range.
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        /// The option's name.
        name: &'static str,
        /// The allowed range.
        reason: String,
    },
    /// A replicated entry that does not follow the store's last LSN.
    #[error("replicated entry {got} does not follow this store's last LSN (expected {expected})")]
    OutOfOrder {
        /// The LSN the store expected.
        expected: u64,
        /// The LSN it was given.
        got: u64,
    },
    /// A second primary for a store that a primary serves already.
    #[error("store {path} is already served by a Primary: close that one first")]
    AlreadyServed {
        /// The store's directory.
        path: PathBuf,
    },
    /// The writer lock stayed held by another thread's transaction (a bounded wait ended).
    #[error("another thread's transaction holds the writer lock")]
    Busy,
    /// Compaction found the tables held by long reads (an Arrow stream not read to its
    /// end, a snapshot sent to a replica, a scrub) for too long; nothing was changed.
    #[error("compaction gave up: long reads kept the tables busy for a minute (an ArrowStream from to_arrow_batches() still referenced: it keeps its snapshot until deleted; a snapshot being sent to a replica, a scrub); nothing was changed, try again once they end")]
    CompactionBlocked,
    /// A call that would wait forever on a lock the calling thread holds.
    #[error("{0}")]
    WouldDeadlock(&'static str),
    /// Long work that its caller stopped (Ctrl-C in Python) before it ended.
    #[error("{0} was stopped before it ended")]
    Stopped(&'static str),
    /// A stored row whose bytes are not what was written (its CRC does not match).
    #[error(
        "store is corrupt: table '{table}', key {}: {reason}; re-seed the store from a replica \
         (see the README, \"Damaged stores\")",
        crate::store::describe_key(key)
    )]
    DamagedRow {
        /// The table the row is in.
        table: String,
        /// The row's encoded key.
        key: Vec<u8>,
        /// What the check found.
        reason: String,
    },
    /// A thread of the store's stopped where it cannot (a bug in replikv).
    #[error("internal error (a bug in replikv): {0}")]
    Internal(&'static str),
    /// The redb file or the store's metadata is damaged or foreign.
    #[error("store is corrupt: {reason}")]
    Corrupt {
        /// What was found.
        reason: String,
    },
    /// An I/O failure on the store's directory or files.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What the store was doing.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A failure inside redb that is not corruption.
    #[error("storage engine failed: {0}")]
    Engine(#[source] redb::Error),
}

/// Why a store refuses a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadOnlyReason {
    /// The store of a running replica: writes go to its primary.
    Replica,
    /// A replica's directory opened as a plain store: writing would fork it from its
    /// primary's history, and it could never follow again.
    BelongsToReplica,
    /// Entries committed elsewhere are only accepted by a replica's store.
    NotAFollower,
}

impl ReadOnlyReason {
    fn explain(self, path: &std::path::Path) -> String {
        match self {
            ReadOnlyReason::Replica => "it is a replica's store; write to its primary".to_owned(),
            ReadOnlyReason::BelongsToReplica => format!(
                "it belongs to a replica (it follows a primary, and a write here would fork it \
                 from the primary's history). Reads work. To keep following, open it with \
                 replikv.Replica; to write to it as a standalone store, detach it first with \
                 replikv.Store.detach('{0}') or `replikv detach {0}` (it can then never follow \
                 that primary again); to make it the primary of a new epoch, promote it with \
                 `replikv promote {0}`",
                path.display()
            ),
            ReadOnlyReason::NotAFollower => {
                "only a replica's store accepts entries committed by a primary".to_owned()
            }
        }
    }
}

/// Errors of replication: the wire protocol, the handshake, and the histories of stores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// A frame or message that breaks the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: we speak {ours}, the peer {theirs}")]
    Version {
        /// Our version.
        ours: u8,
        /// The peer's.
        theirs: u8,
    },
    /// The token proof failed, or the peer is not allowed.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The peer's history forks from the primary's.
    #[error("diverged{}: {reason}", fork_lsn.map(|lsn| format!(" at LSN {lsn}")).unwrap_or_default())]
    Diverged {
        /// The first LSN at which the two histories differ, where it is known.
        fork_lsn: Option<u64>,
        /// What differs, for a person.
        reason: String,
    },
    /// The peer needs a snapshot before it can stream.
    #[error("needs a snapshot: {0}")]
    NeedsSnapshot(String),
    /// Writes are paused for a moment (a switchover): retry, at the new primary once it
    /// is named.
    #[error("writes are paused: {reason}")]
    Paused {
        /// Why, and where to write next.
        reason: String,
    },
    /// A newer epoch exists: the side that learns it is deposed or talking to a deposed one.
    #[error("fenced by epoch {epoch}: {reason}")]
    Fenced {
        /// The newest epoch involved.
        epoch: u64,
        /// Who is fenced and why, for a person.
        reason: String,
    },
    /// The primary learned it was deposed while a sync write waited for its quorum: the
    /// write is committed here, and the new primary may not have it (fenced, as
    /// [`ReplicationError::Fenced`], with the write's account).
    #[error(
        "fenced by epoch {epoch}: this primary was deposed (epoch {epoch} began elsewhere) \
         before a quorum acknowledged the sync write at LSN {lsn} (acknowledged by {}); it is \
         committed here only, and the new primary may not have it",
        if acked_by.is_empty() { "none".to_owned() } else { acked_by.join(", ") }
    )]
    Deposed {
        /// The newer epoch.
        epoch: u64,
        /// The write's LSN.
        lsn: u64,
        /// The counting replicas that had acknowledged it.
        acked_by: Vec<String>,
    },
    /// Refused: by the other side of a connection, or by a rule here (a promotion or a
    /// switchover that cannot proceed).
    #[error("refused: {reason}")]
    Refused {
        /// Why, for a person.
        reason: String,
    },
    /// A sync write whose quorum did not acknowledge it within the sync timeout. It is
    /// committed locally (and shipped as an async write would be).
    #[error(
        "sync write at LSN {lsn} was not acknowledged by a quorum of replicas within the \
         sync timeout (acknowledged by {}); it is committed on the primary: \
         Primary.wait_for(lsn, replicas=quorum) can confirm it later",
        if acked_by.is_empty() { "none".to_owned() } else { acked_by.join(", ") }
    )]
    Timeout {
        /// The write's LSN.
        lsn: u64,
        /// The counting replicas that had acknowledged it.
        acked_by: Vec<String>,
    },
    /// The primary stopped (closed, or handed over) while a sync write waited for its
    /// quorum: the write is committed on the primary, and a replica may or may not hold it.
    #[error(
        "the primary stopped before a quorum acknowledged the sync write at LSN {lsn} \
         (acknowledged by {}): it is committed here; a replica may or may not hold it",
        if acked_by.is_empty() { "none".to_owned() } else { acked_by.join(", ") }
    )]
    Stopped {
        /// The write's LSN.
        lsn: u64,
        /// The counting replicas that had acknowledged it.
        acked_by: Vec<String>,
    },
    /// A replica's log had no room for entries its primary sent: none of them was written,
    /// its store stays open, and the link is tried again later from the log's end.
    #[error("no room on this replica's disk for what its primary sent (retrying): {0}")]
    NoRoom(String),
    /// A sync write refused before it committed: it could not be acknowledged.
    #[error("sync write refused: {0}")]
    SyncUnavailable(String),
    /// A network failure under the protocol.
    #[error(transparent)]
    Net(#[from] NetError),
}

/// Errors of the network: listening, connecting, and links that break or go silent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The address cannot be listened on (in use, not ours, not permitted).
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address asked for.
        address: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The peer cannot be reached.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The peer's address.
        address: String,
        /// The operating system's error (`TimedOut` when it took too long).
        #[source]
        source: io::Error,
    },
    /// A link failed while in use.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// An address that is not `host:port` (refused before any attempt to connect or
    /// listen).
    #[error("{address:?} is not an address to {purpose}: {reason}")]
    Address {
        /// The address given.
        address: String,
        /// What it was given for: `"connect to"` or `"listen on"`.
        purpose: &'static str,
        /// What is wrong with it, and what is expected.
        reason: &'static str,
    },
    /// The peer sent nothing for too long.
    #[error("timed out: {context}")]
    TimedOut {
        /// What was awaited, and for how long.
        context: String,
    },
}

impl NetError {
    /// The operating system's error behind it, if any.
    #[must_use]
    pub fn io_source(&self) -> Option<&io::Error> {
        match self {
            NetError::Listen { source, .. }
            | NetError::Connect { source, .. }
            | NetError::Io { source, .. } => Some(source),
            NetError::TimedOut { .. } | NetError::Address { .. } => None,
        }
    }
}

/// Errors of the cache tier.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// A log entry that does not follow the last one processed.
    #[error("log entry {got} does not follow the last one processed ({processed})")]
    OutOfOrder {
        /// The last LSN processed.
        processed: u64,
        /// The LSN received.
        got: u64,
    },
    /// A node answered something that is not what the command returns.
    #[error("cache node {node}: {reason}")]
    Reply {
        /// The node's address.
        node: String,
        /// What was wrong.
        reason: String,
    },
    /// A setting that cannot work (a capacity of 0, a bad address).
    #[error("invalid cache setting: {0}")]
    Invalid(String),
    /// A node sent bytes that are not a RESP reply; its connection is dropped.
    #[error("cache node {node} broke the protocol: {reason}")]
    Protocol {
        /// The node's address.
        node: String,
        /// What was wrong.
        reason: String,
    },
    /// No cache node could take the request: each one is down or catching up.
    #[error("no cache node is available ({0})")]
    Unavailable(String),
}

/// Every error the core returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`CodecError`].
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// See [`LogError`].
    #[error(transparent)]
    Log(#[from] LogError),
    /// See [`StoreError`].
    #[error(transparent)]
    Store(#[from] StoreError),
    /// See [`ReplicationError`].
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    /// See [`NetError`].
    #[error(transparent)]
    Net(#[from] NetError),
    /// See [`CacheError`].
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl Error {
    /// Whether the write that failed with it left nothing behind (see
    /// [`LogError::NotWritten`]): the log is as it was, and may take the next write.
    #[must_use]
    pub fn is_not_written(&self) -> bool {
        matches!(
            self,
            Error::Log(LogError::NotWritten { .. }) | Error::Store(StoreError::NotWritten { .. })
        )
    }

    /// The operating system's error behind it, if any.
    #[must_use]
    pub fn io_source(&self) -> Option<&io::Error> {
        match self {
            Error::Log(LogError::Io { source, .. } | LogError::NotWritten { source, .. })
            | Error::Store(
                StoreError::Io { source, .. }
                | StoreError::Failed { source, .. }
                | StoreError::NotWritten { source, .. }
                | StoreError::Engine(redb::Error::Io(source)),
            ) => Some(source),
            Error::Net(err) | Error::Replication(ReplicationError::Net(err)) => err.io_source(),
            _ => None,
        }
    }
}

thread_local! {
    /// How many [`corrupt_on_panic`] calls this thread is inside: a panic there is an
    /// error the caller gets, not a crash to report on stderr.
    static CATCHING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Installs (once) a panic hook that stays silent for the panics [`corrupt_on_panic`]
/// turns into errors (a damaged page met by redb), and reports every other as before: a
/// user reading a damaged store got a backtrace on stderr before the `CorruptionError`
/// that says all of it.
fn quiet_caught_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.get() == 0 {
                report(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic inside it into [`StoreError::Corrupt`]: the storage engine
/// panics on some damaged pages, and such a panic must close the store with a clear error,
/// not leave its writers waiting for a leader that is gone.
pub(crate) fn corrupt_on_panic<T>(
    what: impl std::fmt::Display,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    quiet_caught_panics();
    CATCHING.set(CATCHING.get() + 1);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.set(CATCHING.get() - 1);
    outcome.unwrap_or_else(|payload| {
        let detail = payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(StoreError::Corrupt {
            reason: format!(
                "the storage engine stopped while {what} (damaged tables, or a bug): {detail}"
            ),
        }
        .into())
    })
}

impl From<redb::Error> for StoreError {
    fn from(err: redb::Error) -> Self {
        match err {
            redb::Error::Corrupted(reason) => StoreError::Corrupt { reason },
            // redb reports a file that is not a redb database as invalid data, and a page
            // pointer past the end of the file (damaged, or the file cut short) as a read
            // that ended early.
            redb::Error::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                StoreError::Corrupt {
                    reason: io.to_string(),
                }
            }
            other => StoreError::Engine(other),
        }
    }
}

macro_rules! redb_into_store_error {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(err: $t) -> Self {
                Error::Store(StoreError::from(redb::Error::from(err)))
            }
        }
    )*};
}
redb_into_store_error!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);
