//! `Cache.stats()` and `CacheNode.stats()` as typed reports: readable attributes, a
//! one-line repr, `to_dict()` for JSON and `_repr_html_()` for Jupyter.

use crate::python::display::quoted;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::super::display::{html, plain};

/// Hits over lookups (0.0 before the first lookup).
#[allow(clippy::cast_precision_loss)] // a ratio: 2^53 lookups are far away
pub(crate) fn hit_ratio(hits: u64, misses: u64) -> f64 {
    if hits + misses == 0 {
        0.0
    } else {
        hits as f64 / (hits + misses) as f64
    }
}

/// What a `Cache` counted: lookups, loads from its source, and what its backend dropped.
/// Over cache nodes, `evictions`, `expirations`, `invalidations` and `keys` are the nodes'
/// sums, and `nodes` holds each node's own figures by address (empty in-process).
#[pyclass(frozen, get_all, module = "replikv._core", name = "CacheStats")]
pub(crate) struct PyCacheStats {
    /// Reads answered from the cache.
    pub(super) hits: u64,
    /// Reads that went to the source.
    pub(super) misses: u64,
    /// ``hits / (hits + misses)``; 0.0 before the first lookup.
    pub(super) hit_ratio: f64,
    /// Entries dropped to make room.
    pub(super) evictions: u64,
    /// Entries dropped because their TTL passed.
    pub(super) expirations: u64,
    /// Cached keys dropped or refreshed by a write.
    pub(super) invalidations: u64,
    /// Fills refused because a newer write was known (the stale-set race).
    pub(super) stale_fills_refused: u64,
    /// Keys cached now.
    pub(super) keys: u64,
    /// Reads from the source on a miss.
    pub(super) loads: u64,
    /// Misses that waited for another reader's load of the same key.
    pub(super) loads_coalesced: u64,
    /// Seconds spent loading from the source.
    pub(super) load_seconds: f64,
    /// Node failures a read or a fill survived (the source answered; 0 in-process).
    pub(super) errors: u64,
    /// The last error of a cache node, or ``None``.
    pub(super) last_error: Option<String>,
    /// Each node's figures by address: ``state``, ``evictions``, ``expirations``,
    /// ``invalidations``, ``hits``, ``misses``, ``keys``, ``processed_lsn``, ``errors``,
    /// ``last_error`` (empty in-process).
    pub(super) nodes: Py<PyDict>,
}

#[pymethods]
impl PyCacheStats {
    /// The fields as JSON-able values.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = PyDict::new(py);
        fields.set_item("hits", self.hits)?;
        fields.set_item("misses", self.misses)?;
        fields.set_item("hit_ratio", self.hit_ratio)?;
        fields.set_item("evictions", self.evictions)?;
        fields.set_item("expirations", self.expirations)?;
        fields.set_item("invalidations", self.invalidations)?;
        fields.set_item("stale_fills_refused", self.stale_fills_refused)?;
        fields.set_item("keys", self.keys)?;
        fields.set_item("loads", self.loads)?;
        fields.set_item("loads_coalesced", self.loads_coalesced)?;
        fields.set_item("load_seconds", self.load_seconds)?;
        fields.set_item("errors", self.errors)?;
        fields.set_item("last_error", &self.last_error)?;
        fields.set_item("nodes", self.nodes.bind(py))?;
        plain(&fields)
    }

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "CacheStats(hits={}, misses={}, hit_ratio={:.3}, keys={}, evictions={}, loads={}, \
             nodes={})",
            self.hits,
            self.misses,
            self.hit_ratio,
            self.keys,
            self.evictions,
            self.loads,
            self.nodes.bind(py).len()
        )
    }
}

/// What a `CacheNode` counted and where it stands in the log it follows.
#[pyclass(frozen, get_all, module = "replikv._core", name = "CacheNodeStats")]
pub(crate) struct PyCacheNodeStats {
    /// The ``host:port`` it serves on.
    pub(crate) address: String,
    /// ``GET``s answered from its LRU.
    pub(crate) hits: u64,
    /// ``GET``s of keys it did not hold.
    pub(crate) misses: u64,
    /// ``hits / (hits + misses)``; 0.0 before the first lookup.
    pub(crate) hit_ratio: f64,
    /// Values dropped to stay within its memory bound.
    pub(crate) evictions: u64,
    /// Values dropped when their TTL passed.
    pub(crate) expirations: u64,
    /// Values dropped (or refreshed) because the log wrote their key.
    pub(crate) invalidations: u64,
    /// Fills refused because their value was older than a write it had seen.
    pub(crate) stale_fills_refused: u64,
    /// Times everything was dropped: a ``FLUSHALL``, a fork of its primary's history, a
    /// lost log position (0 for a node that never flushed: starting to follow is not one).
    pub(crate) flushes: u64,
    /// Keys it holds now.
    pub(crate) keys: u64,
    /// What it counts against ``max_bytes``: the bytes of every cached key and value,
    /// plus 96 per entry for its bookkeeping.
    pub(crate) bytes: u64,
    /// The last log entry it applied.
    pub(crate) processed_lsn: u64,
    /// The epoch of the last log entry it applied.
    pub(crate) processed_epoch: u64,
    /// Times the log it needed was gone (it flushed and resumed).
    pub(crate) log_lost: u64,
    /// Times its primary's history forked from what it had seen (it flushed).
    pub(crate) forks: u64,
    /// The state of its link to the primary (``'none'`` without ``follow``).
    pub(crate) follow_state: String,
    /// Why its link to the primary last failed, or ``None``.
    pub(crate) last_error: Option<String>,
    /// Connections open now.
    pub(crate) clients: u64,
}

#[pymethods]
impl PyCacheNodeStats {
    /// The fields as JSON-able values.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = PyDict::new(py);
        fields.set_item("address", &self.address)?;
        fields.set_item("hits", self.hits)?;
        fields.set_item("misses", self.misses)?;
        fields.set_item("hit_ratio", self.hit_ratio)?;
        fields.set_item("evictions", self.evictions)?;
        fields.set_item("expirations", self.expirations)?;
        fields.set_item("invalidations", self.invalidations)?;
        fields.set_item("stale_fills_refused", self.stale_fills_refused)?;
        fields.set_item("flushes", self.flushes)?;
        fields.set_item("keys", self.keys)?;
        fields.set_item("bytes", self.bytes)?;
        fields.set_item("processed_lsn", self.processed_lsn)?;
        fields.set_item("processed_epoch", self.processed_epoch)?;
        fields.set_item("log_lost", self.log_lost)?;
        fields.set_item("forks", self.forks)?;
        fields.set_item("follow_state", &self.follow_state)?;
        fields.set_item("last_error", &self.last_error)?;
        fields.set_item("clients", self.clients)?;
        plain(&fields)
    }

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    fn __repr__(&self) -> String {
        format!(
            "CacheNodeStats(address={}, keys={}, hit_ratio={:.3}, evictions={}, \
             processed_lsn={}, follow_state={})",
            quoted(&self.address),
            self.keys,
            self.hit_ratio,
            self.evictions,
            self.processed_lsn,
            quoted(&self.follow_state)
        )
    }
}
