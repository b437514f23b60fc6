//! A cache node as a consumer of its primary's log: each entry drops (or refreshes) the
//! keys it wrote that the node holds and remembers them all, in LSN order. It keeps no
//! data, so it never counts toward a quorum; a lost log position or a fork flushes it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::lru::Version;
use super::server::Shared;
use super::wire_key::wire_key_of_encoded;
use crate::codec::{decode_entry, record_crc};
use crate::error::{CacheError, Result};
use crate::follow::{LogConsumer, Position, Role, SnapshotSink, SnapshotStart};

/// Where the consumer stands in the log, beside the node's own processed position.
#[derive(Debug, Default)]
struct Cursor {
    /// The `(epoch, crc)` of the last entry processed (`(0, 0)` before any).
    id: (u64, u32),
    lineage: u64,
    /// The highest epoch seen.
    epoch: u64,
    /// A fork flushed the node: it asks to start afresh, and the snapshot that starts it
    /// begins a new history.
    forked: bool,
}

/// Applies a primary's log to a node.
pub struct Invalidator {
    shared: Arc<Shared>,
    cursor: Mutex<Cursor>,
}

impl Invalidator {
    /// Consumes the log for the node of `shared`, from nothing.
    #[must_use]
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            cursor: Mutex::new(Cursor::default()),
        }
    }

    fn cursor(&self) -> std::sync::MutexGuard<'_, Cursor> {
        self.cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl LogConsumer for Invalidator {
    fn role(&self) -> Role {
        Role::Consumer
    }

    fn durable(&self) -> bool {
        false
    }

    fn position(&self) -> Result<Position> {
        let cursor = self.cursor();
        let processed = if cursor.forked {
            Version::default()
        } else {
            self.shared.lock().processed()
        };
        Ok(Position {
            flushed_lsn: processed.lsn,
            applied_lsn: processed.lsn,
            id: cursor.id,
            lineage: cursor.lineage,
            epoch: cursor.epoch.max(processed.epoch),
            history: Vec::new(),
        })
    }

    fn join_lineage(&self, lineage: u64) -> Result<()> {
        self.cursor().lineage = lineage;
        Ok(())
    }

    fn raise_epoch(&self, epoch: u64) -> Result<()> {
        let mut cursor = self.cursor();
        cursor.epoch = cursor.epoch.max(epoch);
        Ok(())
    }

    fn apply(&self, payloads: &[Vec<u8>]) -> Result<(u64, u64)> {
        // Decoded before anything applies: a bad entry leaves the node as it was.
        let entries = payloads
            .iter()
            .map(|payload| Ok((decode_entry(payload)?, record_crc(payload))))
            .collect::<Result<Vec<_>>>()?;
        let now_ms = self.shared.now_ms();
        let mut cursor = self.cursor();
        let mut node = self.shared.lock();
        let mut processed = node.processed();
        for (entry, crc) in entries {
            if entry.lsn != processed.lsn + 1 {
                return Err(CacheError::OutOfOrder {
                    processed: processed.lsn,
                    got: entry.lsn,
                }
                .into());
            }
            let at = Version {
                epoch: entry.epoch,
                lsn: entry.lsn,
            };
            for op in &entry.ops {
                let key = Bytes::from(wire_key_of_encoded(&op.table, &op.key)?);
                let value = op.value.as_ref().map(|v| Bytes::copy_from_slice(v));
                node.lru.written(&key, value, at, now_ms);
            }
            node.lru.processed_through(at);
            processed = at;
            cursor.id = (entry.epoch, crc);
            cursor.epoch = cursor.epoch.max(entry.epoch);
        }
        Ok((processed.lsn, processed.lsn))
    }

    fn begin_snapshot(&self, start: SnapshotStart) -> Result<Box<dyn SnapshotSink>> {
        // The log this node needed is gone (or it starts fresh): it knows nothing of the
        // writes before the snapshot, so it forgets everything and starts after it.
        let mut cursor = self.cursor();
        let mut node = self.shared.lock();
        let at = Version {
            epoch: start.epoch,
            lsn: start.lsn,
        };
        if cursor.forked {
            node.lru.restart(at);
        } else {
            if node.processed().lsn > 0 {
                node.following.log_lost += 1;
            }
            node.lru.flush(start.lsn);
            node.lru.processed_through(at);
        }
        *cursor = Cursor {
            id: start.id,
            lineage: start.lineage,
            epoch: cursor.epoch.max(start.epoch),
            forked: false,
        };
        Ok(Box::new(Discard { rows: 0 }))
    }

    fn resync(&self, _fork_lsn: u64, _primary: &str) -> Result<Option<PathBuf>> {
        // History was rewritten (a new epoch): values cached from the old one may be gone
        // from the new. Everything goes now, and the node asks to start afresh from the
        // primary's position (the snapshot that starts it begins the new history). A node
        // keeps no writes of its own, so nothing is lost and no report is written.
        let mut cursor = self.cursor();
        let mut node = self.shared.lock();
        let processed = node.processed().lsn;
        node.lru.flush(processed);
        node.following.forks += 1;
        cursor.forked = true;
        Ok(None)
    }
}

/// A snapshot's rows, which a node does not keep.
struct Discard {
    rows: u64,
}

impl SnapshotSink for Discard {
    fn add(&mut self, _table: &str, rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        self.rows += rows.len() as u64;
        Ok(())
    }

    fn rows(&self) -> u64 {
        self.rows
    }

    fn finish(self: Box<Self>, _expected: &[(String, u64, u64)]) -> Result<()> {
        Ok(())
    }
}
