//! replikv: replicated key-value stores built on one durable change log.
//!
//! Every committed transaction is one CRC-framed entry of a segmented log, fdatasync'ed
//! (with group commit) before it becomes visible; redb tables are applied from the log in
//! LSN order. The Python package `replikv` wraps this crate (feature `python`).
//!
//! ```
//! use replikv::codec::{encode_key, KeyRef, Op};
//! use replikv::store::{Durability, Store, StoreOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path().join("db"), StoreOptions::default())?;
//! let key = encode_key(KeyRef::Str("ana@example.com"));
//! let receipt = store.commit(vec![Op { table: "subscribers".into(), key: key.clone(), value: Some(b"\x80".to_vec()) }], None)?;
//! // No primary serves this store: the write is durable here only.
//! assert_eq!((receipt.lsn, receipt.durability), (1, Durability::Local));
//! assert_eq!(store.get_with("subscribers", &key, |v| v.map(<[u8]>::to_vec))?, Some(b"\x80".to_vec()));
//! store.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod arrow;
pub mod cache;
pub mod codec;
pub mod error;
pub mod feed;
pub mod follow;
pub mod fork;
pub mod human;
pub mod log;
pub mod net;
// The binding's doc comments are Python docstrings (`help()` shows them, and
// dev/stub_docs.py copies them into the stub), written in reST, not Markdown.
#[cfg(feature = "python")]
#[allow(clippy::doc_markdown)]
mod python;
pub mod replication;
pub mod store;

pub use error::{Error, Result};
