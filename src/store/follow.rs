//! A follower store: the primary's entries appended with their own LSNs, the lineage it
//! shares with its primary, the read-only guard on user writes, and the [`LogConsumer`]
//! the replication glue drives (what it reports as flushed is what its log holds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::commit::Until;
use super::install::Installer;
use super::tables::TableSum;
use super::Checksum;
use super::{dir_io, Store, StoreOptions};
use crate::codec::{decode_entry, Entry};
use crate::error::{ReadOnlyReason, ReplicationError, Result, StoreError};
use crate::follow::{Divergence, LogConsumer, Position, Role, SnapshotSink, SnapshotStart, SumsAt};

impl Store {
    pub(super) fn read_only(&self, why: ReadOnlyReason) -> crate::Error {
        StoreError::ReadOnly {
            path: self.inner.path.clone(),
            why,
        }
        .into()
    }

    /// Refuses user writes while they are paused (a switchover: retryable), on a replica's
    /// store, and on a deposed primary's.
    pub(super) fn check_writable(&self) -> Result<()> {
        if let Some(reason) = self.inner.pipeline.paused() {
            return Err(crate::error::ReplicationError::Paused { reason }.into());
        }
        match self.read_only_reason() {
            Some(why) => Err(self.read_only(why)),
            None => self.check_epoch(),
        }
    }

