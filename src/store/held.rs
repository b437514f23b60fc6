//! A follower's entries held back from its readers: written to its log (and synced, so
//! that its acks may carry them) but applied only once its primary says they are durable
//! there. A primary ships entries before its own fdatasync ends only to a replica that
//! holds them back like this, so that its fdatasync and the replica's overlap (DESIGN §1;
//! the protocol side is `replication::machine::replica`).
//!
//! Part of the commit pipeline's state: a store that holds nothing back releases every
//! LSN, and its entries are applied as they are flushed.

use std::collections::VecDeque;

use super::commit::Pending;

/// Where a follower's log and its readers stand, and the entries between them.
pub(crate) struct Held {
    /// Entries up to here may be applied (`u64::MAX`: a store that holds nothing back).
    pub release_lsn: u64,
    /// Written to the log and not applied, in LSN order.
    pub entries: VecDeque<Pending>,
    /// The last LSN written to the log, applied or not.
    pub written_lsn: u64,
    /// The last LSN durable in the log.
    pub synced_lsn: u64,
}

impl Held {
    /// A log that ends at `last`, with nothing held.
    pub fn new(last: u64) -> Self {
        Self {
            release_lsn: u64::MAX,
            entries: VecDeque::new(),
            written_lsn: last,
            synced_lsn: last,
        }
    }

    /// Whether held entries may be applied now.
    pub fn releasable(&self) -> bool {
        self.entries
            .front()
            .is_some_and(|e| e.lsn <= self.release_lsn)
    }

    /// The entries a flush applies, in order: the held ones released, then those of
    /// `pending` up to the release LSN once nothing older stays held. The others are held.
    pub fn take_applicable(&mut self, pending: Vec<Pending>) -> Vec<Pending> {
        let mut apply = Vec::with_capacity(pending.len());
        while let Some(entry) = self.entries.front() {
            if entry.lsn > self.release_lsn {
                break;
            }
            apply.extend(self.entries.pop_front());
        }
        for entry in pending {
            if self.entries.is_empty() && entry.lsn <= self.release_lsn {
                apply.push(entry);
            } else {
                self.entries.push_back(entry);
            }
        }
        apply
    }

    /// Undoes [`Held::take_applicable`] for a flush whose records the log refused:
    /// `applying`, what that flush would have applied, is held again if it was written
    /// before `from`; every entry from `from` on leaves (it is not in the log) and is
    /// returned, in LSN order.
    pub fn put_back(&mut self, applying: Vec<Pending>, from: u64) -> Vec<Pending> {
        let (written, mut refused): (Vec<Pending>, Vec<Pending>) =
            applying.into_iter().partition(|e| e.lsn < from);
        let kept = self.entries.iter().take_while(|e| e.lsn < from).count();
        refused.extend(self.entries.drain(kept..));
        for entry in written.into_iter().rev() {
            self.entries.push_front(entry);
        }
        refused.sort_by_key(|e| e.lsn);
        refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(lsns: std::ops::RangeInclusive<u64>) -> Vec<Pending> {
        lsns.map(|lsn| Pending {
            lsn,
            ops: Vec::new(),
            quick: None,
            replicated: true,
        })
        .collect()
    }

    fn lsns(entries: &[Pending]) -> Vec<u64> {
        entries.iter().map(|e| e.lsn).collect()
    }

    #[test]
    fn entries_past_the_release_wait_and_everything_after_them_waits_too() {
        let mut held = Held::new(0);
        assert_eq!(lsns(&held.take_applicable(pending(1..=3))), vec![1, 2, 3]);
        held.release_lsn = 4;
        assert_eq!(lsns(&held.take_applicable(pending(4..=6))), vec![4]);
        assert!(!held.releasable());
        held.release_lsn = 5;
        assert!(held.releasable());
        assert_eq!(
            lsns(&held.take_applicable(pending(7..=7))),
            vec![5],
            "7 waits behind 6: order is kept"
        );
        held.release_lsn = 9;
        assert_eq!(lsns(&held.take_applicable(Vec::new())), vec![6, 7]);
        assert!(held.entries.is_empty());
    }

    proptest::proptest! {
        /// A flush the log refused puts everything back as it was before its entries
        /// were taken, and returns exactly the refused entries.
        #[test]
        fn put_back_undoes_take_applicable(
            held_count in 0u64..6,
            pending_count in 1u64..6,
            release in proptest::option::of(0u64..14),
        ) {
            let mut held = Held::new(0);
            held.release_lsn = 0;
            held.take_applicable(pending(1..=held_count));
            held.release_lsn = release.unwrap_or(u64::MAX);
            let before = lsns(held.entries.make_contiguous());
            let from = held_count + 1;
            let applying = held.take_applicable(pending(from..=held_count + pending_count));
            let refused = held.put_back(applying, from);
            proptest::prop_assert_eq!(lsns(&refused), (from..from + pending_count).collect::<Vec<_>>());
            proptest::prop_assert_eq!(lsns(held.entries.make_contiguous()), before);
        }
    }
}
