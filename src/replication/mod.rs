//! Replication: the wire protocol, the handshake's decisions, and (in `net`) the primary
//! and replica that speak them over TCP.

pub mod commit_times;
pub mod handover;
pub mod handshake;
pub mod machine;
pub mod monitor;
pub mod primary;
pub mod protocol;
pub mod quorum;
pub mod replica;
pub mod ship;
pub mod sim;
pub mod slots;
pub mod status;
pub mod verify;
pub mod wishes;
