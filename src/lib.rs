//! replikv: replicated key-value stores with a durable change log.
pub mod codec;
pub mod error;
pub mod log;

pub use error::{Error, Result};
