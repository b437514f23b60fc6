//! Following a primary's log: what a follower does with each entry, and where it resumes.
//!
//! The replication glue drives any [`LogConsumer`] the same way (handshake, resume, whole
//! entries in LSN order, acks): a replica's follower store is one (a `Replica` drives it),
//! and any consumer that keeps no store is driven by a `Follower` (a cache node's
//! invalidator will be one). Only a consumer whose [`Role`] is `Replica` and which is
//! [`LogConsumer::durable`] can ever count toward a primary's quorum. A `Consumer` starts
//! at the primary's current LSN when it is new or its position left the log (a snapshot's
//! header, no rows: its [`SnapshotSink`] must accept an empty snapshot), and resyncs on a
//! fork rather than stopping.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_derive::{Deserialize, Serialize};

use crate::error::Result;

/// What a follower is to its primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds a copy of the data and a durable slot on the primary (the log is kept for it).
    Replica,
    /// Reacts to entries (a cache's invalidations) and keeps no slot.
    Consumer,
}

/// Where a follower stands: what it holds, to resume after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Durable up to here (what acks carry, where a resume starts).
    pub flushed_lsn: u64,
    /// Visible to its readers up to here.
    pub applied_lsn: u64,
    /// The identity `(epoch, crc)` of its entry at `flushed_lsn` (`(0, 0)` before any).
    pub id: (u64, u32),
    /// The lineage of the history it holds.
    pub lineage: u64,
    /// The highest epoch it has seen.
    pub epoch: u64,
    /// The epochs its log went through, `(epoch, start_lsn)` (empty if it keeps none).
    pub history: Vec<(u64, u64)>,
    /// Its store directory's id (`Store::store_id`), 0 if it has none: tells its primary
    /// a reconnection of this follower from another one given the same name.
    pub store_id: u64,
    /// If it holds entries back from its readers until its primary confirms them (see
    /// `Store::hold_back`): the identity of each entry of its log from the last one its
    /// readers see (confirmed) to `flushed_lsn`, `(lsn, (epoch, crc))`.
    pub held: Option<Vec<(u64, (u64, u32))>>,
}

/// A follower's per-table sums at one LSN, `(table, rows, checksum)` as snapshots carry
/// them: what `Primary::verify` compares with the primary's at the same LSN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SumsAt {
    /// The LSN the sums were taken at.
    pub lsn: u64,
    /// Per table: name, row count, checksum.
    pub tables: Vec<(String, u64, u64)>,
}

/// A snapshot about to be received: the primary's state at one LSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotStart {
    /// The LSN it reflects; entries after it follow.
    pub lsn: u64,
    /// The epoch at that LSN.
    pub epoch: u64,
    /// The identity `(epoch, crc)` of the entry at `lsn`.
    pub id: (u64, u32),
    /// The primary's lineage.
    pub lineage: u64,
    /// The epochs the primary's log went through up to `lsn`: `(epoch, start_lsn)`.
    pub history: Vec<(u64, u64)>,
}

/// What a store holds beyond a fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The first LSN its history does not share with the primary's.
    pub fork_lsn: u64,
    /// Its last LSN.
    pub last_lsn: u64,
    /// Entries from the fork on (0 if it holds nothing past the fork).
    pub entries: u64,
    /// The keys (as encoded) those entries touched, by table.
    pub touched: BTreeMap<String, BTreeSet<Vec<u8>>>,
}

impl Divergence {
    /// "3 entries (LSN 11 to 13) touching subscribers (2 keys), events (1 key)".
    #[must_use]
    pub fn summary(&self) -> String {
        let tables: Vec<String> = self
            .touched
            .iter()
            .map(|(table, keys)| {
                let plural = if keys.len() == 1 { "" } else { "s" };
                format!("{table} ({} key{plural})", keys.len())
            })
            .collect();
        format!(
            "{} local-only entries (LSN {} to {}) touching {}",
            self.entries,
            self.fork_lsn,
            self.last_lsn,
            if tables.is_empty() {
                "no table".to_owned()
            } else {
                tables.join(", ")
            }
        )
    }
}

