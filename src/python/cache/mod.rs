//! `Cache`: read-through caching in front of a store, in this process (a versioned LRU of
//! Python objects, invalidated by the store's own writes) or over cache nodes (consistent
//! hashing, versioned fills, invalidation from the primary's log).

mod load;
mod local;
mod remote;
pub(crate) mod stats;

use crate::python::display::quoted_list;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use self::load::{read_store, Flights, Source};
use self::local::{Local, PyValue};
use self::remote::Remote;
use self::stats::{hit_ratio, PyCacheStats};
use super::args::{int, names, opt_int, seconds, size};
use super::display::html;
use super::errors::{raise, run_detached};
use super::value::{decode_py_value, encode_py_value, encode_row_value, with_py_key};
use crate::cache::lru::{check_max_bytes, Fill, Version};
use crate::cache::wire_key::{table_prefix, wire_key};
use crate::codec::{encode_key, KeyRef};
use crate::store::{validate_table_name, Watching};

/// Where cached values live.
enum Backend {
    Local(std::sync::Arc<Local>),
    Remote(Box<Remote>),
}

/// What a backend counted, for `Cache.stats()`.
struct BackendFigures<'py> {
    evictions: u64,
    expirations: u64,
    invalidations: u64,
    keys: u64,
    /// Failures a read or a fill survived (the source answered instead), and the last.
    errors: u64,
    last_error: Option<String>,
    /// Each node's own figures by address (empty in-process).
    nodes: Bound<'py, PyDict>,
}

/// On a miss, the log position a read through must reach; `None` when the cache could not
/// answer (the source answers, and nothing is filled).
type Floor = Option<Version>;

/// What the client itself counts (hits and misses are the backend's in-process).
#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    loads_coalesced: AtomicU64,
    load_nanos: AtomicU64,
    stale_fills_refused: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A read-through cache in front of a store.
///
/// With ``nodes`` it spreads keys over cache nodes by consistent hashing (``vnodes``
/// points per node); without, it keeps an LRU of ``capacity`` entries in this process,
/// invalidated directly by the source store's writes. On a miss it reads ``source`` (a
/// ``Store``, a ``Replica`` or a callable ``(table, key) -> value``), caches the value
/// with the version it was read at, and makes one load for concurrent misses of a key.
#[pyclass(frozen, module = "replikv._core", name = "Cache")]
pub(crate) struct PyCache {
    backend: Backend,
    source: Source,
    ttl_ms: Option<u64>,
    /// How long a read through waits for a lagging replica to reach what the cache saw.
    patience: Duration,
    flights: Flights,
    counters: Counters,
    /// The watcher on the source store (in-process mode): dropped by `close()`, or with
    /// the cache if it is never closed.
    watching: Mutex<Option<Watching>>,
    closed: AtomicBool,
}

/// A TTL argument in milliseconds (`None`: none).
fn ttl_ms(name: &str, ttl: Option<f64>) -> PyResult<Option<u64>> {
    match ttl {
        None => Ok(None),
        Some(t) if t <= 0.0 => Err(PyValueError::new_err(format!(
            "{name} must be more than 0 seconds, not {t}"
        ))),
        Some(t) => {
            let ms = seconds(name, t)?.as_millis().max(1);
            Ok(Some(u64::try_from(ms).unwrap_or(u64::MAX)))
        }
    }
}

/// The wire key of `key` in `table` (`table:tag:key`).
fn wire_of(table: &str, key: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    validate_table_name(table).map_err(|e| PyValueError::new_err(e.to_string()))?;
    with_py_key(key, |k| wire_key(table, k))
}

