//! The cache tier (DESIGN §1, guarantee 7): LRU nodes kept consistent by the change log.

pub mod command;
pub mod invalidator;
pub mod lru;
pub mod node;
pub mod server;
pub mod tombstones;
pub mod wire_key;
//TMP pub mod cache_node;
