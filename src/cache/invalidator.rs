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
        if cursor.forked {
            // Nothing of the old history is claimed: not its last entry (the primary would
            // find it forks at LSN 0 and refuse, again and again), not its lineage (the new
            // primary may be another store), not its epoch (which could fence a primary
            // of an unrelated lineage).
            return Ok(Position {
                flushed_lsn: 0,
                applied_lsn: 0,
                id: (0, 0),
                lineage: 0,
                epoch: 0,
                history: Vec::new(),
                store_id: 0,
                held: None,
            });
        }
        let processed = self.shared.lock().processed();
        Ok(Position {
            flushed_lsn: processed.lsn,
            applied_lsn: processed.lsn,
            id: cursor.id,
            lineage: cursor.lineage,
            epoch: cursor.epoch.max(processed.epoch),
            history: Vec::new(),
            store_id: 0,
            held: None,
        })
    }

    fn join_lineage(&self, lineage: u64) -> Result<()> {
        self.cursor().lineage = lineage;
        Ok(())
    }

    fn raise_epoch(&self, epoch: u64, primary_last_lsn: u64) -> Result<()> {
        let mut cursor = self.cursor();
        cursor.epoch = cursor.epoch.max(epoch);
        // A new primary, before any entry of its epoch: a value read through the old one
        // past the new one's log is of the history the failover lost (this node may not
        // hear of that epoch's first entry for a long time).
        self.shared.lock().lru.epoch_begins(Version {
            epoch,
            lsn: primary_last_lsn.saturating_add(1),
        });
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
            if at.epoch > processed.epoch {
                // The entry before this one was of an older epoch and in the primary's
                // history (the handshake matched it, or a snapshot started there), so the
                // new epoch starts exactly here.
                node.lru.epoch_begins(at);
            }
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
        } else if node.processed().lsn == 0 && node.lru.is_empty() {
            // A node that starts following: nothing is dropped, so no flush is counted.
            node.lru.start_after(start.lsn);
            node.lru.processed_through(at);
        } else {
            if node.processed().lsn > 0 {
                node.following.log_lost += 1;
            }
            node.lru.flush(start.lsn);
            node.lru.processed_through(at);
        }
        // A new history starts at the snapshot: its epoch, not the old one's.
        let epoch = if cursor.forked {
            start.epoch
        } else {
            cursor.epoch.max(start.epoch)
        };
        *cursor = Cursor {
            id: start.id,
            lineage: start.lineage,
            epoch,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::lru::{Bounds, OnWrite};
    use crate::cache::node::{Node, NodeOptions};
    use crate::codec::{encode_key, encode_ops, frame_record, KeyRef, Op, RECORD_HEADER_LEN};

    fn node() -> Arc<Shared> {
        Shared::new(Node::new(NodeOptions {
            bounds: Bounds {
                capacity: 100,
                max_bytes: None,
                tombstones: 100,
            },
            on_write: OnWrite::Drop,
            ttl_ms: None,
            token: None,
        }))
    }

    /// The log payload of an entry at `lsn` putting `key` into table `t`.
    fn entry(lsn: u64, epoch: u64, key: &str) -> Vec<u8> {
        let body = encode_ops(&[Op {
            table: "t".into(),
            key: encode_key(KeyRef::Str(key)),
            value: Some(vec![0x01]),
        }]);
        let mut record = Vec::new();
        frame_record(&mut record, lsn, epoch, 0, &body, crc32c::crc32c(&body));
        record.split_off(RECORD_HEADER_LEN)
    }

    fn cache(shared: &Shared, key: &str, lsn: u64) {
        let stored = shared.lock().lru.fill(
            Bytes::copy_from_slice(format!("t:s:{key}").as_bytes()),
            Bytes::from_static(b"v"),
            Version { epoch: 1, lsn },
            None,
            0,
        );
        assert_eq!(stored, crate::cache::lru::Fill::Stored);
    }

    fn start(lsn: u64, epoch: u64) -> SnapshotStart {
        SnapshotStart {
            lsn,
            epoch,
            id: (epoch, 7),
            lineage: 9,
            history: Vec::new(),
        }
    }

    #[test]
    fn entries_drop_what_they_wrote_in_order_and_a_gap_applies_nothing() {
        let shared = node();
        let invalidator = Invalidator::new(Arc::clone(&shared));
        cache(&shared, "a", 0);
        cache(&shared, "b", 0);
        let applied = invalidator
            .apply(&[entry(1, 1, "a"), entry(2, 1, "x")])
            .unwrap();
        assert_eq!(applied, (2, 2));
        assert!(shared.lock().lru.get(b"t:s:a", 0).is_none());
        assert!(shared.lock().lru.get(b"t:s:b", 0).is_some());
        let position = invalidator.position().unwrap();
        assert_eq!((position.flushed_lsn, position.id.0), (2, 1));
        assert!(invalidator.apply(&[entry(4, 1, "b")]).is_err());
        assert!(
            shared.lock().lru.get(b"t:s:b", 0).is_some(),
            "nothing of a gap"
        );
        assert!(invalidator.apply(&[vec![1, 2, 3]]).is_err());
    }

    #[test]
    fn a_new_primary_s_welcome_drops_values_read_past_its_log_before_any_entry_of_its_own() {
        let shared = node();
        let invalidator = Invalidator::new(Arc::clone(&shared));
        invalidator.apply(&[entry(1, 1, "x")]).unwrap();
        cache(&shared, "lost", 3);
        cache(&shared, "before", 2);
        // Promoted with a log that ends at LSN 2: LSN 3 of epoch 1 is gone for good.
        invalidator.raise_epoch(2, 2).unwrap();
        assert_eq!(invalidator.position().unwrap().epoch, 2);
        let mut node = shared.lock();
        assert!(node.lru.get(b"t:s:lost", 0).is_none());
        assert!(
            node.lru.get(b"t:s:before", 0).is_some(),
            "within the new log"
        );
        let refill = node.lru.fill(
            Bytes::from_static(b"t:s:lost"),
            Bytes::from_static(b"v"),
            Version { epoch: 1, lsn: 3 },
            None,
            0,
        );
        assert_eq!(
            refill,
            crate::cache::lru::Fill::Stale,
            "read through the old"
        );
    }

    #[test]
    fn the_first_entry_of_a_new_epoch_drops_values_of_the_history_it_cut_off() {
        let shared = node();
        let invalidator = Invalidator::new(Arc::clone(&shared));
        invalidator.apply(&[entry(1, 1, "x")]).unwrap();
        // Filled through the old primary ahead of the node, at LSNs its successor never had.
        cache(&shared, "lost", 2);
        cache(&shared, "never-written-again", 3);
        cache(&shared, "before", 1);
        // The new primary's epoch 2 starts at LSN 2 and writes another key.
        invalidator.apply(&[entry(2, 2, "y")]).unwrap();
        let mut node = shared.lock();
        assert!(node.lru.get(b"t:s:lost", 0).is_none());
        assert!(node.lru.get(b"t:s:never-written-again", 0).is_none());
        assert!(node.lru.get(b"t:s:before", 0).is_some(), "shared history");
        drop(node);
        // Entries of the same epoch drop nothing beyond their own keys.
        shared.lock().lru.fill(
            Bytes::from_static(b"t:s:new"),
            Bytes::from_static(b"v"),
            Version { epoch: 2, lsn: 3 },
            None,
            0,
        );
        invalidator.apply(&[entry(3, 2, "z")]).unwrap();
        assert!(shared.lock().lru.get(b"t:s:new", 0).is_some());
        assert!(shared.lock().lru.get(b"t:s:before", 0).is_some());
    }

    #[test]
    fn a_node_that_starts_following_counts_no_flush_and_refuses_older_fills() {
        let shared = node();
        let invalidator = Invalidator::new(Arc::clone(&shared));
        invalidator.begin_snapshot(start(50, 1)).unwrap();
        let mut node = shared.lock();
        assert_eq!(node.lru.counters().flushes, 0, "nothing was dropped");
        assert_eq!(node.following.log_lost, 0);
        assert_eq!(node.processed(), Version { epoch: 1, lsn: 50 });
        let older = node.lru.fill(
            Bytes::from_static(b"t:s:a"),
            Bytes::from_static(b"old"),
            Version { epoch: 1, lsn: 49 },
            None,
            0,
        );
        assert_eq!(older, crate::cache::lru::Fill::Stale);
    }

    #[test]
    fn a_node_that_held_fills_before_its_first_snapshot_counts_their_flush() {
        let shared = node();
        let invalidator = Invalidator::new(Arc::clone(&shared));
        cache(&shared, "a", 0);
        invalidator.begin_snapshot(start(50, 1)).unwrap();
        let node = shared.lock();
        assert!(node.lru.is_empty());
        assert_eq!(node.lru.counters().flushes, 1);
        assert_eq!(node.following.log_lost, 0, "it had no log position to lose");
    }

    #[test]
    fn a_lost_log_position_flushes_counts_and_starts_at_the_snapshot() {
        let shared = node();
        let invalidator = Invalidator::new(Arc::clone(&shared));
        invalidator.apply(&[entry(1, 1, "a")]).unwrap();
        cache(&shared, "b", 1);
        invalidator.begin_snapshot(start(50, 1)).unwrap();
        let node = shared.lock();
        assert!(node.lru.is_empty());
        assert_eq!(node.following.log_lost, 1);
        assert_eq!(node.lru.counters().flushes, 1);
        assert_eq!(node.processed(), Version { epoch: 1, lsn: 50 });
        drop(node);
        assert_eq!(invalidator.position().unwrap().id, (1, 7));
        // Fills from before the snapshot are refused: their writes are unknown here.
        let refused = shared.lock().lru.fill(
            Bytes::from_static(b"t:s:b"),
            Bytes::from_static(b"old"),
            Version { epoch: 1, lsn: 49 },
            None,
            0,
        );
        assert_eq!(refused, crate::cache::lru::Fill::Stale);
    }

    #[test]
    fn a_fork_flushes_asks_to_start_afresh_and_begins_the_new_history() {
        let shared = node();
        let invalidator = Invalidator::new(Arc::clone(&shared));
        invalidator
            .apply(&[entry(1, 1, "a"), entry(2, 1, "b")])
            .unwrap();
        cache(&shared, "c", 2);
        assert_eq!(invalidator.resync(2, "127.0.0.1:1").unwrap(), None);
        assert!(shared.lock().lru.is_empty());
        assert_eq!(shared.lock().following.forks, 1);
        let fresh = invalidator.position().unwrap();
        assert_eq!(
            (fresh.flushed_lsn, fresh.id, fresh.lineage, fresh.epoch),
            (0, (0, 0), 0, 0),
            "a fresh start claims nothing of the old history"
        );
        // The new history is shorter: its fills at LSN 1 are not refused for being below
        // the old history's position, but fills of the old epoch are.
        invalidator.begin_snapshot(start(1, 2)).unwrap();
        let mut node = shared.lock();
        assert_eq!(node.following.log_lost, 0);
        assert_eq!(node.lru.counters().flushes, 1, "one fork, one flush");
        let new = node.lru.fill(
            Bytes::from_static(b"t:s:c"),
            Bytes::from_static(b"v"),
            Version { epoch: 2, lsn: 1 },
            None,
            0,
        );
        assert_eq!(new, crate::cache::lru::Fill::Stored);
        let old = node.lru.fill(
            Bytes::from_static(b"t:s:d"),
            Bytes::from_static(b"v"),
            Version { epoch: 1, lsn: 2 },
            None,
            0,
        );
        assert_eq!(old, crate::cache::lru::Fill::Stale);
    }
}
