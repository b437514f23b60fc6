//! Replica verification (DESIGN §3.5): a replica's per-table sums against the primary's at
//! an LSN both recorded. Both sides keep the sums of their recent batches; they apply the
//! same entries in different batches, so the greatest LSN both rings hold is compared. The
//! comparison is a pure function of the two rings; the glue that fetches them is in
//! `primary::verify`.

use std::collections::BTreeMap;
use std::fmt;

use serde_derive::{Deserialize, Serialize};

use crate::follow::SumsAt;

/// How one replica, or one of its tables, compares with the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Equal row counts and checksums at the compared LSN.
    Equal,
    /// Different row counts or checksums at the compared LSN.
    Different,
    /// No LSN to compare at yet (see the reason).
    NotComparable,
}

impl Verdict {
    /// The name Python and the CLI show.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Equal => "equal",
            Verdict::Different => "different",
            Verdict::NotComparable => "not comparable",
        }
    }
}

/// One table of one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCheck {
    /// The table.
    pub table: String,
    /// How it compares.
    pub verdict: Verdict,
    /// The primary's `(rows, checksum)` at the compared LSN (absent: no rows).
    pub primary: Option<(u64, u64)>,
    /// The replica's `(rows, checksum)` at the compared LSN (absent: no rows).
    pub replica: Option<(u64, u64)>,
}

/// One replica: its verdict, the LSN compared at, and each table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaCheck {
    /// The replica's name.
    pub name: String,
    /// Different if any table is, equal if all are, else not comparable.
    pub verdict: Verdict,
    /// The LSN both sides' sums were taken at (absent: not comparable).
    pub lsn: Option<u64>,
    /// Why it is not comparable.
    pub reason: Option<String>,
    /// Per table, in name order (empty when not comparable).
    pub tables: Vec<TableCheck>,
}

impl ReplicaCheck {
    /// Each table's verdict, in name order.
    #[must_use]
    pub fn table_verdicts(&self) -> Vec<(&str, Verdict)> {
        self.tables
            .iter()
            .map(|t| (t.table.as_str(), t.verdict))
            .collect()
    }

    /// A replica that could not be compared, and why.
    #[must_use]
    pub fn not_comparable(name: &str, reason: String) -> Self {
        Self {
            name: name.to_owned(),
            verdict: Verdict::NotComparable,
            lsn: None,
            reason: Some(reason),
            tables: Vec::new(),
        }
    }
}

/// What `Primary::verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The primary's last LSN when it asked.
    pub lsn: u64,
    /// Every replica with a slot or a connection, in name order.
    pub replicas: Vec<ReplicaCheck>,
}

impl VerifyReport {
    /// No replica differs (replicas that could not be compared do not count against it).
    #[must_use]
    pub fn ok(&self) -> bool {
        self.replicas
            .iter()
            .all(|r| r.verdict != Verdict::Different)
    }