/// Receives a snapshot's rows, then checks and installs them whole.
pub trait SnapshotSink: Send {
    /// Adds rows of `table`, in key order.
    ///
    /// # Errors
    /// A storage failure, or rows out of order.
    fn add(&mut self, table: &str, rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()>;
    /// Rows added so far.
    fn rows(&self) -> u64;
    /// Checks every table against `(name, rows, checksum)` and swaps the copy in.
    ///
    /// # Errors
    /// A mismatch (nothing is installed), or a storage failure.
    fn finish(self: Box<Self>, expected: &[(String, u64, u64)]) -> Result<()>;
}

/// Something that follows a primary's log.
pub trait LogConsumer: Send + Sync + 'static {
    /// What it is to the primary.
    fn role(&self) -> Role;
    /// Whether what [`LogConsumer::apply`] reports as flushed is fsynced.
    fn durable(&self) -> bool;
    /// Whether it counts toward a promotion (its own, or as a member that grants one): it
    /// fsyncs now, and did when it last recorded its primary's quorum, so that its primary
    /// counted it among the members. None but a replica's store does.
    fn counted_member(&self) -> bool {
        false
    }
    /// Where it stands now.
    ///
    /// # Errors
    /// Its state cannot be read.
    fn position(&self) -> Result<Position>;
    /// Takes on the primary's lineage (an empty follower joins its primary's history).
    ///
    /// # Errors
    /// The change cannot be recorded.
    fn join_lineage(&self, lineage: u64) -> Result<()>;
    /// Records, durably if it is durable, that `epoch` exists: from now on it refuses
    /// frames from primaries of older epochs, even after a restart. The primary of
    /// `epoch` welcomed it with a log that ends at `primary_last_lsn`: anything of an older
    /// epoch after that LSN comes from a history that primary does not have.
    ///
    /// # Errors
    /// The change cannot be recorded.
    fn raise_epoch(&self, epoch: u64, primary_last_lsn: u64) -> Result<()>;
    /// Remembers what its primary's heartbeats said a promotion must reach (its quorum and
    /// how many replicas count toward it), durably if it keeps data; a consumer need not.
    ///
    /// # Errors
    /// The change cannot be recorded.
    fn remember_quorum(&self, quorum: u64, members: u64) -> Result<()> {
        let _ = (quorum, members);
        Ok(())
    }
    /// Applies whole entries (log payloads), consecutive after what it holds; returns its
    /// `(flushed_lsn, applied_lsn)` once they are applied. `flushed_lsn` may be behind
    /// (the entries are not durable yet): [`LogConsumer::sync`] makes them so.
    ///
    /// # Errors
    /// A gap, a repeat, a payload that does not decode: nothing of the bad entry applies.
    fn apply(&self, payloads: &[Vec<u8>]) -> Result<(u64, u64)>;
    /// Entries its primary has not confirmed durable are about to be applied (a primary
    /// that ships ahead sent them): one that holds entries back records it durably first,
    /// so that after a crash it holds back what it cannot know was confirmed.
    ///
    /// # Errors
    /// A storage failure: nothing is applied.
    fn expect_unconfirmed(&self) -> Result<()> {
        Ok(())
    }
    /// Entries up to `lsn` are durable at the primary: one that holds entries back (its
    /// [`Position::held`] is `Some`) shows them to its readers. Returns the last LSN its
    /// readers see.
    ///
    /// # Errors
    /// A failure applying them.
    fn release(&self, lsn: u64) -> Result<u64> {
        Ok(lsn)
    }
    /// The handshake found that its primary's log differs after `lsn`: one that holds
    /// entries back cuts them off its log, durably (its readers never saw them).
    ///
    /// # Errors
    /// It holds more than entries held back there, or a storage failure.
    fn cut(&self, lsn: u64) -> Result<()> {
        let _ = lsn;
        Ok(())
    }
    /// Makes everything applied durable (if it is durable at all); returns the flushed LSN.
    ///
    /// # Errors
    /// A failed sync (the consumer stops) or a closed consumer.
    fn sync(&self) -> Result<u64> {
        self.position().map(|position| position.flushed_lsn)
    }
    /// Starts receiving a snapshot that replaces everything it holds. A consumer gets a
    /// snapshot's header alone (no rows, no tables): what it held before may be stale from
    /// then on (a cache flushes), and the entries after `start.lsn` follow.
    ///
    /// # Errors
    /// It cannot take snapshots, or a storage failure.
    fn begin_snapshot(&self, start: SnapshotStart) -> Result<Box<dyn SnapshotSink>>;
    /// What it holds from `fork_lsn` on, which its primary never had (the loss account).
    /// A consumer that keeps no log holds nothing a primary could lose: no entries and no
    /// keys, up to its position (the default).
    ///
    /// # Errors
    /// Its log no longer holds `fork_lsn`, or cannot be read.
    fn divergence(&self, fork_lsn: u64) -> Result<Divergence> {
        Ok(Divergence {
            fork_lsn,
            last_lsn: self.position()?.flushed_lsn,
            entries: 0,
            touched: BTreeMap::new(),
        })
    }
    /// Discards everything it holds, so that it follows `primary` again from scratch (from
    /// LSN 0). One that keeps data first writes what it holds from `fork_lsn` on to a new
    /// report, durably, and returns the report's path; one that keeps none (a cache)
    /// writes nothing and returns `None`.
    ///
    /// # Errors
    /// The report cannot be written (nothing is discarded then), or the discard failed.
    fn resync(&self, fork_lsn: u64, primary: &str) -> Result<Option<PathBuf>>;
    /// Its recent per-table sums at `since_lsn` or later, oldest first. A consumer that
    /// keeps no data has none.
    ///
    /// # Errors
    /// Its state cannot be read.
    fn recent_sums(&self, since_lsn: u64) -> Result<Vec<SumsAt>> {
        let _ = since_lsn;
        Ok(Vec::new())
    }
}
