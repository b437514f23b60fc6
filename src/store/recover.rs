//! Opening a store's files after any crash: the tables, the log, and the replay of the log
//! after the tables' last checkpoint.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use super::checkpoint::{CheckpointPolicy, Checkpointer, CHECKPOINT_BYTES};
use super::dirlock::LOCK_FILE;
use super::epochs::EpochHistory;
use super::holding::{HOLDS_BACK, MAX_HELD_ENTRIES};
use super::overlay::Overlay;
use super::tables::{Streamed, Tables};
use super::StoreOptions;
use crate::codec::Entry;
use crate::error::{Result, StoreError};
use crate::log::{read_owner, write_owner, LargeEntry, Log, LogFs, Owner, Replayed, OWNER_FILE};

/// Pieces of a large entry read ahead of the thread that applies them.
const PIECES_AHEAD: usize = 2;

/// A store's files, opened and recovered: what `Open` holds besides the directory lock.
pub(super) struct Parts {
    pub(super) checkpointer: Checkpointer,
    pub(super) tables: Arc<Tables>,
    pub(super) overlay: Arc<Overlay>,
    pub(super) log: Log,
    pub(super) next_lsn: u64,
    /// The highest epoch seen, as recorded.
    pub(super) epoch: u64,
    pub(super) history: EpochHistory,
    /// The store is marked as a replica's.
    pub(super) follower: bool,
    /// A follower that holds back: its last entries, not applied (see `Store::hold_back`).
    pub(super) held: Option<Vec<Entry>>,
}

impl Parts {
    /// Opens the tables and the log, replays the log after the tables' checkpoint, and
    /// starts the checkpointer. The replay is applied to redb without an fsync: the
    /// checkpointer makes it durable in the background (until then the log still holds it).
    pub(super) fn recover(
        path: &Path,
        options: &StoreOptions,
        log_fs: Box<dyn LogFs>,
    ) -> Result<Self> {
        let mut log_options = options.log_options();
        let owner_file = path.join("log").join(OWNER_FILE);
        let owner = read_owner(&*log_fs).map_err(|source| StoreError::Io {
            context: "cannot read the log's owner",
            path: owner_file.clone(),
            source,
        })?;
        // New tables (their file was missing) are rebuilt from this log alone: they take
        // its store's id as they are made, so that no crash leaves them with another.
        let (tables, meta) = Tables::open(
            &path.join("tables.redb"),
            options.follower,
            options.cache_bytes,
            Arc::clone(&log_options.unsynced),
            options.fsync,
            match owner {
                Owner::Store(id) => Some(id),
                Owner::Unknown | Owner::Damaged => None,
            },
        )?;
        claim_log(&*log_fs, &tables, owner, &owner_file)?;
        // A replica's log is appended without a sync per batch (see `Store::flush`).
        log_options.holes_are_torn = meta.follower;
        // A follower that holds back does not know which of its last entries its primary
        // confirmed: they wait until it says so again. A replica's store opened plainly
        // (to look at it, not to follow) shows everything its log holds durably.
        let holding = options.follower && meta.follower && tables.meta(HOLDS_BACK)? == Some(1);
        let mut held = VecDeque::new();
        let mut replay = Vec::new();
        let mut replay_bytes = 0usize;
        let mut replayed = 0u64;
        let log = Log::open(log_fs, log_options, meta.applied_lsn, |entry| {
            let entry = match entry {
                Replayed::Large(large) if !holding => {
                    // After what came before it, in a transaction of its own, in pieces.
                    apply_entries(&tables, &replay, false)?;
                    replay.clear();
                    replay_bytes = 0;
                    replayed += 1;
                    return apply_large(&tables, large, path);
                }
                entry => entry.into_entry()?,
            };
            let entry = if holding {
                held.push_back(entry);
                if held.len() as u64 <= MAX_HELD_ENTRIES {
                    return Ok(());
                }
                held.pop_front().expect("invariant: not empty")
            } else {
                entry
            };
            replay_bytes += entry
                .ops
                .iter()
                .map(|op| op.key.len() + op.value.as_ref().map_or(0, Vec::len))
                .sum::<usize>();
            replay.push(entry);
            replayed += 1;
            if replay.len() >= 4096 || replay_bytes >= 64 << 20 {
                apply_entries(&tables, &replay, false)?;
                replay.clear();
                replay_bytes = 0;
            }
            Ok(())
        })?;
        apply_entries(&tables, &replay, false)?;
        if replayed > 0 {
            tracing::info!(path = %path.display(), replayed, "replayed the log after the last checkpoint");
        }
        // A store written before epochs had a history was in epoch 1 all along.
        let pairs = tables.epochs()?;
        let history = if pairs.is_empty() {
            EpochHistory::default()
        } else {
            EpochHistory::new(pairs).map_err(|reason| StoreError::Corrupt {
                reason: format!("the epoch history is damaged: {reason}"),
            })?
        };
        let (applied, sums) = tables.sums()?;
        let tables = Arc::new(tables);
        let overlay = Arc::new(Overlay::new(applied, sums));
        let policy = CheckpointPolicy {
            entries: options.checkpoint_entries.max(1),
            bytes: CHECKPOINT_BYTES,
            interval: options.checkpoint_interval,
        };
        let checkpointer = Checkpointer::start(
            Arc::clone(&tables),
            Arc::clone(&overlay),
            policy,
            replayed > 0,
        )?;
        Ok(Self {
            checkpointer,
            overlay,
            next_lsn: log.next_lsn(),
            epoch: meta.epoch,
            history,
            follower: meta.follower,
            held: holding.then(|| held.into()),
            tables,
            log,
        })
    }
}