impl PyCache {
    fn check_open(&self, py: Python<'_>) -> PyResult<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(raise(py, "CacheError", ("the cache is closed",)));
        }
        Ok(())
    }

    /// Refuses to answer from an in-process cache whose source store is closed: it no
    /// longer hears of writes (one reopened at the same path takes them unseen), so what it
    /// holds is dropped, and every call raises as a read of the source would.
    fn check_source(&self, py: Python<'_>, local: &Local) -> PyResult<()> {
        match self.source.store().filter(|store| store.is_closed()) {
            Some(store) => {
                local.drop_all();
                run_detached(py, || store.check_open())
            }
            None => Ok(()),
        }
    }

    fn count(&self, hit: bool) {
        bump(if hit {
            &self.counters.hits
        } else {
            &self.counters.misses
        });
    }

    /// The cached value of `wire`, if any (counted as a hit or a miss), and on a miss the
    /// log position a read through must reach.
    fn lookup(&self, py: Python<'_>, wire: &[u8]) -> PyResult<Result<Py<PyAny>, Floor>> {
        let found = match &self.backend {
            Backend::Local(local) => {
                self.check_source(py, local)?;
                match local.get(py, wire) {
                    Some(value) => Ok(value),
                    None => Err(Some(local.processed())),
                }
            }
            Backend::Remote(remote) => remote.get(py, wire)?,
        };
        self.count(found.is_ok());
        Ok(found)
    }

    /// Loads `key` from the source (one load per key at a time) and fills the cache.
    fn read_through(
        &self,
        py: Python<'_>,
        table: &str,
        key: &Bound<'_, PyAny>,
        wire: &[u8],
        floor: Floor,
    ) -> PyResult<Option<Py<PyAny>>> {
        let at_least = floor.map_or(0, |f| f.lsn);
        self.flights.run(
            py,
            wire,
            at_least,
            || bump(&self.counters.loads_coalesced),
            || self.load(py, table, key, wire, floor),
        )
    }

    fn load(
        &self,
        py: Python<'_>,
        table: &str,
        key: &Bound<'_, PyAny>,
        wire: &[u8],
        floor: Floor,
    ) -> PyResult<Option<Py<PyAny>>> {
        let started = Instant::now();
        bump(&self.counters.loads);
        // Taken before the read: a reset of the source's state after it refuses the fill.
        let resets = match &self.backend {
            Backend::Local(local) => local.resets(),
            Backend::Remote(_) => 0,
        };
        let loaded = match &self.source {
            Source::Nothing => None,
            Source::Store(store) => {
                let encoded = with_py_key(key, encode_key)?;
                let at_least = floor.map_or(0, |f| f.lsn);
                let read = read_store(py, store, table, &encoded, at_least, self.patience)?;
                if read.lsn < at_least {
                    // The node has seen a write this state lacks: its value may be older
                    // than one the cache returned before (DESIGN 3.7), so it is not given.
                    let message = format!(
                        "the cache's source has applied LSN {}, behind LSN {at_least} that \
                         the cache has seen, after {:?}: a lagging replica's value may be \
                         older than the cache's",
                        read.lsn, self.patience
                    );
                    return Err(raise(py, "ReplicationTimeout", (message, at_least)));
                }
                // The epoch of the state the value was read at, as the store's own history
                // says, not the newest epoch it has heard of: a replica that diverged (its
                // last entries are of a history a promotion cut off) may have heard of the
                // new epoch. That state is of the epoch of the entry after it, when the
                // history names one: a promoted replica's epoch begins after its last
                // entry, of the epoch before, and the state it was promoted at is the
                // new epoch's first (the nodes that followed it there are at that epoch).
                let epoch = store
                    .epoch_history()
                    .epoch_at(read.lsn.saturating_add(1))
                    .max(1);
                if let Some(seen) = floor.filter(|seen| epoch < seen.epoch) {
                    // At or past the node's position, a source that shares its history is
                    // of its epoch or a newer one: this one holds writes a promotion cut
                    // off, which no read may return (DESIGN 3.7).
                    let message = format!(
                        "the cache's source forks from the log its nodes follow: its state at \
                         LSN {} is of epoch {epoch}, the nodes have processed epoch {} (a \
                         replica left diverged by a promotion?): re-point or re-seed it",
                        read.lsn, seen.epoch
                    );
                    return Err(raise(py, "ReplicationError", (message,)));
                }
                match read.bytes {
                    None => None,
                    Some(bytes) => {
                        let value = decode_py_value(py, &bytes)?.unbind();
                        let version = floor.map(|_| Version {
                            epoch,
                            lsn: read.lsn,
                        });
                        Some((value, bytes, version))
                    }
                }
            }
            Source::Callable(source) => {
                let value = source.bind(py).call1((table, key))?;
                if value.is_none() {
                    None
                } else {
                    let bytes = encode_row_value(table, key, &value)?;
                    // Taken to read the newest state: at least what the cache has seen.
                    Some((value.unbind(), bytes, floor))
                }
            }
        };
        let elapsed = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.counters
            .load_nanos
            .fetch_add(elapsed, Ordering::Relaxed);
        let Some((value, bytes, version)) = loaded else {
            return Ok(None);
        };
        if let Some(version) = version {
            let stale = match &self.backend {
                Backend::Local(local) => {
                    let cached = PyValue::new(value.clone_ref(py), bytes.len());
                    let wire = Bytes::copy_from_slice(wire);
                    local.fill(wire, cached, (resets, version.lsn), self.ttl_ms) == Fill::Stale
                }
                Backend::Remote(remote) => {
                    remote.fill(py, wire, version, &bytes, self.ttl_ms) == Some(false)
                }
            };
            if stale {
                bump(&self.counters.stale_fills_refused);
            }
        }
        Ok(Some(value))
    }
}