    /// Why user writes are refused (a replica's store), or `None` if they are accepted.
    #[must_use]
    pub fn read_only_reason(&self) -> Option<ReadOnlyReason> {
        *self
            .inner
            .read_only
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this store follows a primary (it takes replicated entries, not user writes).
    pub(super) fn is_follower(&self) -> bool {
        self.read_only_reason() == Some(ReadOnlyReason::Replica)
    }

    /// Makes a replica's store (a follower, or one opened plainly) a primary's, at run time
    /// (a promotion): durably unmarked as a replica's, it takes user writes and no
    /// replicated entries from now on. Its lineage stays, so the other replicas can follow
    /// it. The caller begins a new epoch next.
    ///
    /// # Errors
    /// [`StoreError::ReadOnly`] unless it is a replica's store; a closed store or a storage
    /// failure (it stays a replica's then).
    pub fn stop_following(&self) -> Result<()> {
        let replicas = [ReadOnlyReason::Replica, ReadOnlyReason::BelongsToReplica];
        if !replicas.contains(
            &self
                .read_only_reason()
                .unwrap_or(ReadOnlyReason::NotAFollower),
        ) {
            return Err(self.read_only(ReadOnlyReason::NotAFollower));
        }
        // What it held back may hold an acknowledged sync write: it is the primary's now.
        self.sync_replicated()?;
        self.release_replicated(u64::MAX)?;
        let mut exclusive = self.begin_exclusive()?;
        exclusive.ready_to_read()?;
        self.with_open(|open| open.tables.set_follower_flag(false))?;
        *self
            .inner
            .read_only
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.inner.marked_follower.store(false, Ordering::Release);
        drop(exclusive);
        Ok(())
    }

    /// Appends entries committed by a primary, in LSN order, keeping their LSNs, epochs and
    /// timestamps, and returns the last LSN readers see once they are written and applied
    /// (unless held back: see [`Store::hold_back`]). Each entry is applied whole. They are durable (and visible to the log's readers) once a sync that began
    /// later ends ([`Store::sync_replicated`]). Only a follower store accepts them.
    ///
    /// # Errors
    /// [`StoreError::ReadOnly`] on a store that is not a follower, [`StoreError::OutOfOrder`]
    /// for a gap or a repeat, a payload that does not decode, a closed store.
    pub fn append_replicated(&self, payloads: &[Vec<u8>]) -> Result<u64> {
        self.check_usable()?;
        if !self.is_follower() {
            return Err(self.read_only(ReadOnlyReason::NotAFollower));
        }
        // Decode every payload before enqueuing any: a bad one refuses the whole call.
        let entries = payloads
            .iter()
            .map(|payload| decode_entry(payload))
            .collect::<Result<Vec<_>, _>>()?;
        entries.iter().try_for_each(check_replicated)?;
        if !entries.is_empty() {
            self.mark_follower(None)?;
        }
        let mut last = None;
        let mut refused = None;
        // Bytes of records enqueued since the last wait (see `APPEND_PIECE_BYTES`).
        let mut piece = 0usize;
        for (payload, entry) in payloads.iter().zip(entries) {
            let lsn = entry.lsn;
            let record = payload.len() + crate::codec::RECORD_HEADER_LEN;
            if let Some(last) = last.filter(|_| piece + record > APPEND_PIECE_BYTES) {
                self.wait_own(last, Until::Written)?;
                piece = 0;
            }
            piece += record;
            let own = self.own_epoch();
            if entry.epoch < own {
                refused = Some(
                    ReplicationError::Diverged {
                        fork_lsn: Some(lsn),
                        reason: format!(
                            "entry {lsn} is from epoch {}, older than epoch {own} that this \
                             log already reached",
                            entry.epoch
                        ),
                    }
                    .into(),
                );
                break;
            }
            if entry.epoch > own {
                // The epoch's start is durable before its first entry is appended: the
                // history never misses an epoch the log holds.
                if let Some(lsn) = last {
                    self.wait_own(lsn, Until::Synced)?;
                }
                self.begin_epoch_at(entry.epoch, lsn)?;
            }
            let enqueued = self.inner.pipeline.enqueue_replicated(
                payload,
                lsn,
                entry.epoch,
                entry.timestamp_ms,
                entry.ops,
            );
            match enqueued {
                Ok(()) => last = Some(lsn),
                Err(r) => {
                    refused = Some(self.refused(r));
                    break;
                }
            }
        }
        // What was enqueued is written (and applied, unless held back) even when a later
        // entry was refused; or the log had no room for its last piece, and none of that
        // piece was (the follow loop appends it again once it resumes from the log's end).
        if let Some(lsn) = last {
            self.wait_own(lsn, Until::Written)?;
        }
        match refused {
            Some(err) => Err(err),
            None => Ok(self.readable_lsn()),
        }
    }

    /// Makes every replicated entry appended so far durable (and visible to the log's
    /// readers, unless held back); returns the last LSN, which is then durable.
    ///
    /// # Errors
    /// A failed fdatasync (the store closes itself) or a closed store.
    pub fn sync_replicated(&self) -> Result<u64> {
        self.check_usable()?;
        self.wait(self.inner.pipeline.last_assigned(), Until::Synced)?;
        Ok(self.synced_lsn())
    }

    /// The identity of this store's history: random at creation, inherited by replicas
    /// from their primary. A snapshot may only replace a store of the same lineage (or an
    /// empty one).
    ///
    /// # Errors
    /// A closed store or a storage failure.
    pub fn lineage(&self) -> Result<u64> {
        self.with_open(|open| Ok(open.tables.meta("lineage")?.unwrap_or(0)))
    }

    /// A random number this store directory was given when it was created, never
    /// inherited (unlike [`Store::lineage`]): a replica says it in its hellos, so that its
    /// primary tells a reconnection of the same replica, even from a restarted process,
    /// from another replica given the same name.
    ///
    /// # Errors
    /// A closed store or a storage failure.
    pub fn store_id(&self) -> Result<u64> {
        self.with_open(|open| open.tables.store_id())
    }

    /// Durably remembers what the primary's heartbeats said a promotion must reach: its
    /// quorum and how many replicas count toward it (read back by
    /// [`Store::primary_quorum`], also after a restart with the primary gone), and whether
    /// this store, fsyncing, was one of them.
    ///
    /// # Errors
    /// A closed store or a storage failure.
    pub fn remember_primary_quorum(&self, quorum: u64, members: u64) -> Result<()> {
        let mut exclusive = self.begin_exclusive()?;
        exclusive.ready_to_read()?;
        let written = self.with_open(|open| {
            open.tables.write_meta(&[
                ("primary_quorum", quorum),
                ("primary_members", members),
                ("counted", u64::from(self.inner.options.fsync)),
            ])
        });
        drop(exclusive);
        written
    }

    /// The primary's `(quorum, members)` as last remembered, `(0, 0)` if never heard.
    ///
    /// # Errors
    /// A closed store or a storage failure.
    pub fn primary_quorum(&self) -> Result<(u64, u64)> {
        self.with_open(|open| {
            Ok((
                open.tables.meta("primary_quorum")?.unwrap_or(0),
                open.tables.meta("primary_members")?.unwrap_or(0),
            ))
        })
    }

    /// Whether this store fsynced while it followed (so counted toward the quorum), as
    /// remembered with the primary's quorum.
    ///
    /// # Errors
    /// A closed store or a storage failure.
    pub fn was_counted(&self) -> Result<bool> {
        self.with_open(|open| Ok(open.tables.meta("counted")? == Some(1)))
    }

    /// Takes on the lineage of the primary an empty follower starts to follow.
    ///
    /// # Errors
    /// [`StoreError::ReadOnly`] unless this is an empty follower; storage failures.
    pub fn adopt_lineage(&self, lineage: u64) -> Result<()> {
        if !self.is_follower() || self.last_lsn() != 0 {
            return Err(self.read_only(ReadOnlyReason::NotAFollower));
        }
        self.mark_follower(Some(lineage))
    }

    /// Durably marks this follower's tables as a replica's (and adopts `lineage` if given),
    /// before it first takes on a primary's history. Marking twice writes nothing.
    pub(super) fn mark_follower(&self, lineage: Option<u64>) -> Result<()> {
        if lineage.is_none() && self.inner.marked_follower.load(Ordering::Acquire) {
            return Ok(());
        }
        // The writer lock with nothing in flight: this thread alone writes redb.
        let mut exclusive = self.begin_exclusive()?;
        exclusive.ready_to_read()?;
        let marked = self.with_open(|open| open.tables.set_follower(lineage));
        drop(exclusive);
        marked?;
        self.inner.marked_follower.store(true, Ordering::Release);
        Ok(())
    }

    /// Fails with [`StoreError::Io`] (not found, with `context`) unless `path` holds a
    /// store: for operations on an existing store, which must not create one at a
    /// mistyped path.
    ///
    /// # Errors
    /// As said.
    pub fn must_exist(path: &Path, context: &'static str) -> Result<()> {
        if path.join("tables.redb").is_file() {
            return Ok(());
        }
        Err(dir_io(context, path)(std::io::ErrorKind::NotFound.into()).into())
    }

    /// Makes the replica's store at `path` a standalone, writable store with a history of
    /// its own: it can never follow its primary again (a new replica re-seeds instead).
    /// Returns `false` (and changes nothing) if the store did not belong to a replica.
    ///
    /// # Errors
    /// [`StoreError::Io`] (not found) if `path` holds no store, [`StoreError::Locked`] while
    /// a replica or another handle has it open, I/O failures, corruption.
    pub fn detach(path: impl AsRef<Path>) -> Result<bool> {
        let path = path.as_ref();
        Self::must_exist(path, "no replikv store to detach at")?;
        let store = Self::open(path, StoreOptions::default())?;
        let detached = store.read_only_reason() == Some(ReadOnlyReason::BelongsToReplica);
        if detached {
            let mut exclusive = store.begin_exclusive()?;
            exclusive.ready_to_read()?;
            store.with_open(|open| open.tables.detach())?;
            drop(exclusive);
            tracing::warn!(path = %path.display(), "detached a replica's store: it is writable and can never follow its primary again");
        }
        store.close()?;
        Ok(detached)
    }
}

impl LogConsumer for Store {
    fn role(&self) -> Role {
        Role::Replica
    }

