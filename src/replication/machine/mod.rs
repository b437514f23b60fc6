//! The replication protocol's decisions as pure state machines (events in, actions out),
//! with no sockets, clocks or threads inside: the TCP glue in `primary`/`replica` drives
//! them for real, and `sim` drives them over a seeded fake network, clock and disk.

pub mod primary;
pub mod replica;

pub use primary::{
    AckOutcome, LinkAction, LinkId, Micros, Peer, PrimaryConfig, PrimaryMachine, Shipped,
};
pub use replica::{ReplicaAction, ReplicaMachine};