#[pymethods]
impl PyCache {
    #[new]
    #[pyo3(signature = (nodes = None, *, source = None, capacity = 10_000, max_bytes = None, ttl = None, vnodes = 160, token = None, timeout = 1.0))]
    #[allow(clippy::too_many_arguments)] // the keyword arguments of the Python API
    fn new(
        py: Python<'_>,
        nodes: Option<&Bound<'_, PyAny>>,
        source: Option<&Bound<'_, PyAny>>,
        #[pyo3(from_py_with = int)] capacity: i128,
        #[pyo3(from_py_with = opt_int)] max_bytes: Option<i128>,
        ttl: Option<f64>,
        #[pyo3(from_py_with = int)] vnodes: i128,
        token: Option<String>,
        timeout: f64,
    ) -> PyResult<Self> {
        let nodes = names("nodes", nodes)?;
        let capacity = size("capacity", capacity)?;
        let max_bytes = max_bytes.map(|b| size("max_bytes", b)).transpose()?;
        let vnodes = size("vnodes", vnodes)?;
        if capacity == 0 {
            return Err(PyValueError::new_err("capacity must be at least 1"));
        }
        // As a node refuses it: a bound that can hold no entry would refuse every fill.
        check_max_bytes(max_bytes).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let source = Source::from_py(source)?;
        let patience = seconds("timeout", timeout)?;
        let watching = Mutex::new(None);
        let backend = match nodes {
            None => {
                let local = Local::new(capacity, max_bytes);
                if let Some(store) = source.store() {
                    *watching
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some(local.watch(store));
                }
                Backend::Local(local)
            }
            Some(nodes) => Backend::Remote(Box::new(Remote::connect(
                py, nodes, vnodes, token, patience,
            )?)),
        };
        Ok(Self {
            backend,
            source,
            ttl_ms: ttl_ms("ttl", ttl)?,
            patience,
            flights: Flights::default(),
            counters: Counters::default(),
            watching,
            closed: AtomicBool::new(false),
        })
    }