/// Makes sure the log in `fs`, whose owner's file `file` says `owner`, is the tables' own
/// (see [`Owner`]). A log that names no store is claimed; a log of another store is
/// refused, before anything of it is replayed.
fn claim_log(fs: &dyn LogFs, tables: &Tables, owner: Owner, file: &Path) -> Result<()> {
    let store_id = tables.store_id()?;
    let claim = match owner {
        Owner::Store(id) if id == store_id => return Ok(()),
        Owner::Store(id) => {
            let log = file.parent().unwrap_or(file);
            return Err(StoreError::Corrupt {
                reason: format!(
                    "the log in {} belongs to another store (id {id:016x}) than the tables \
                     beside it (id {store_id:016x}): replaying it would mix two histories. \
                     Put this store's own log back, or remove tables.redb to rebuild the \
                     store from this log alone",
                    log.display()
                ),
            }
            .into());
        }
        Owner::Damaged => {
            tracing::warn!(file = %file.display(), "the log's owner file is damaged: it is written again");
            store_id
        }
        Owner::Unknown => store_id,
    };
    write_owner(fs, claim).map_err(|source| StoreError::Io {
        context: "cannot record the log's owner",
        path: file.to_path_buf(),
        source,
    })?;
    Ok(())
}

fn apply_entries(tables: &Tables, entries: &[Entry], durable: bool) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    tables.apply(entries.iter().map(|e| (e.lsn, e.ops.as_slice())), durable)
}

/// Applies a large entry (a bulk load's) as its ops are read, on a thread of its own as a
/// bulk load applies them, so that reading the log and redb's inserts overlap and the
/// entry is never in memory whole. Committed (without an fsync) once every op is applied.
fn apply_large(tables: &Tables, mut large: LargeEntry<'_>, path: &Path) -> Result<()> {
    let lsn = large.lsn;
    let abort = AtomicBool::new(false);
    let abort = &abort;
    std::thread::scope(|scope| {
        let (pieces, received) = mpsc::sync_channel(PIECES_AHEAD);
        let applier = std::thread::Builder::new()
            .name("replikv-replay".into())
            .spawn_scoped(scope, move || tables.apply_streamed(&received, abort))
            .map_err(|source| StoreError::Io {
                context: "cannot start a thread to replay the log of",
                path: path.to_path_buf(),
                source,
            })?;
        let read = (|| -> Result<()> {
            while let Some(ops) = large.next_ops()? {
                if pieces.send(Streamed::Ops(ops)).is_err() {
                    // The applier stopped on an error, which its join returns.
                    return Ok(());
                }
            }
            // A failed send is the applier's error too.
            let _ = pieces.send(Streamed::Commit(lsn));
            Ok(())
        })();
        if read.is_err() {
            abort.store(true, Ordering::Release);
        }
        drop(pieces);
        let outcome = applier
            .join()
            .map_err(|_| StoreError::Internal("the log replay's thread panicked"))?;
        read.and(outcome.map(drop))
    })
}

/// What a store's directory holds (a replica's install stages under `incoming`, and moves
/// the old state to `replaced`; a primary keeps its slots, a replica its primary's
/// members, a fork its report): a directory with any of them is a store.
const STORE_ENTRIES: [&str; 8] = [
    LOCK_FILE,
    "log",
    "tables.redb",
    "incoming",
    "replaced",
    "replication-slots",
    "members",
    "diverged",
];

/// Refuses to make a store of an existing directory that holds other files and none of a
/// store's (a home or project directory given by mistake): the store's files would be
/// mixed with the user's. Dotfiles (`.DS_Store`, `.gitkeep`) and the `lost+found` of a
/// volume's root (a store on a volume of its own) do not count.
pub(super) fn refuse_foreign(path: &Path) -> Result<()> {
    let listing_failed = |source| StoreError::Io {
        context: "cannot list store directory",
        path: path.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        // Created by the open (a path that is not a directory fails there).
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(())
        }
        Err(e) => return Err(listing_failed(e).into()),
    };
    let mut other = None;
    for entry in entries {
        let name = entry.map_err(listing_failed)?.file_name();
        let name = name.to_string_lossy();
        if STORE_ENTRIES.contains(&name.as_ref()) {
            return Ok(());
        }
        if other.is_none() && !name.starts_with('.') && name != "lost+found" {
            other = Some(name.into_owned());
        }
    }
    match other {
        None => Ok(()),
        Some(example) => Err(StoreError::NotAStore {
            path: path.to_path_buf(),
            example,
        }
        .into()),
    }
}

/// Creates `path` and any missing parents, and fsyncs the directory that holds each one
/// created, so that a store created just before a power loss is still found after it.
pub(super) fn create_dirs(path: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut dir = path;
    while !dir.exists() {
        missing.push(dir);
        match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => dir = parent,
            _ => break,
        }
    }
    if missing.is_empty() {
        if !path.is_dir() {
            // ENOTDIR, so that Python gets an OSError with its errno and the path.
            return Err(std::io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        return Ok(());
    }
    std::fs::create_dir_all(path)?;
    for created in missing {
        let parent = created
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}
