//! `CacheNode`: a Redis-protocol LRU cache node, kept consistent by a primary's log.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::args::seconds;
use super::errors::{raise, run_detached};
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
            "on_write must be 'drop' or 'refresh', not {other:?}"
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
        capacity: usize,
        max_bytes: Option<usize>,
        ttl: Option<f64>,
        follow: Option<String>,
        token: Option<String>,
        name: Option<String>,
        on_write: &str,
    ) -> PyResult<Self> {
        if let Some(name) = &name {
            crate::store::validate_table_name(name).map_err(|_| {
                PyValueError::new_err(format!(
                    "invalid node name {name:?}: use letters, digits, '_', '.', '-'"
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

    /// Counters and state: `hits`, `misses`, `hit_ratio`, `evictions`, `expirations`,
    /// `invalidations`, `stale_fills_refused`, `flushes`, `keys`, `bytes`, `processed_lsn`,
    /// `processed_epoch`, `log_lost`, `forks`, `follow_state`, `last_error`, `clients`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let guard = self.lock();
        let Some(running) = guard.as_ref() else {
            return Err(raise(py, "CacheError", ("the cache node is closed",)));
        };
        let node = running.node();
        let stats = PyDict::new(py);
        let counters = node.lru.counters();
        let looked = counters.hits + counters.misses;
        stats.set_item("hits", counters.hits)?;
        stats.set_item("misses", counters.misses)?;
        #[allow(clippy::cast_precision_loss)] // a ratio: 2^53 lookups are far away
        let ratio = if looked == 0 {
            0.0
        } else {
            counters.hits as f64 / looked as f64
        };
        stats.set_item("hit_ratio", ratio)?;
        stats.set_item("evictions", counters.evictions)?;
        stats.set_item("expirations", counters.expirations)?;
        stats.set_item("invalidations", counters.invalidations)?;
        stats.set_item("stale_fills_refused", counters.stale_fills_refused)?;
        stats.set_item("flushes", counters.flushes)?;
        stats.set_item("keys", node.lru.len())?;
        stats.set_item("bytes", node.lru.bytes())?;
        let processed = node.processed();
        stats.set_item("processed_lsn", processed.lsn)?;
        stats.set_item("processed_epoch", processed.epoch)?;
        stats.set_item("log_lost", node.following.log_lost)?;
        stats.set_item("forks", node.following.forks)?;
        let follow_state = if self.follow.is_some() {
            node.following.state.as_str()
        } else {
            "none"
        };
        stats.set_item("follow_state", follow_state)?;
        stats.set_item("last_error", node.following.last_error.clone())?;
        stats.set_item("clients", node.clients.0)?;
        Ok(stats)
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
        let follows = self
            .follow
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