    /// How many replicas were compared (equal or different).
    #[must_use]
    pub fn compared(&self) -> usize {
        self.replicas
            .iter()
            .filter(|r| r.verdict != Verdict::NotComparable)
            .count()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "verify at primary LSN {}: {}",
            self.lsn,
            if self.ok() { "ok" } else { "DIFFERENT" }
        )?;
        if self.replicas.is_empty() {
            return write!(f, "  no replica to verify");
        }
        for (index, replica) in self.replicas.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "  {}: {}", replica.name, replica.verdict.name())?;
            if let Some(lsn) = replica.lsn {
                write!(f, " at LSN {lsn}")?;
            }
            if let Some(reason) = &replica.reason {
                write!(f, " ({reason})")?;
            }
            for table in &replica.tables {
                let rows = |sum: Option<(u64, u64)>| sum.map_or(0, |(rows, _)| rows);
                write!(f, "\n    {}: {}", table.table, table.verdict.name())?;
                if table.verdict == Verdict::Different {
                    write!(
                        f,
                        " (primary {} rows, replica {} rows)",
                        rows(table.primary),
                        rows(table.replica)
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Compares `replica`'s sums with the `primary`'s at the greatest LSN both hold (each
/// ring in increasing LSN order). A table with no rows on one side and none on the other
/// is equal whether or not that side lists it.
#[must_use]
pub fn compare(name: &str, primary: &[SumsAt], replica: &[SumsAt]) -> ReplicaCheck {
    let common = replica.iter().rev().find_map(|theirs| {
        primary
            .binary_search_by_key(&theirs.lsn, |ours| ours.lsn)
            .ok()
            .map(|at| (&primary[at], theirs))
    });
    let Some((ours, theirs)) = common else {
        return ReplicaCheck::not_comparable(name, no_common_lsn(primary, replica));
    };
    let nonempty = |sums: &SumsAt| -> BTreeMap<String, (u64, u64)> {
        sums.tables
            .iter()
            .filter(|(_, rows, _)| *rows > 0)
            .map(|(table, rows, checksum)| (table.clone(), (*rows, *checksum)))
            .collect()
    };
    let lsn = ours.lsn;
    let (mut ours, mut theirs) = (nonempty(ours), nonempty(theirs));
    let mut names: Vec<String> = ours.keys().chain(theirs.keys()).cloned().collect();
    names.sort();
    names.dedup();
    let tables: Vec<TableCheck> = names
        .into_iter()
        .map(|table| {
            let (primary, replica) = (ours.remove(&table), theirs.remove(&table));
            let verdict = if primary == replica {
                Verdict::Equal
            } else {
                Verdict::Different
            };
            TableCheck {
                table,
                verdict,
                primary,
                replica,
            }
        })
        .collect();
    let verdict = if tables.iter().any(|t| t.verdict == Verdict::Different) {
        Verdict::Different
    } else {
        Verdict::Equal
    };
    ReplicaCheck {
        name: name.to_owned(),
        verdict,
        lsn: Some(lsn),
        reason: None,
        tables,
    }
}

/// Why two rings share no LSN, for a person.
fn no_common_lsn(primary: &[SumsAt], replica: &[SumsAt]) -> String {
    let (Some(oldest), Some(newest)) = (primary.first(), replica.last()) else {
        return if primary.is_empty() {
            "the primary has no sums recorded".to_owned()
        } else {
            "the replica sent no sums (it holds no data)".to_owned()
        };
    };
    if newest.lsn < oldest.lsn {
        format!(
            "the replica is at LSN {}, behind the oldest LSN the primary still has sums for ({})",
            newest.lsn, oldest.lsn
        )
    } else {
        "no LSN recorded on both sides yet".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lsn: u64, tables: &[(&str, u64, u64)]) -> SumsAt {
        SumsAt {
            lsn,
            tables: tables
                .iter()
                .map(|(name, rows, checksum)| ((*name).to_owned(), *rows, *checksum))
                .collect(),
        }
    }

    #[test]
    fn equal_sums_at_the_greatest_common_lsn_are_equal() {
        let primary = [
            at(3, &[("a", 1, 10)]),
            at(5, &[("a", 2, 20)]),
            at(6, &[("a", 3, 99)]),
        ];
        let replica = [at(2, &[("a", 1, 7)]), at(5, &[("a", 2, 20)])];
        let check = compare("r1", &primary, &replica);
        assert_eq!(check.verdict, Verdict::Equal);
        assert_eq!(check.lsn, Some(5));
        assert_eq!(check.tables.len(), 1);
        assert_eq!(check.tables[0].verdict, Verdict::Equal);
    }

    #[test]
    fn a_different_checksum_or_row_count_is_different_per_table() {
        let primary = [at(4, &[("a", 2, 20), ("b", 1, 5), ("c", 1, 1)])];
        let replica = [at(4, &[("a", 2, 21), ("b", 2, 5), ("c", 1, 1)])];
        let check = compare("r1", &primary, &replica);
        assert_eq!(check.verdict, Verdict::Different);
        assert_eq!(
            check.table_verdicts(),
            [
                ("a", Verdict::Different),
                ("b", Verdict::Different),
                ("c", Verdict::Equal)
            ]
        );
    }

    #[test]
    fn a_table_on_one_side_only_differs_unless_it_is_empty() {
        let primary = [at(4, &[("a", 1, 1), ("gone", 0, 0)])];
        let replica = [at(4, &[("a", 1, 1), ("extra", 1, 9)])];
        let check = compare("r1", &primary, &replica);
        assert_eq!(check.verdict, Verdict::Different);
        let extra = check.tables.iter().find(|t| t.table == "extra").unwrap();
        assert_eq!((extra.primary, extra.replica), (None, Some((1, 9))));
        assert!(check.tables.iter().all(|t| t.table != "gone"));
    }

    #[test]
    fn no_common_lsn_is_not_comparable_with_a_reason() {
        let primary = [at(10, &[("a", 1, 1)]), at(12, &[("a", 2, 2)])];
        let behind = compare("r1", &primary, &[at(4, &[("a", 1, 1)])]);
        assert_eq!(behind.verdict, Verdict::NotComparable);
        assert!(behind.reason.unwrap().contains("behind"));
        let interleaved = compare("r1", &primary, &[at(11, &[("a", 1, 1)])]);
        assert_eq!(interleaved.verdict, Verdict::NotComparable);
        assert!(interleaved.reason.unwrap().contains("no LSN"));
        let empty = compare("r1", &primary, &[]);
        assert!(empty.reason.unwrap().contains("no sums"));
    }

    #[test]
    fn a_report_is_ok_unless_a_replica_differs() {
        let equal = compare("a", &[at(1, &[("t", 1, 1)])], &[at(1, &[("t", 1, 1)])]);
        let different = compare("b", &[at(1, &[("t", 1, 1)])], &[at(1, &[("t", 1, 2)])]);
        let unknown = ReplicaCheck::not_comparable("c", "not connected".into());
        let mut report = VerifyReport {
            lsn: 1,
            replicas: vec![equal, unknown],
        };
        assert!(report.ok());
        assert_eq!(report.compared(), 1);
        report.replicas.push(different);
        assert!(!report.ok());
        let text = report.to_string();
        assert!(text.contains("b: different at LSN 1"), "{text}");
        assert!(text.contains("c: not comparable (not connected)"), "{text}");
    }
}
