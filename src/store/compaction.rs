//! Checkpoints on request, and compaction of the tables file: giving its free pages back
//! to the file system once deletes and updates have left them empty.

use std::time::{Duration, Instant};

use super::retention::LogHolds;
use std::sync::Arc;

use super::tables::{Compacted, Tables};
use super::{dir_io, Store};
use crate::error::{Result, StoreError};

/// How long compaction holds readers back while it waits for the read snapshots already
/// taken to end (a `get` holds one for microseconds), before it lets them run again.
const HOLD_READERS: Duration = Duration::from_millis(20);
/// How long compaction keeps trying while long reads (a snapshot sent to a replica, a scrub)
/// hold the tables, before it gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// The pause between the first two attempts; it doubles up to [`LONGEST_PAUSE`]. Each
/// attempt checkpoints, so writers' pending rows are moved each time.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_millis(500);

/// What [`Store::compact`] did to the tables file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Bytes the tables file took on disk before.
    pub bytes_before: u64,
    /// Bytes it takes after.
    pub bytes_after: u64,
}

/// What [`Store::try_compact`] keeps from one attempt to the next.
#[derive(Debug, Clone)]
pub struct CompactionAttempts {
    /// When the attempts stop, with [`StoreError::CompactionBlocked`].
    give_up: Instant,
    /// The sleep before the next attempt.
    pause: Duration,
    /// Attempts made so far.
    made: u32,
    /// The tables file's size when the first attempt began (before its checkpoint).
    bytes_before: Option<u64>,
}

impl CompactionAttempts {
    /// Before the first attempt: the minute of attempts starts now.
    #[must_use]
    pub fn new() -> Self {
        Self {
            give_up: Instant::now() + GIVE_UP_AFTER,
            pause: FIRST_PAUSE,
            made: 0,
            bytes_before: None,
        }
    }

    /// How long to sleep before the next attempt (it doubles, up to half a second).
    #[must_use]
    pub fn pause(&self) -> Duration {
        self.pause
    }
}

impl Default for CompactionAttempts {
    fn default() -> Self {
        Self::new()
    }
}

impl Compaction {
    /// Bytes given back to the file system.
    #[must_use]
    pub fn reclaimed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

impl Store {
    /// Moves pending writes into the tables and makes them durable (an fsync'ed redb
    /// commit). Writers wait meanwhile; readers do not.
    ///
    /// # Errors
    /// A closed store or a storage failure.
    pub fn checkpoint(&self) -> Result<()> {
        let mut exclusive = self.begin_exclusive()?;
        exclusive.ready_to_read()?;
        let done = self.with_open(|open| open.overlay.move_to_tables(&open.tables, true).map(drop));
        drop(exclusive);
        done
    }

    /// Checkpoints, applies the retention policy to the log (its dropped segments are gone
    /// when this returns), then gives the free pages of the tables file back to the file
    /// system (redb's compaction). Returns what it did to the tables file. Writers wait
    /// for each attempt; readers wait only while one runs, never get an error, and never
    /// see a partial state. While a long read holds the tables (an Arrow stream still
    /// referenced, a snapshot sent to a replica, a scrub), the attempts are spaced out and
    /// writers run between them.
    ///
    /// # Errors
    /// A closed store, a storage failure, or [`StoreError::CompactionBlocked`] if long
    /// reads kept the tables busy for a minute (nothing was changed then).
    pub fn compact(&self) -> Result<Compaction> {
        let mut attempts = CompactionAttempts::new();
        loop {
            if let Some(compaction) = self.try_compact(&mut attempts)? {
                return Ok(compaction);
            }
            std::thread::sleep(attempts.pause());
        }
    }

    /// One attempt of [`Store::compact`], which takes the writer lock (waiting for it);
    /// `None` when a long read held the tables: the caller sleeps for
    /// [`CompactionAttempts::pause`], writers running meanwhile, and tries again. A caller
    /// that must stay interruptible waits for the writer lock itself before each attempt.
    ///
    /// # Errors
    /// As [`Store::compact`]: [`StoreError::CompactionBlocked`] once the attempts have
    /// failed for a minute.
    pub fn try_compact(&self, attempts: &mut CompactionAttempts) -> Result<Option<Compaction>> {
        let tables_path = self.path().join("tables.redb");
        let size = || -> Result<u64> {
            let metadata =
                std::fs::metadata(&tables_path).map_err(dir_io("cannot stat", &tables_path))?;
            Ok(super::stats::allocated_bytes(&metadata))
        };
        if attempts.made > 0 {
            attempts.pause = (attempts.pause * 2).min(LONGEST_PAUSE);
        }
        attempts.made += 1;
        let mut exclusive = self.begin_exclusive()?;
        exclusive.ready_to_read()?;
        let first = attempts.bytes_before.is_none();
        if first {
            // Before its own checkpoint, which may grow the file: what it reclaims is
            // against what `stats()` said before the call.
            attempts.bytes_before = Some(size()?);
        }
        // With the writer lock held and nothing in flight, the overlay stays empty once
        // flushed: every row is in redb, and only this thread writes redb.
        self.with_open(|open| open.overlay.move_to_tables(&open.tables, true).map(drop))?;
        if first {
            // The checkpoint covers the whole log now: what the policy lets go goes too
            // (a primary serving the store applies it itself, with its slots).
            if self.inner.replication.current().is_none() {
                self.retain_log(self.retention_policy(), LogHolds::default())?;
            }
            // Dropped segments are cut down gently in the background (see `log::cut`);
            // the caller waits for the space now.
            self.with_open(|open| {
                open.log.reclaim_dropped();
                Ok(())
            })?;
        }
        if self.compact_holding_readers()? {
            drop(exclusive);
            return Ok(Some(Compaction {
                bytes_before: attempts.bytes_before.unwrap_or_default(),
                bytes_after: size()?,
            }));
        }
        // Writers (and the long read in the way) run before the next attempt.
        drop(exclusive);
        if Instant::now() >= attempts.give_up {
            return Err(StoreError::CompactionBlocked.into());
        }
        Ok(None)
    }

    /// Holds new readers back and compacts once the read snapshots already taken have
    /// ended, waiting up to [`HOLD_READERS`] for them; returns whether it compacted.
    fn compact_holding_readers(&self) -> Result<bool> {
        self.check_usable()?;
        let mut guard = self
            .inner
            .open
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(open) = guard.as_mut() else {
            return Err(self.closed_error(self.inner.pipeline.failure()));
        };
        // The checkpointer shares the tables: it stops while they are compacted (with the
        // writers held and the overlay moved, it has nothing to do meanwhile).
        open.checkpointer.stop();
        let compacted = match Arc::get_mut(&mut open.tables) {
            Some(tables) => compact_within(tables, HOLD_READERS),
            None => {
                unreachable!("only the open store holds its tables once its checkpointer stopped")
            }
        };
        let restarted = open.checkpointer.restart(&open.tables, &open.overlay);
        let compacted = compacted?;
        restarted.map(|()| compacted)
    }
}

/// Compacts `tables` once the read snapshots already taken have ended, waiting up to
/// `patience` for them; returns whether it compacted.
fn compact_within(tables: &mut Tables, patience: Duration) -> Result<bool> {
    let until = Instant::now() + patience;
    loop {
        match tables.compact()? {
            Compacted::Done => return Ok(true),
            Compacted::ReadersActive if Instant::now() >= until => return Ok(false),
            Compacted::ReadersActive => std::thread::sleep(Duration::from_micros(200)),
        }
    }
}
