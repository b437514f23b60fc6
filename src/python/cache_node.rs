//! `CacheNode`: a Redis-protocol LRU cache node, kept consistent by a primary's log.

use crate::python::display::quoted;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::args::{int, opt_int, seconds, size};
use super::cache::stats::{hit_ratio, PyCacheNodeStats};
use super::display::html;
use super::errors::{raise, run_detached, to_py};
use crate::cache::cache_node::{CacheNode, CacheNodeOptions};
use crate::cache::lru::OnWrite;
use crate::fork::ParentOnly;

/// An LRU cache node that speaks the Redis protocol (redis-cli, redis-py and
/// redis-benchmark work unchanged).
///
/// With ``follow=`` it consumes that primary's change log: each write drops (or, with
/// ``on_write="refresh"``, replaces) the keys it holds, so that once it has processed a
/// write's entry no read returns an older value. A cache key on the wire is
/// ``table:tag:key`` (tag ``i`` for an int, ``s`` for a str, ``b`` for bytes); ``GET``
/// returns the value's MessagePack bytes.
#[pyclass(frozen, module = "replikv._core", name = "CacheNode")]
pub(crate) struct PyCacheNode {
    node: ParentOnly<Mutex<Option<CacheNode>>>,
    address: String,
    follow: Option<String>,
    capacity: usize,
}

fn on_write(value: &str) -> PyResult<OnWrite> {
    match value {
        "drop" => Ok(OnWrite::Drop),
        "refresh" => Ok(OnWrite::Refresh),
        other => Err(PyValueError::new_err(format!(
            "on_write must be 'drop' or 'refresh', not {}",
            quoted(other)
        ))),
    }
}

impl PyCacheNode {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<CacheNode>> {
        self.node
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[pymethods]
impl PyCacheNode {
    #[new]
    #[pyo3(signature = (listen = "127.0.0.1:0", *, capacity = 100_000, max_bytes = None, ttl = None, follow = None, token = None, name = None, on_write = "drop"))]
    #[allow(clippy::too_many_arguments)] // the keyword arguments of the Python API
    fn new(
        py: Python<'_>,
        listen: &str,
        #[pyo3(from_py_with = int)] capacity: i128,
        #[pyo3(from_py_with = opt_int)] max_bytes: Option<i128>,
        ttl: Option<f64>,
        follow: Option<String>,
        token: Option<String>,
        name: Option<String>,
        on_write: &str,
    ) -> PyResult<Self> {
        if let Some(name) = &name {
            crate::store::validate_table_name(name).map_err(|_| {
                PyValueError::new_err(format!(
                    "invalid node name {}: use letters, digits, '_', '.', '-'",
                    quoted(name)
                ))
            })?;
        }
        let ttl = match ttl {
            Some(ttl) if ttl <= 0.0 => {
                return Err(PyValueError::new_err(format!(
                    "ttl must be more than 0 seconds, not {ttl}"
                )))
            }
            Some(ttl) => Some(seconds("ttl", ttl)?.max(Duration::from_millis(1))),
            None => None,
        };
        let capacity = size("capacity", capacity)?;
        let max_bytes = max_bytes.map(|b| size("max_bytes", b)).transpose()?;
        let options = CacheNodeOptions {
            listen: listen.to_owned(),
            capacity,
            max_bytes,
            ttl,
            on_write: self::on_write(on_write)?,
            follow: follow.clone(),
            token,
            name,
        };
        let node = run_detached(py, move || CacheNode::start(&options))?;
        Ok(Self {
            address: node.address().to_string(),
            node: ParentOnly::new(Mutex::new(Some(node))),
            follow,
            capacity,
        })
    }

    /// The address it listens on (`host:port`; the real port if 0 was asked).
    #[getter]
    fn address(&self) -> String {
        self.address.clone()
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.lock().is_none()
    }

    /// Its counters and where it stands in the log it follows.
    ///
    /// Raises:
    ///     CacheError: the node is closed.
    fn stats(&self, py: Python<'_>) -> PyResult<PyCacheNodeStats> {
        let guard = self.lock();
        let Some(running) = guard.as_ref() else {
            return Err(raise(py, "CacheError", ("the cache node is closed",)));
        };
        let node = running.node();
        let counters = node.lru.counters();
        let processed = node.processed();
        let follow_state = if self.follow.is_some() {
            node.following.state.as_str()
        } else {
            "none"
        };
        Ok(PyCacheNodeStats {
            address: self.address.clone(),
            hits: counters.hits,
            misses: counters.misses,
            hit_ratio: hit_ratio(counters.hits, counters.misses),
            evictions: counters.evictions,
            expirations: counters.expirations,
            invalidations: counters.invalidations,
            stale_fills_refused: counters.stale_fills_refused,
            flushes: counters.flushes,
            keys: node.lru.len() as u64,
            bytes: node.lru.bytes() as u64,
            processed_lsn: processed.lsn,
            processed_epoch: processed.epoch,
            log_lost: node.following.log_lost,
            forks: node.following.forks,
            follow_state: follow_state.to_owned(),
            last_error: node.following.last_error.clone(),
            clients: node.clients.0,
        })
    }

    /// Follows the primary at ``address`` from now on (after a failover, say): the node
    /// resumes from its log position when its history matches the new primary's, and
    /// flushes on a fork or if the log it needs is gone there.
    ///
    /// Raises:
    ///     CacheError: the node is closed, or follows no log (it was started without
    ///         ``follow=``).
    ///     ValueError: ``address`` is not ``host:port``, or is the node's own.
    fn follow(&self, py: Python<'_>, address: &str) -> PyResult<()> {
        let guard = self.lock();
        let Some(running) = guard.as_ref() else {
            return Err(raise(py, "CacheError", ("the cache node is closed",)));
        };
        if self.follow.is_none() {
            let message = "this node follows no log: start it with follow= a primary";
            return Err(raise(py, "CacheError", (message,)));
        }
        running.follow(address).map_err(|e| to_py(py, e))
    }

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    /// Stops following and serving; returns once the port is free. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self.lock().take();
        if let Some(mut node) = taken {
            run_detached(py, move || {
                node.close();
                Ok(())
            })?;
        }
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let guard = self.lock();
        let Some(running) = guard.as_ref() else {
            return format!("<CacheNode {} closed>", self.address);
        };
        let node = running.node();
        let follows = node
            .following
            .primary
            .as_ref()
            .map(|p| format!(" follows {p} ({})", node.following.state))
            .unwrap_or_default();
        format!(
            "<CacheNode {} keys={}/{} processed_lsn={}{follows}>",
            self.address,
            node.lru.len(),
            self.capacity,
            node.processed().lsn
        )
    }
}