    fn durable(&self) -> bool {
        self.options().fsync
    }

    /// A replica that followed with `fsync=False` was no member of the quorum that
    /// acknowledged a write, whatever it says once restarted with `fsync=True`.
    fn counted_member(&self) -> bool {
        self.options().fsync && self.was_counted().unwrap_or(false)
    }

    /// A replica's store holds back (see [`Store::hold_back`]) from its first position on.
    fn position(&self) -> Result<Position> {
        // Where a resume starts: everything appended is made durable first, so that the
        // log holds exactly up to the position reported.
        let lsn = self.sync_replicated()?;
        let confirmed = self.readable_lsn().min(lsn);
        let held = if self.is_follower() {
            self.hold_back()?;
            // This primary may not ship ahead: until it does, a crash hides nothing.
            self.forget_unconfirmed()?;
            Some(self.held_ids(confirmed)?)
        } else {
            None
        };
        let id = match held.as_ref().and_then(|ids| ids.last()) {
            Some((_, id)) => *id,
            None => self.entry_id(lsn)?.unwrap_or((0, 0)),
        };
        Ok(Position {
            flushed_lsn: lsn,
            applied_lsn: confirmed,
            id,
            held,
            lineage: self.lineage()?,
            epoch: self.epoch(),
            history: self.epoch_history().pairs().to_vec(),
            store_id: self.store_id()?,
        })
    }

    fn join_lineage(&self, lineage: u64) -> Result<()> {
        self.adopt_lineage(lineage)
    }

    fn raise_epoch(&self, epoch: u64, _primary_last_lsn: u64) -> Result<()> {
        // What this log holds past a fork is found when the handshake matches it.
        Store::raise_epoch(self, epoch).map(drop)
    }

