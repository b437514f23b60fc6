//! Writing to a store: checking and encoding a transaction's operations, committing it
//! through the pipeline (group commit), and the leader's work for a batch: append and
//! fdatasync the log, then apply to the overlay.

use super::commit::{Batch, Flushed, Until, WriterLock};
use super::durability::{self, Committed, Durability, Receipt};
use super::overlay::Overlay;
use super::{validate_table_name, Store};
use crate::codec::{encode_ops, Op, OpRef};
use crate::error::{Result, StoreError};

impl Store {
    /// Checks sizes and names, and encodes the body of an entry.
    pub(super) fn encode(&self, ops: &[Op]) -> Result<(Vec<u8>, u32)> {
        self.check_ops(ops.iter().map(Op::borrowed))?;
        let body = encode_ops(ops);
        self.check_body(body.len())?;
        let crc = crc32c::crc32c(&body);
        Ok((body, crc))
    }

    /// Checks the table names and the sizes of the keys and values written. A delete's
    /// key is not held to `max_key_bytes`: a row written under a larger limit (the store
    /// opened with another) must stay deletable.
    pub(crate) fn check_ops<'o>(&self, ops: impl IntoIterator<Item = OpRef<'o>>) -> Result<()> {
        let options = &self.inner.options;
        for op in ops {
            validate_table_name(op.table)?;
            if let Some(value) = op.value {
                check_size("key", op.key.len(), options.max_key_bytes)?;
                check_size("value", value.len(), options.max_value_bytes)?;
            }
        }
        Ok(())
    }

    /// Checks that a body of `len` bytes fits in one log record.
    pub(super) fn check_body(&self, len: usize) -> Result<()> {
        check_size(
            "transaction",
            len + 32,
            self.inner.options.max_transaction_bytes,
        )
    }

    /// Commits `ops` as one transaction with `durability` (`None`: the strongest default
    /// of the tables written) and returns its receipt once the write has it: durable and
    /// visible here, and for a sync write acknowledged by a quorum of replicas.
    /// An empty `ops` commits nothing and returns a receipt for the current visible LSN.
    ///
    /// # Errors
    /// Invalid names or sizes, or a sync write that cannot be acknowledged (no primary
    /// serves the store, fewer replicas than the quorum): nothing is written, no LSN is
    /// taken. A closed store, or the failure that closed it. A sync write whose quorum is
    /// not reached within the sync timeout: [`crate::error::ReplicationError::Timeout`]
    /// (committed locally) unless the primary degrades instead.
    pub fn commit(&self, ops: Vec<Op>, durability: Option<Durability>) -> Result<Receipt> {
        self.commit_pending(ops, durability)?.finish()
    }

    /// Commits `ops` locally, like [`Store::commit`], and returns before waiting for any
    /// replica: [`Committed::wait`] then waits in slices (for callers that stay
    /// interruptible).
    ///
    /// # Errors
    /// As [`Store::commit`], except the sync timeout.
    pub fn commit_pending(
        &self,
        ops: Vec<Op>,
        durability: Option<Durability>,
    ) -> Result<Committed> {
        self.commit_inner(ops, durability, false)
    }

    pub(super) fn commit_inner(
        &self,
        ops: Vec<Op>,
        durability: Option<Durability>,
        holds_writer: bool,
    ) -> Result<Committed> {
        // In a forked child the writer lock is a copy nobody uses: nothing to release.
        self.check_process()?;
        let checked = self
            .check_usable()
            .and_then(|()| self.check_writable())
            .and_then(|()| {
                self.resolve_durability(ops.iter().map(|op| op.table.as_str()), durability)
            })
            .and_then(|resolved| Ok((resolved, self.encode(&ops)?)));
        let ((durability, replication), (body, crc)) = match checked {
            Ok(checked) => checked,
            Err(refused) => {
                if holds_writer {
                    self.inner.pipeline.release_writer();
                }
                return Err(refused);
            }
        };
        if ops.is_empty() {
            if holds_writer {
                self.inner.pipeline.release_writer();
            }
            return Ok(durability::committed(
                self.last_lsn(),
                durability,
                replication,
            ));
        }
        let writer = if holds_writer {
            WriterLock::Release
        } else {
            WriterLock::NotHeld
        };
        let lsn = self
            .inner
            .pipeline
            .enqueue(
                Some((&body, crc)),
                ops,
                writer,
                replication.is_none(),
                |lsn| {
                    if let Some(replication) = &replication {
                        replication.will_wait(lsn);
                    }
                },
            )
            .map_err(|r| self.refused(r))?
            .lsn;
        self.wait_own(lsn, Until::Visible)?;
        Ok(durability::committed(lsn, durability, replication))
    }

    /// Waits until the caller's own `lsn` is `until`, like [`Store::wait`]; refuses it if
    /// the log had no room for it (see [`super::dropped`]).
    pub(super) fn wait_own(&self, lsn: u64, until: Until) -> Result<()> {
        let lead = (|batch: &Batch| self.flush(batch), || self.sync_log());
        self.inner
            .pipeline
            .wait_own(lsn, until, &lead)
            .map_err(|r| self.refused(r))
    }

    pub(super) fn wait_visible(&self, lsn: u64) -> Result<()> {
        self.wait(lsn, Until::Visible)
    }

    /// Waits until `lsn` is `until`, doing the leaders' work while nobody else does.
    pub(super) fn wait(&self, lsn: u64, until: Until) -> Result<()> {
        let lead = (|batch: &Batch| self.flush(batch), || self.sync_log());
        self.inner
            .pipeline
            .wait(lsn, until, &lead)
            .map_err(|r| self.refused(r))
    }

    /// Makes every record appended to the log durable.
    pub(super) fn sync_log(&self) -> Result<()> {
        self.with_store_open(|open| open.log.sync())
    }

    /// The leader's work: append + fdatasync, then apply to the overlay (or, for a bulk
    /// batch, straight to redb) and tell the checkpointer, which moves the overlay into redb
    /// and makes checkpoints in the background. A follower's batch is applied before its
    /// fdatasync, which a later sync does ([`Flushed::Written`]): its entries are durable
    /// on its primary already, and its readers should not wait for its own disk.
    pub(super) fn flush(&self, batch: &Batch) -> Result<Flushed> {
        let written_only = self.inner.options.fsync && self.is_follower();
        self.with_store_open(|open| {
            let ops = batch.entries.iter().map(|e| e.ops.len()).sum();
            let bulk = Overlay::is_bulk(ops);
            if !bulk {
                open.overlay
                    .wait_for_room(&|| open.checkpointer.failure().is_some());
            }
            if let Some(cause) = open.checkpointer.failure() {
                return Err(self.closed_error(Some(cause)));
            }
            // No records: the batch applies entries held back before, now released.
            if !batch.records.is_empty() {
                let early = (!written_only).then(|| self.written_listener()).flatten();
                if written_only {
                    open.log.append_unsynced(&batch.records, batch.last_lsn)?;
                } else if let Some(listener) = early {
                    // Written, then told (replicas that hold back are shipped it now), then
                    // synced: the two fdatasyncs overlap.
                    open.log.append_unsynced(&batch.records, batch.last_lsn)?;
                    listener(batch.last_lsn);
                    open.log.sync()?;
                } else {
                    open.log.append(&batch.records, batch.last_lsn)?;
                }
            }
            // No entries: every entry of the batch is held back.
            if bulk {
                open.overlay.apply_bulk(&open.tables, &batch.entries)?;
            } else if !batch.entries.is_empty() {
                open.overlay.apply(&open.tables, &batch.entries)?;
            }
            open.checkpointer.note(
                batch.entries.len() as u64,
                batch.records.len() as u64,
                open.overlay.is_full(),
            );
            // Before the batch becomes readable: once a write returns, every cache in
            // front of this store has dropped what it wrote.
            self.inner.watchers.tell(&batch.entries);
            Ok(if written_only {
                Flushed::Written
            } else {
                Flushed::Durable
            })
        })
    }
}

fn check_size(what: &'static str, size: usize, limit: usize) -> Result<()> {
    if size > limit {
        return Err(StoreError::TooLarge { what, size, limit }.into());
    }
    Ok(())
}
