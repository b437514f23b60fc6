//! The cache over nodes: the cluster client of `crate::cache::client`, with values
//! decoded to Python and the nodes' own figures gathered for `stats()`.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::super::errors::{raise, run_detached};
use super::super::value::decode_py_value;
use super::{BackendFigures, Floor};
use crate::cache::client::{Cluster, ClusterOptions, Lookup};
use crate::cache::lru::Version;
use crate::error::CacheError;

/// How long a node that failed is left out before it is asked whether it caught up.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The INFO fields summed over the nodes into the cache's totals, with their names there.
const SUMMED: [(&str, &str); 3] = [
    ("evicted_keys", "evictions"),
    ("expired_keys", "expirations"),
    ("invalidations", "invalidations"),
];

pub(super) struct Remote {
    cluster: Cluster,
    addresses: Vec<String>,
    /// Failures a read or a fill survived (the source answered instead), and the last.
    failures: Mutex<(u64, Option<String>)>,
}

impl Remote {
    pub(super) fn connect(
        py: Python<'_>,
        nodes: Vec<String>,
        vnodes: usize,
        token: Option<String>,
        timeout: Duration,
    ) -> PyResult<Self> {
        let addresses = nodes.clone();
        let options = ClusterOptions {
            nodes,
            token,
            vnodes,
            timeout,
            retry_after: RETRY_AFTER,
        };
        let cluster = run_detached(py, move || Cluster::new(options))?;
        Ok(Self {
            cluster,
            addresses,
            failures: Mutex::new((0, None)),
        })
    }

    pub(super) fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// Closes its connections to the nodes.
    pub(super) fn disconnect(&self) {
        self.cluster.close();
    }

    fn failed(&self, err: &crate::error::Error) {
        self.failed_because(err.to_string());
    }

    fn failed_because(&self, reason: String) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.0 += 1;
        failures.1 = Some(reason);
    }

    /// A failure the source answers for, except a node that refused the token: a wrong
    /// token is the caller's to fix, and reading around it would hide it for good (every
    /// read a miss, at the source's cost).
    fn survived(&self, py: Python<'_>, err: &crate::error::Error) -> PyResult<()> {
        if let crate::error::Error::Cache(CacheError::Reply { node, reason }) = err {
            if reason.starts_with("NOAUTH") || reason.starts_with("WRONGPASS") {
                let message = format!("cache node {node} refused the token: {reason}");
                return Err(raise(py, "AuthError", (message,)));
            }
        }
        self.failed(err);
        Ok(())
    }

    /// A hit decoded, or on a miss the position a read through must reach. A cache that
    /// cannot answer is a miss: the source answers instead (counted in `stats()`).
    fn found(&self, py: Python<'_>, lookup: Lookup) -> Result<Py<PyAny>, Floor> {
        match lookup {
            Lookup::Hit { value, version } => {
                self.cluster.observe(version.lsn);
                match decode_py_value(py, &value) {
                    Ok(decoded) => Ok(decoded.unbind()),
                    // Bytes another client put there (any Redis client may write to a
                    // node): a miss, counted, and the read through's fill replaces them.
                    Err(undecodable) => {
                        self.failed_because(format!(
                            "a cached value does not decode (written by another client?): \
                             {undecodable}"
                        ));
                        Err(Some(version))
                    }
                }
            }
            Lookup::Miss { at } => {
                self.cluster.observe(at.lsn);
                Err(Some(at))
            }
            Lookup::Unavailable => Err(None),
        }
    }

    pub(super) fn get(&self, py: Python<'_>, wire: &[u8]) -> PyResult<Result<Py<PyAny>, Floor>> {
        match run_detached(py, || Ok(self.cluster.get(wire))) {
            Ok(Ok(lookup)) => Ok(self.found(py, lookup)),
            Ok(Err(err)) => {
                self.survived(py, &err)?;
                Ok(Err(None))
            }
            Err(err) => Err(err),
        }
    }

    pub(super) fn get_many(
        &self,
        py: Python<'_>,
        wires: &[Vec<u8>],
    ) -> PyResult<Vec<Result<Py<PyAny>, Floor>>> {
        match run_detached(py, || Ok(self.cluster.get_many(wires)))? {
            Ok(lookups) => Ok(lookups
                .into_iter()
                .map(|lookup| self.found(py, lookup))
                .collect()),
            Err(err) => {
                self.survived(py, &err)?;
                Ok(wires.iter().map(|_| Err(None)).collect())
            }
        }
    }

    /// Fills `wire` if no newer write is known there: whether it was stored, or `None`
    /// if no node could take it (the value stays uncached; counted as a failure).
    pub(super) fn fill(
        &self,
        py: Python<'_>,
        wire: &[u8],
        version: Version,
        bytes: &[u8],
        ttl_ms: Option<u64>,
    ) -> Option<bool> {
        let ttl = ttl_ms.map(Duration::from_millis);
        match py.detach(|| self.cluster.fill(wire, version, bytes, ttl)) {
            Ok(stored) => Some(stored),
            Err(err) => {
                self.failed(&err);
                None
            }
        }
    }

    pub(super) fn set(
        &self,
        py: Python<'_>,
        wire: &[u8],
        bytes: &[u8],
        ttl_ms: Option<u64>,
    ) -> PyResult<()> {
        let ttl = ttl_ms.map(Duration::from_millis);
        run_detached(py, || self.cluster.set(wire, bytes, ttl))
    }

    pub(super) fn invalidate(&self, py: Python<'_>, wire: Vec<u8>) -> PyResult<u64> {
        run_detached(py, || self.cluster.invalidate(&[wire]))
    }

    pub(super) fn invalidate_prefix(&self, py: Python<'_>, prefix: &[u8]) -> PyResult<u64> {
        run_detached(py, || self.cluster.invalidate_prefix(prefix))
    }

    /// The nodes' figures: their sums, and each node's own by address.
    pub(super) fn stats<'py>(&self, py: Python<'py>) -> PyResult<BackendFigures<'py>> {
        let reports = py.detach(|| self.cluster.nodes());
        let nodes = PyDict::new(py);
        let mut totals = [0u64; SUMMED.len()];
        let mut keys = 0;
        // What the nodes' connections failed with (a read or fill the source answered).
        let (mut node_errors, mut node_error) = (0, None);
        for report in reports {
            let node = PyDict::new(py);
            node.set_item("state", report.standing.name())?;
            if let Some(info) = &report.info {
                let field = |name: &str| -> u64 {
                    info.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
                };
                for (total, (name, shown)) in totals.iter_mut().zip(SUMMED) {
                    *total += field(name);
                    node.set_item(shown, field(name))?;
                }
                keys += field("keys");
                for name in ["keyspace_hits", "keyspace_misses", "keys", "processed_lsn"] {
                    node.set_item(name.trim_start_matches("keyspace_"), field(name))?;
                }
            }
            node.set_item("errors", report.failures)?;
            node.set_item("last_error", &report.last_error)?;
            node_errors += report.failures;
            node_error = node_error.or_else(|| report.last_error.clone());
            nodes.set_item(&report.address, node)?;
        }
        let [evictions, expirations, invalidations] = totals;
        let (own_errors, own_error) = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let errors = own_errors + node_errors;
        let last_error = own_error.or(node_error);
        Ok(BackendFigures {
            evictions,
            expirations,
            invalidations,
            keys,
            errors,
            last_error,
            nodes,
        })
    }
}