    fn remember_quorum(&self, quorum: u64, members: u64) -> Result<()> {
        self.remember_primary_quorum(quorum, members)
    }

    fn apply(&self, payloads: &[Vec<u8>]) -> Result<(u64, u64)> {
        let applied = self.append_replicated(payloads)?;
        Ok((self.synced_lsn(), applied))
    }

    fn expect_unconfirmed(&self) -> Result<()> {
        Store::expect_unconfirmed(self)
    }

    fn release(&self, lsn: u64) -> Result<u64> {
        self.release_replicated(lsn)
    }

    fn cut(&self, lsn: u64) -> Result<()> {
        self.cut_replicated(lsn)
    }

    fn sync(&self) -> Result<u64> {
        self.sync_replicated()
    }

    fn begin_snapshot(&self, start: SnapshotStart) -> Result<Box<dyn SnapshotSink>> {
        let installer = self.begin_install(start)?;
        Ok(Box::new(installer))
    }

    fn divergence(&self, fork_lsn: u64) -> Result<Divergence> {
        Store::divergence(self, fork_lsn)
    }

    /// The report goes to `diverged/` in the store's directory.
    fn resync(&self, fork_lsn: u64, primary: &str) -> Result<Option<PathBuf>> {
        let report_dir = self.path().join("diverged");
        let report = self.write_divergence_report(fork_lsn, primary, &report_dir)?;
        self.discard_all()?;
        Ok(Some(report))
    }

    fn recent_sums(&self, since_lsn: u64) -> Result<Vec<SumsAt>> {
        Ok(self
            .recent_checksums(since_lsn)?
            .into_iter()
            .map(SumsAt::from)
            .collect())
    }
}

impl From<Checksum> for SumsAt {
    fn from(checksum: Checksum) -> Self {
        let tables = checksum
            .tables
            .into_iter()
            .map(|(name, sum)| (name, sum.rows, sum.checksum))
            .collect();
        Self {
            lsn: checksum.lsn,
            tables,
        }
    }
}

impl SnapshotSink for Installer {
    fn add(&mut self, table: &str, rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        Installer::add(self, table, rows)
    }

    fn rows(&self) -> u64 {
        Installer::rows(self)
    }

    fn finish(self: Box<Self>, expected: &[(String, u64, u64)]) -> Result<()> {
        let expected: BTreeMap<String, TableSum> = expected
            .iter()
            .map(|(name, rows, checksum)| {
                let sum = TableSum {
                    rows: *rows,
                    checksum: *checksum,
                };
                (name.clone(), sum)
            })
            .collect();
        Installer::finish(*self, &expected)
    }
}

/// The most bytes of records a follower appends in one write, unless one entry is larger.
/// A replica catching up is handed its backlog in batches of up to 32 MiB (its session's
/// read-ahead); the log takes a write of 1 MiB or more as one large write, which needs its
/// size twice above the tables' floor, and a refused batch is sent again whole by the next
/// link: a replica with room for its entries (as its primary's small writes found it)
/// would never catch up. Written in pieces, a refusal leaves the pieces before it in the
/// log, and the next link resumes after them.
const APPEND_PIECE_BYTES: usize = 512 << 10;

/// The latest commit time a Python datetime can show (9999-12-31T23:59:59.999, in ms).
const MAX_TIMESTAMP_MS: u64 = 253_402_300_799_999;

/// Checks an entry from a primary as a local write is checked when it is made (its table
/// names), and its commit time: a store never takes a table name it would refuse (redb
/// panics on some, and the store could not be opened again), nor a time its readers
/// cannot show. Keys, values and sizes are the primary's, as a local write's are its
/// writer's.
///
/// # Errors
/// [`ReplicationError::Protocol`] naming the entry and what is wrong.
fn check_replicated(entry: &Entry) -> Result<()> {
    let refuse = |what: String| -> crate::Error {
        ReplicationError::Protocol(format!("entry {} from the primary {what}", entry.lsn)).into()
    };
    if entry.timestamp_ms > MAX_TIMESTAMP_MS {
        return Err(refuse(format!(
            "has a commit time of {} ms, past year 9999",
            entry.timestamp_ms
        )));
    }
    let mut checked: Option<&str> = None;
    for op in &entry.ops {
        // Ops of one entry mostly share a table (a bulk load's all do): checked once.
        if checked != Some(op.table.as_str()) {
            super::validate_table_name(&op.table).map_err(|e| refuse(format!("writes {e}")))?;
            checked = Some(&op.table);
        }
    }
    Ok(())
}
