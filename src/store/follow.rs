//! A follower store as a [`LogConsumer`]: the log it appends to is its own, with the
//! primary's LSNs, so what it reports as flushed is what its log holds.

use std::collections::BTreeMap;

use super::install::Installer;
use super::tables::TableSum;
use super::Store;
use crate::error::Result;
use crate::follow::{LogConsumer, Position, Role, SnapshotSink, SnapshotStart};

impl LogConsumer for Store {
    fn role(&self) -> Role {
        Role::Replica
    }

    fn durable(&self) -> bool {
        self.options().fsync
    }

    fn position(&self) -> Result<Position> {
        // A follower applies each entry as it appends it: what is durable in its log is
        // also what its readers see.
        let lsn = self.last_lsn();
        Ok(Position {
            flushed_lsn: lsn,
            applied_lsn: lsn,
            id: self.entry_id(lsn)?.unwrap_or((0, 0)),
            lineage: self.lineage()?,
            epoch: self.epoch(),
        })
    }

    fn join_lineage(&self, lineage: u64) -> Result<()> {
        self.adopt_lineage(lineage)
    }

    fn apply(&self, payloads: &[Vec<u8>]) -> Result<(u64, u64)> {
        let lsn = self.append_replicated(payloads)?;
        Ok((lsn, lsn))
    }

    fn begin_snapshot(&self, start: SnapshotStart) -> Result<Box<dyn SnapshotSink>> {
        let installer = self.begin_install(start.lsn, start.epoch, start.id, start.lineage)?;
        Ok(Box::new(installer))
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
