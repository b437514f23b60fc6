//! The cache tier (DESIGN §1, guarantee 7): LRU nodes that speak the Redis protocol, kept
//! consistent by the change log. The pieces without sockets or clocks (the versioned LRU,
//! RESP, the commands) are pure; `server` and `cache_node` drive them over TCP, and
//! `client` spreads keys over many nodes.

pub mod cache_node;
pub mod client;
pub mod command;
pub mod invalidator;
pub mod lru;
pub mod node;
pub mod resp;
pub mod server;
pub mod tombstones;
pub mod wire_key;