    /// The value of `key` in `table`: cached, or read through from the source (and
    /// cached), or `default`. `read_through=False` only looks in the cache. In-process,
    /// the cached object itself is returned: do not mutate it.
    ///
    /// Raises:
    ///     AuthError: a node refused the cache's token (a node that fails otherwise is
    ///         left out, and the source answers).
    ///     ReplicationTimeout: the source (a replica) stayed behind the log position the
    ///         cache nodes have processed for the cache's ``timeout``: its value could be
    ///         older than one the cache already returned, so none is given.
    ///     StoreClosed: in-process, its source store was closed (what it held is dropped:
    ///         it no longer hears of the store's writes).
    #[pyo3(signature = (table, key, default = None, *, read_through = true))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        table: &str,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
        read_through: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let wire = wire_of(table, key)?;
        self.check_open(py)?;
        let value = match self.lookup(py, &wire)? {
            Ok(value) => Some(value),
            Err(floor) if read_through => self.read_through(py, table, key, &wire, floor)?,
            Err(_) => None,
        };
        Ok(match value {
            Some(value) => value.into_bound(py),
            None => default.unwrap_or_else(|| py.None().into_bound(py)),
        })
    }

    /// The values of `keys` in `table`, as a dict holding the keys found (over nodes, one
    /// pipelined round trip per node, then one read through per miss).
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        table: &str,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        self.check_open(py)?;
        let keys: Vec<Bound<'py, PyAny>> = keys.try_iter()?.collect::<PyResult<_>>()?;
        let wires: Vec<Vec<u8>> = keys
            .iter()
            .map(|key| wire_of(table, key))
            .collect::<PyResult<_>>()?;
        let found: Vec<Result<Py<PyAny>, Floor>> = match &self.backend {
            Backend::Local(_) => wires
                .iter()
                .map(|wire| self.lookup(py, wire))
                .collect::<PyResult<_>>()?,
            Backend::Remote(remote) => {
                let found = remote.get_many(py, &wires)?;
                for item in &found {
                    self.count(item.is_ok());
                }
                found
            }
        };
        let values = PyDict::new(py);
        for ((key, wire), item) in keys.iter().zip(&wires).zip(found) {
            let value = match item {
                Ok(value) => Some(value),
                Err(floor) => self.read_through(py, table, key, wire, floor)?,
            };
            if let Some(value) = value {
                values.set_item(key, value)?;
            }
        }
        Ok(values)
    }

    /// Caches `value` for `key` (until a write of the key in the source's log, its TTL or
    /// eviction). Over nodes the value must be one a store can hold.
    ///
    /// Raises:
    ///     ValueTooLarge: in-process, the value is larger than ``max_bytes``.
    ///     ValueError: over nodes, the key and value are more than a node takes in one
    ///         request (arguments of 64 MiB, requests of 96 MiB).
    ///     StoreClosed: in-process, its source store was closed.
    #[pyo3(signature = (table, key, value, ttl = None))]
    fn set(
        &self,
        py: Python<'_>,
        table: &str,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        ttl: Option<f64>,
    ) -> PyResult<()> {
        let wire = wire_of(table, key)?;
        self.check_open(py)?;
        let ttl = ttl_ms("ttl", ttl)?.or(self.ttl_ms);
        match &self.backend {
            Backend::Local(local) => {
                self.check_source(py, local)?;
                let cached = PyValue::new(value.clone().unbind(), weight(value)?);
                local
                    .set(Bytes::from(wire), cached, ttl)
                    .map(drop)
                    .map_err(|_| {
                        raise(py, "ValueTooLarge", ("the value is larger than max_bytes",))
                    })
            }
            Backend::Remote(remote) => {
                remote.set(py, &wire, &encode_row_value(table, key, value)?, ttl)
            }
        }
    }

    /// Drops `key` from the cache; returns whether it was cached.
    fn invalidate(&self, py: Python<'_>, table: &str, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let wire = wire_of(table, key)?;
        self.check_open(py)?;
        match &self.backend {
            Backend::Local(local) => Ok(local.lock().invalidate(&wire)),
            Backend::Remote(remote) => Ok(remote.invalidate(py, wire)? > 0),
        }
    }

    /// Drops every cached key of `table` (starting with `prefix`, a str or bytes, when
    /// given); returns how many were dropped.
    #[pyo3(signature = (table, prefix = None))]
    fn invalidate_prefix(
        &self,
        py: Python<'_>,
        table: &str,
        prefix: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        validate_table_name(table).map_err(|e| PyValueError::new_err(e.to_string()))?;
        self.check_open(py)?;
        let wire = match prefix {
            None => table_prefix(table),
            Some(prefix) => {
                let wire = with_py_key(prefix, |k| match k {
                    KeyRef::Int(_) => None,
                    key => Some(wire_key(table, key)),
                })?;
                wire.ok_or_else(|| PyTypeError::new_err("a key prefix must be str or bytes"))?
            }
        };
        match &self.backend {
            Backend::Local(local) => Ok(local.lock().remove_prefix(&wire) as u64),
            Backend::Remote(remote) => remote.invalidate_prefix(py, &wire),
        }
    }

    /// Its lookups, loads from the source and what its backend dropped, as a
    /// `CacheStats` (over nodes: their sums, and each node's own figures).
    fn stats(&self, py: Python<'_>) -> PyResult<PyCacheStats> {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (hits, misses) = (read(&self.counters.hits), read(&self.counters.misses));
        let refused_here = read(&self.counters.stale_fills_refused);
        let backend = match &self.backend {
            Backend::Local(local) => {
                let local = local.lock();
                let counters = local.counters();
                BackendFigures {
                    evictions: counters.evictions,
                    expirations: counters.expirations,
                    invalidations: counters.invalidations,
                    keys: local.len() as u64,
                    errors: 0,
                    last_error: None,
                    nodes: PyDict::new(py),
                }
            }
            Backend::Remote(remote) => remote.stats(py)?,
        };
        #[allow(clippy::cast_precision_loss)] // seconds for people
        let load_seconds = read(&self.counters.load_nanos) as f64 / 1e9;
        Ok(PyCacheStats {
            hits,
            misses,
            hit_ratio: hit_ratio(hits, misses),
            evictions: backend.evictions,
            expirations: backend.expirations,
            invalidations: backend.invalidations,
            stale_fills_refused: refused_here,
            keys: backend.keys,
            loads: read(&self.counters.loads),
            loads_coalesced: read(&self.counters.loads_coalesced),
            load_seconds,
            errors: backend.errors,
            last_error: backend.last_error,
            nodes: backend.nodes.unbind(),
        })
    }

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    /// A decorator that caches a function's results by its arguments (the ``repr`` of plain ones, a
    /// digest of the pickle of any other, such as a DataFrame: an argument that cannot be pickled
    /// is a ``TypeError``), for ``ttl`` seconds (``None``: the cache's own ``ttl``) or until
    /// invalidated: the decorated function's ``invalidate(*args, **kwargs)`` drops one call's
    /// result, its ``invalidate_all()`` every result of the function. A result of ``None`` is not
    /// cached: the function runs again on the next call. Each function's results are its own (by
    /// its name, code, and the values it closes over and defaults to): two lambdas, or two closures
    /// of one factory over other values, never share them; the same function in another process
    /// over the same nodes does, if those values are plain (numbers, str, bytes, and lists, tuples
    /// and dicts of them; over any other, a function's results are its own decoration's).
    #[pyo3(signature = (ttl = None))]
    fn memoize<'py>(slf: &Bound<'py, Self>, ttl: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        ttl_ms("ttl", ttl)?;
        let py = slf.py();
        py.import("replikv._memoize")?
            .getattr("memoize")?
            .call1((slf, ttl))
    }

    /// Stops watching the source and closes the connections to the nodes; later calls
    /// raise `CacheError`. Idempotent. A cache dropped without it does the same.
    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        drop(
            self.watching
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        if let Backend::Remote(remote) = &self.backend {
            remote.disconnect();
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close();
        false
    }

    /// The addresses of the cache nodes that hold its values (empty for an in-process
    /// cache, which holds the Python objects themselves).
    #[getter]
    fn nodes(&self) -> Vec<String> {
        match &self.backend {
            Backend::Local(_) => Vec::new(),
            Backend::Remote(remote) => remote.addresses().to_vec(),
        }
    }

    fn __repr__(&self) -> String {
        let source = match &self.source {
            Source::Nothing => "no source".to_owned(),
            Source::Store(store) => format!("source={}", store.path().display()),
            Source::Callable(_) => "source=<callable>".to_owned(),
        };
        let state = if self.closed.load(Ordering::Acquire) {
            " closed"
        } else {
            ""
        };
        match &self.backend {
            Backend::Local(local) => {
                let lru = local.lock();
                format!(
                    "<Cache in-process keys={}/{} {source}{state}>",
                    lru.len(),
                    lru.bounds().capacity
                )
            }
            Backend::Remote(remote) => {
                format!(
                    "<Cache nodes={} {source}{state}>",
                    quoted_list(remote.addresses())
                )
            }
        }
    }
}

/// The bytes `value` counts for against an in-process cache's `max_bytes`: what a store
/// would hold of it, or, for a value a store cannot hold (a set, a DataFrame, a dict with
/// int keys), what `sys.getsizeof` says of it. Counted as nothing, such values were kept
/// past the bound without limit.
fn weight(value: &Bound<'_, PyAny>) -> PyResult<usize> {
    if let Ok(encoded) = encode_py_value(value) {
        return Ok(encoded.len());
    }
    let sizeof = value.py().import("sys")?.getattr("getsizeof")?;
    sizeof.call1((value, 0))?.extract()
}
