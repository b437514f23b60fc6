//! A scrub: every stored row's CRC checked and its key looked up, and each table's row
//! count and checksum recomputed against its stats.

use std::collections::BTreeMap;

use redb::{ReadableTable, TableHandle};

use super::{data_table, missing_is_none, row_hash, Snapshot, TableSum, META, STATS};
use crate::error::Result;
use crate::store::stored::unseal;

/// Scrub calls its progress callback after this many rows.
const SCRUB_PROGRESS_EVERY: u64 = 65_536;

/// One problem a scrub found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubDamage {
    /// The table it is in.
    pub table: String,
    /// The damaged row's encoded key; `None` for damage to the table as a whole (its stats
    /// disagree with its rows, or part of it cannot be read).
    pub key: Option<Vec<u8>>,
    /// What is wrong.
    pub reason: String,
}

/// What [`crate::store::Store::scrub`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubReport {
    /// The LSN of the state that was checked.
    pub lsn: u64,
    /// Per table: the rows checked.
    pub tables: BTreeMap<String, u64>,
    /// Every problem found, in table and key order.
    pub damaged: Vec<ScrubDamage>,
    /// `false` if the scrub was stopped before it checked every row.
    pub complete: bool,
}

impl ScrubReport {
    /// Whether every row was checked and nothing is damaged.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.complete && self.damaged.is_empty()
    }

    /// Rows checked in all tables.
    #[must_use]
    pub fn rows_checked(&self) -> u64 {
        self.tables.values().sum()
    }
}

impl Snapshot {
    /// Reads every stored row, checks its CRC and that a lookup of its key finds it (see
    /// [`missed`]), and recomputes each table's row count and checksum against the stats
    /// recorded beside the rows. `progress` is called with the
    /// rows checked so far every [`SCRUB_PROGRESS_EVERY`] rows; returning `false` stops
    /// the scrub (the report then says it is incomplete).
    ///
    /// # Errors
    /// A storage failure outside the rows (the metadata or the table list).
    pub(crate) fn scrub(&self, progress: &mut dyn FnMut(u64) -> bool) -> Result<ScrubReport> {
        let lsn = self
            .0
            .txn
            .open_table(META)?
            .get("applied_lsn")?
            .map_or(0, |v| v.value());
        let mut recorded = BTreeMap::new();
        for item in self.0.txn.open_table(STATS)?.iter()? {
            let (name, value) = item?;
            let (rows, checksum) = value.value();
            recorded.insert(name.value().to_owned(), TableSum { rows, checksum });
        }
        let mut names: Vec<String> = self
            .0
            .txn
            .list_tables()?
            .map(|handle| handle.name().to_owned())
            .filter(|name| !name.starts_with("__"))
            .chain(recorded.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        let mut report = ScrubReport {
            lsn,
            tables: BTreeMap::new(),
            damaged: Vec::new(),
            complete: true,
        };
        let mut checked = 0u64;
        for name in names {
            let mut found = TableSum::default();
            let mut damaged_rows = 0u64;
            if let Some(table) = missing_is_none(self.0.txn.open_table(data_table(&name)))? {
                for item in table.iter()? {
                    let (key, stored) = match item {
                        Ok(row) => row,
                        Err(err) => {
                            report.damaged.push(ScrubDamage {
                                table: name.clone(),
                                key: None,
                                reason: format!("the rest of the table cannot be read: {err}"),
                            });
                            break;
                        }
                    };
                    let key = key.value();
                    found.rows += 1;
                    match unseal(&name, key, stored.value()) {
                        Ok(value) => {
                            found.checksum = found.checksum.wrapping_add(row_hash(key, value));
                            if let Some(reason) = missed(&table, key, stored.value()) {
                                report.damaged.push(ScrubDamage {
                                    table: name.clone(),
                                    key: Some(key.to_vec()),
                                    reason,
                                });
                            }
                        }
                        Err(damage) => {
                            damaged_rows += 1;
                            report.damaged.push(ScrubDamage {
                                table: name.clone(),
                                key: Some(key.to_vec()),
                                reason: damage.to_string(),
                            });
                        }
                    }
                    checked += 1;
                    if checked.is_multiple_of(SCRUB_PROGRESS_EVERY) && !progress(checked) {
                        report.complete = false;
                        return Ok(report);
                    }
                }
            }
            let expected = recorded.get(&name).copied().unwrap_or_default();
            // A damaged row's original hash is unknown: only the count can be compared.
            let agrees = if damaged_rows > 0 {
                found.rows == expected.rows
            } else {
                found == expected
            };
            if !agrees {
                report.damaged.push(ScrubDamage {
                    table: name.clone(),
                    key: None,
                    reason: format!(
                        "the table holds {} rows with checksum {:#018x}, its recorded stats say \
                         {} rows with checksum {:#018x}",
                        found.rows, found.checksum, expected.rows, expected.checksum
                    ),
                });
            }
            report.tables.insert(name, found.rows);
        }
        progress(checked);
        Ok(report)
    }
}

/// Why a lookup of `key` does not find the row a scan of `table` found (`stored`), if it
/// does not. A scan walks every leaf of the table's B-tree, but a read looks a key up
/// through the branch pages above: a damaged separator key there sends the lookup to
/// the wrong leaf, and the row reads as absent while every leaf is sound (no row's CRC,
/// nor the table's sums, can see it).
fn missed(
    table: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    key: &[u8],
    stored: &[u8],
) -> Option<String> {
    match table.get(key) {
        Ok(Some(found)) if found.value() == stored => None,
        Ok(Some(_)) => Some("a lookup of this key finds another row than a scan".to_owned()),
        Ok(None) => Some(
            "a lookup of this key misses it (the index above the row is damaged): reads \
             return nothing for it"
                .to_owned(),
        ),
        Err(err) => Some(format!("a lookup of this key fails: {err}")),
    }
}
