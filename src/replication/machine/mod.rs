//! The replication protocol's decisions as pure state machines (events in, actions out),
//! with no sockets, clocks or threads inside: the TCP glue in `primary`/`replica` drives
//! them for real, and `sim` drives them over a seeded fake network, clock and disk.

pub mod primary;
pub mod promotion;
pub mod replica;

pub use primary::{
    AckOutcome, LinkAction, LinkId, Micros, Peer, PrimaryConfig, PrimaryMachine, Shipped,
    MAX_AHEAD_ENTRIES,
};
pub use replica::{ReplicaAction, ReplicaMachine};

/// Bytes of entries a replica appends and applies in one go at most (plus the entry that
/// crossed the mark): it acks after each, so the primary allows it the time to apply this
/// much before it calls the replica stalled.
pub const APPLY_BATCH_BYTES: u64 = 32 << 20;

/// Bugs that can be planted in the machines on purpose, to show that the simulator
/// catches them.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Planted {
    /// None: the machines as they are.
    #[default]
    Nothing,
    /// The primary counts consumers (and replicas that do not fsync) toward the quorum.
    CountEveryone,
    /// A replica acknowledges entries as soon as they are appended, before they are
    /// durable.
    AckBeforeFsync,
    /// A replica that holds back lets readers see entries as soon as they arrive, before
    /// its primary said they are durable.
    ReleaseHeld,
    /// The primary's handshake resumes a replica that holds back where its log ends,
    /// without cutting the entries the primary lost.
    TrustHeld,
    /// A replica that holds back shows its whole log to readers when it restarts, the
    /// entries its primary had not confirmed among them.
    ReplayHeld,
    /// A replica's store never marks that it was sent entries its primary had not made
    /// durable: a restart shows its whole log, as if every entry were confirmed.
    NeverMarkUnconfirmed,
    /// A replica's store marks itself as holding unconfirmed entries whenever it connects,
    /// whatever its primary sends: a restart hides entries it showed, durable ones too.
    AlwaysMarkUnconfirmed,
    /// The primary counts a replica's acks toward the quorum as soon as it registers,
    /// before every member has recorded that it joined.
    CountJoiners,
    /// A primary that restarts counts every replica its slots name at once, those that
    /// were still joining too.
    ForgetJoining,
}
