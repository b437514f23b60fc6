//! The replication protocol's decisions as pure state machines (events in, actions out),
//! with no sockets, clocks or threads inside: the TCP glue in `primary`/`replica` drives
//! them for real, and `sim` drives them over a seeded fake network, clock and disk.

pub mod primary;
pub mod replica;

pub use primary::{
    AckOutcome, LinkAction, LinkId, Micros, Peer, PrimaryConfig, PrimaryMachine, Shipped,
};
pub use replica::{ReplicaAction, ReplicaMachine};

/// The highest LSN that at least `quorum` of `acked` positions reach: the `quorum`-th
/// highest. Zero when fewer than `quorum` positions exist; a quorum of zero is met by
/// everything (`u64::MAX`).
#[must_use]
pub fn quorum_lsn(acked: impl Iterator<Item = u64>, quorum: usize) -> u64 {
    if quorum == 0 {
        return u64::MAX;
    }
    let mut acked: Vec<u64> = acked.collect();
    if acked.len() < quorum {
        return 0;
    }
    acked.sort_unstable_by(|a, b| b.cmp(a));
    acked[quorum - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fuzz_the_quorum_lsn_is_the_highest_lsn_that_quorum_positions_reach(
            acked in proptest::collection::vec(0u64..50, 0..8),
            quorum in 1usize..6,
        ) {
            let lsn = quorum_lsn(acked.iter().copied(), quorum);
            let reaching = |l: u64| acked.iter().filter(|a| **a >= l).count();
            if acked.len() < quorum {
                prop_assert_eq!(lsn, 0);
            } else {
                prop_assert!(reaching(lsn) >= quorum);
                prop_assert!(reaching(lsn + 1) < quorum, "the highest such LSN");
            }
        }
    }
}
