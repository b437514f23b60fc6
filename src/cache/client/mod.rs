//! The client side of a cache cluster: keys spread over nodes by consistent hashing
//! ([`Ring`]), one blocking connection per caller at a time ([`Conn`]), and a
//! [`Cluster`] that reads and fills versioned values, invalidates everywhere, leaves out
//! a node that fails and takes it back only once it has caught up with the log.
//!
//! ```no_run
//! use replikv::cache::client::{Cluster, ClusterOptions, Lookup};
//! use replikv::cache::lru::Version;
//!
//! /// Stands for a read of the store at `min_lsn` or later: the value, and the version
//! /// of the snapshot it was read in.
//! fn read_source(key: &[u8], min_lsn: u64) -> (Vec<u8>, Version) {
//!     (key.to_vec(), Version { epoch: 1, lsn: min_lsn })
//! }
//!
//! let cache = Cluster::new(ClusterOptions {
//!     nodes: vec!["127.0.0.1:7501".into(), "127.0.0.1:7502".into()],
//!     ..ClusterOptions::default()
//! })?;
//! let key = b"subscribers:ana";
//! let value = match cache.get(key)? {
//!     Lookup::Hit { value, .. } => value,
//!     Lookup::Miss { at } => {
//!         let (value, version) = read_source(key, at.lsn);
//!         // Refused if the node has seen a newer write of the key meanwhile.
//!         cache.fill(key, version, &value, None)?;
//!         value
//!     }
//!     Lookup::Unavailable => read_source(key, 0).0,
//! };
//! # drop(value);
//! # Ok::<(), replikv::Error>(())
//! ```

mod cluster;
mod conn;
mod health;
mod member;
mod reply;
mod report;
mod ring;
mod routing;

pub use cluster::{Cluster, ClusterOptions, Lookup};
pub use conn::Conn;
pub use health::Standing;
pub use reply::Value;
pub use report::NodeReport;
pub use ring::Ring;
