//! The recent `(lsn, per-table sums)` of a store, one record per batch made visible, so
//! that a primary and a replica that apply the same entries in different batches still
//! share LSNs at which their tables can be compared (`Primary::verify`).

use std::collections::{BTreeMap, VecDeque};

use super::tables::TableSum;
use super::Checksum;

/// Records kept, at most. A replica answers a verification once it applied everything
/// shipped before the request, so its newest record is at the primary's last shipped LSN,
/// a batch end the primary recorded a round trip earlier: the primary needs its records
/// for about a round trip, and 4096 (a second or more of fsynced batches) leave a wide
/// margin, also for replicas still catching up. Each record is O(tables).
const CAPACITY: usize = 4096;

/// A bounded ring of checksums, oldest first, with increasing LSNs.
#[derive(Default)]
pub(crate) struct SumHistory {
    records: VecDeque<Checksum>,
}

impl SumHistory {
    /// Records the sums at `lsn`; the newest record is replaced if it has the same LSN (a
    /// reload that changed nothing), and the oldest goes once the ring is full.
    pub(crate) fn record(&mut self, lsn: u64, tables: &BTreeMap<String, TableSum>) {
        if self.records.back().is_some_and(|last| last.lsn >= lsn) {
            // LSNs only grow within one open store: an equal one is the same state.
            self.records.pop_back();
        }
        if self.records.len() == CAPACITY {
            self.records.pop_front();
        }
        self.records.push_back(Checksum {
            lsn,
            tables: tables.clone(),
        });
    }

    /// The records at `since_lsn` or later, oldest first.
    pub(crate) fn since(&self, since_lsn: u64) -> Vec<Checksum> {
        let start = self
            .records
            .partition_point(|record| record.lsn < since_lsn);
        self.records.range(start..).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(rows: u64) -> BTreeMap<String, TableSum> {
        BTreeMap::from([(
            "t".to_owned(),
            TableSum {
                rows,
                checksum: rows * 7,
            },
        )])
    }

    #[test]
    fn keeps_the_newest_records_in_lsn_order() {
        let mut history = SumHistory::default();
        for lsn in 1..=(CAPACITY as u64 + 10) {
            history.record(lsn, &sums(lsn));
        }
        let all = history.since(0);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].lsn, 11);
        assert_eq!(all.last().unwrap().lsn, CAPACITY as u64 + 10);
        let tail = history.since(CAPACITY as u64 + 9);
        assert_eq!(
            tail.iter().map(|c| c.lsn).collect::<Vec<_>>(),
            [CAPACITY as u64 + 9, CAPACITY as u64 + 10]
        );
    }

    #[test]
    fn a_record_at_the_same_lsn_replaces_the_newest() {
        let mut history = SumHistory::default();
        history.record(5, &sums(1));
        history.record(5, &sums(2));
        let all = history.since(0);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].tables, sums(2));
    }
}
