//! RESP, the Redis protocol, without sockets: [`parse`] reads requests from the front of a
//! buffer and [`encode`] writes replies, in protocol 2 or 3 (chosen by `HELLO`), into a
//! byte vector or a connection's [`Output`] queue.
//!
//! Requests come as multibulk (`*<n>\r\n` then n × `$<len>\r\n<bytes>\r\n`), as client
//! libraries send them, or inline (`SET key "a value"\n`), as people type them. A caller
//! parses the front of what it has read, drops the bytes used and parses again. For any
//! buffer, a prefix of it parses to [`Parse::Incomplete`] or to exactly what the whole
//! buffer parses to, so the outcome never depends on how the bytes were split across
//! reads; [`parse_from`] keeps a [`Progress`] between reads so that a request arriving in
//! many reads is not read again from its start each time.

mod inline;
mod output;
mod parse;
mod reply;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

pub use output::{give_back, Output};
pub use parse::{parse, parse_from, Limits, Parse, Progress};
pub use reply::{encode, Reply, Sink};
