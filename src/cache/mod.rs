//! The cache node's pieces that need no socket: for now, the Redis protocol (RESP) it
//! speaks, so that redis-cli, redis-py and redis-benchmark work against it unchanged.

pub mod resp;
