//! Where replication stands, as typed reports: `PrimaryStatus` (with a `ReplicaInfo` per
//! replica), `Slot` and `ReplicaStatus`. Each has readable attributes, a one-line repr,
//! `to_dict()` for JSON and `_repr_html_()` for Jupyter.

use crate::python::display::quoted;
use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyIterator, PyList};

use super::display::{html, plain};
use super::value::ms_to_datetime;
use crate::replication::primary::PrimaryStatus;
use crate::replication::slots::Slot;
use crate::replication::status::ReplicaLink;

/// One replica as the primary sees it.
#[pyclass(frozen, get_all, module = "replikv._core", name = "ReplicaInfo")]
pub(crate) struct PyReplicaInfo {
    /// The replica's name (its slot's name).
    name: String,
    /// The address it connected from.
    address: String,
    /// ``'snapshot'``, ``'catching_up'``, ``'streaming'`` or ``'disconnected'``.
    state: &'static str,
    /// The last LSN shipped to it.
    sent_lsn: u64,
    /// The last LSN the replica reported durable.
    acked_lsn: u64,
    /// Entries the primary committed that it has not acknowledged.
    lag_lsn: u64,
    /// Bytes shipped but not yet acknowledged.
    lag_bytes: u64,
    /// Age of its oldest missing entry, on the primary's clock.
    lag_seconds: f64,
    /// When the primary last heard from it (an aware UTC datetime), or ``None`` if it has
    /// not heard from it since it started (a replica it knows from its slot only), or if
    /// the report names a time no datetime holds (past year 9999: a primary's broken
    /// clock, or a damaged report).
    last_seen: Py<PyAny>,
    /// ``'quorum'`` if its acks count toward sync writes (a replica that fsyncs),
    /// ``'async'`` if they never do (``fsync=False``, or a consumer), ``'joining'`` for a
    /// replica that fsyncs and registered while this primary ran: its acks count once
    /// every replica that fsyncs has recorded that it joined.
    sync_state: &'static str,
    /// ``'replica'``, or ``'consumer'`` for a peer that keeps no copy of the data (a
    /// cache node, a change-feed reader): it never counts toward the quorum.
    kind: String,
}

impl PyReplicaInfo {
    fn new(py: Python<'_>, link: ReplicaLink) -> PyResult<Self> {
        Ok(Self {
            name: link.name,
            address: link.address,
            state: link.state.name(),
            sent_lsn: link.sent_lsn,
            acked_lsn: link.acked_lsn,
            lag_lsn: link.lag_lsn,
            lag_bytes: link.lag_bytes,
            lag_seconds: link.lag_seconds,
            last_seen: match ms_to_datetime(py, link.last_seen_ms) {
                // Not heard from since the primary started: no time, rather than 1970.
                Ok(_) if link.last_seen_ms == 0 => py.None(),
                Ok(seen) => seen.unbind(),
                // Out of range: the rest of the report still shows.
                Err(err) if err.is_instance_of::<PyOverflowError>(py) => py.None(),
                Err(err) => return Err(err),
            },
            sync_state: link.sync_state.name(),
            kind: link.kind,
        })
    }
}

#[pymethods]
impl PyReplicaInfo {
    /// The fields as JSON-able values (``last_seen`` in ISO 8601, or ``None``).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = PyDict::new(py);
        fields.set_item("name", &self.name)?;
        fields.set_item("kind", &self.kind)?;
        fields.set_item("address", &self.address)?;
        fields.set_item("state", self.state)?;
        fields.set_item("sync_state", self.sync_state)?;
        fields.set_item("sent_lsn", self.sent_lsn)?;
        fields.set_item("acked_lsn", self.acked_lsn)?;
        fields.set_item("lag_lsn", self.lag_lsn)?;
        fields.set_item("lag_bytes", self.lag_bytes)?;
        fields.set_item("lag_seconds", self.lag_seconds)?;
        fields.set_item("last_seen", &self.last_seen)?;
        plain(&fields)
    }

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    fn __repr__(&self) -> String {
        format!(
            "ReplicaInfo(name={}, kind={}, state={}, sync_state={}, acked_lsn={}, \
             lag_lsn={}, lag_seconds={:.3})",
            quoted(&self.name),
            quoted(&self.kind),
            quoted(self.state),
            quoted(self.sync_state),
            self.acked_lsn,
            self.lag_lsn,
            self.lag_seconds
        )
    }
}

/// A primary's status, from :meth:`Primary.status` or :func:`fetch_status`: its
/// position, whether sync writes can complete, and every replica seen since start.
/// Iterating over it (or ``len()``) goes over ``replicas``.
#[pyclass(frozen, get_all, module = "replikv._core", name = "PrimaryStatus")]
pub(crate) struct PyPrimaryStatus {
    /// The primary's ``host:port``.
    address: String,
    /// The last LSN the primary committed.
    last_lsn: u64,
    /// The primary's epoch.
    epoch: u64,
    /// ``'ok'``, ``'degraded'`` or ``'unavailable'``, as :attr:`Primary.sync_state`.
    sync_state: &'static str,
    /// Connections refused since start.
    rejected: u64,
    /// Why the last connection was refused, if one was.
    last_rejection: Option<String>,
    /// Every replica seen since start, with its state and lag.
    replicas: Py<PyList>,
}

impl PyPrimaryStatus {
    /// The status of the primary at `address`.
    pub(super) fn new(py: Python<'_>, address: String, status: PrimaryStatus) -> PyResult<Self> {
        let replicas = status
            .replicas
            .into_iter()
            .map(|link| PyReplicaInfo::new(py, link))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Self {
            address,
            last_lsn: status.last_lsn,
            epoch: status.epoch,
            sync_state: status.sync_state.name(),
            rejected: status.rejected,
            last_rejection: status.last_rejection,
            replicas: PyList::new(py, replicas)?.unbind(),
        })
    }
}

#[pymethods]
impl PyPrimaryStatus {
    fn __len__(&self, py: Python<'_>) -> usize {
        self.replicas.bind(py).len()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        self.replicas.bind(py).try_iter()
    }

    /// The fields as JSON-able values, each replica as its own `to_dict()`.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = PyDict::new(py);
        fields.set_item("address", &self.address)?;
        fields.set_item("last_lsn", self.last_lsn)?;
        fields.set_item("epoch", self.epoch)?;
        fields.set_item("sync_state", self.sync_state)?;
        fields.set_item("rejected", self.rejected)?;
        fields.set_item("last_rejection", &self.last_rejection)?;
        fields.set_item("replicas", self.replicas.bind(py))?;
        plain(&fields)
    }

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "PrimaryStatus(address={}, last_lsn={}, epoch={}, sync_state={}, replicas={})",
            quoted(&self.address),
            self.last_lsn,
            self.epoch,
            quoted(self.sync_state),
            self.replicas.bind(py).len()
        )
    }
}

/// A durable slot, from :meth:`Primary.slots`: the log is kept for this replica from
/// ``acked_lsn`` on (a slot outlives its connection and the primary's restarts).
#[pyclass(frozen, get_all, module = "replikv._core", name = "Slot")]
pub(crate) struct PySlot {
    /// The replica's name.
    name: String,
    /// The last LSN the replica acknowledged as durable: the log is kept from there.
    acked_lsn: u64,
    /// When the slot was created (aware UTC).
    created: Py<PyAny>,
    /// Whether the replica said it fsyncs (only then does it count toward a quorum).
    fsync: bool,
}

impl PySlot {
    pub(super) fn new(py: Python<'_>, slot: Slot) -> PyResult<Self> {
        Ok(Self {
            name: slot.name,
            acked_lsn: slot.acked_lsn,
            created: ms_to_datetime(py, slot.created_ms)?.unbind(),
            fsync: slot.fsync,
        })
    }
}

#[pymethods]
impl PySlot {
    /// The fields as JSON-able values (``created`` in ISO 8601).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = PyDict::new(py);
        fields.set_item("name", &self.name)?;
        fields.set_item("acked_lsn", self.acked_lsn)?;
        fields.set_item("created", &self.created)?;
        fields.set_item("fsync", self.fsync)?;
        plain(&fields)
    }

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    fn __repr__(&self) -> String {
        format!(
            "Slot(name={}, acked_lsn={}, fsync={})",
            quoted(&self.name),
            self.acked_lsn,
            if self.fsync { "True" } else { "False" }
        )
    }
}

/// A replica's status: its link to the primary, its position and lag, and what it did
/// about a fork.
#[pyclass(frozen, get_all, module = "replikv._core", name = "ReplicaStatus")]
pub(crate) struct PyReplicaStatus {
    /// Its name on the primary.
    pub(super) name: String,
    /// The primary's address it follows; once it is promoted (or handed over to), the
    /// address its own store serves at as the primary.
    pub(super) primary: String,
    /// ``'connecting'``, ``'snapshot'``, ``'catching_up'``, ``'streaming'``,
    /// ``'disconnected'``, ``'failed'`` (stopped for good: see ``last_error``),
    /// ``'promoted'`` or ``'closed'`` (by its ``close()``).
    pub(super) state: &'static str,
    /// What its readers see.
    pub(super) applied_lsn: u64,
    /// Durable in its log: what its acks carry. ``applied_lsn`` may be ahead by what the
    /// replica applied while its fdatasync ran, or behind by entries its primary shipped
    /// before its own fdatasync ended, held back until it says they are durable there.
    pub(super) flushed_lsn: u64,
    /// The primary's last LSN, as last heard.
    pub(super) primary_last_lsn: u64,
    /// Entries the primary has that this replica has not applied.
    pub(super) lag_lsn: u64,
    /// Age of its oldest missing entry on the primary's clock; NaN while behind with
    /// no heartbeat yet to say since when. While its link is down, at least the time
    /// since it last heard the primary, or since it started if it has not heard it since (it
    /// cannot know what it missed meanwhile). So too while the link is up but the primary's
    /// heartbeats are two intervals late (a frozen primary, a link that stopped
    /// forwarding), before the link times out.
    pub(super) lag_seconds: f64,
    /// The primary's epoch, as last heard; once it is promoted, the epoch it began.
    pub(super) epoch: u64,
    /// The primary's quorum, from its heartbeats.
    pub(super) primary_quorum: u64,
    /// The primary's replicas that count toward its quorum: what a promotion must
    /// reach ``members - quorum + 1`` of.
    pub(super) primary_members: u64,
    /// ``(name, address)`` of those members that listen: whom a promotion asks.
    pub(super) primary_peers: Vec<(String, String)>,
    /// Connections made to the primary so far.
    pub(super) connections: u64,
    /// Snapshots installed so far.
    pub(super) snapshots: u64,
    /// ``(rows received, rows in all)`` while a snapshot arrives, else ``None``.
    pub(super) snapshot_progress: Option<(u64, u64)>,
    /// Why its link last failed, or ``None``.
    pub(super) last_error: Option<String>,
    /// While stopped on a fork, the loss account: ``fork_lsn``, ``last_lsn``,
    /// ``entries``, ``tables`` (``{table: [key, ...]}``).
    pub(super) diverged: Option<Py<PyDict>>,
    /// Resyncs done since start.
    pub(super) resyncs: u64,
    /// The last resync's loss account, with ``report`` (the path of its report file).
    pub(super) last_resync: Option<Py<PyDict>>,
}

#[pymethods]
impl PyReplicaStatus {
    /// The fields as JSON-able values (NaN lag as ``None``, bytes keys as
    /// ``{"$base64": ...}``).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = PyDict::new(py);
        fields.set_item("name", &self.name)?;
        fields.set_item("primary", &self.primary)?;
        fields.set_item("state", self.state)?;
        fields.set_item("applied_lsn", self.applied_lsn)?;
        fields.set_item("flushed_lsn", self.flushed_lsn)?;
        fields.set_item("primary_last_lsn", self.primary_last_lsn)?;
        fields.set_item("lag_lsn", self.lag_lsn)?;
        fields.set_item("lag_seconds", self.lag_seconds)?;
        fields.set_item("epoch", self.epoch)?;
        fields.set_item("primary_quorum", self.primary_quorum)?;
        fields.set_item("primary_members", self.primary_members)?;
        fields.set_item("primary_peers", &self.primary_peers)?;
        fields.set_item("connections", self.connections)?;
        fields.set_item("snapshots", self.snapshots)?;
        fields.set_item("snapshot_progress", self.snapshot_progress)?;
        fields.set_item("last_error", &self.last_error)?;
        fields.set_item("diverged", &self.diverged)?;
        fields.set_item("resyncs", self.resyncs)?;
        fields.set_item("last_resync", &self.last_resync)?;
        plain(&fields)
    }

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    fn __repr__(&self) -> String {
        let error = self
            .last_error
            .as_ref()
            .map(|e| format!(", last_error={}", quoted(e)))
            .unwrap_or_default();
        format!(
            "ReplicaStatus(name={}, state={}, applied_lsn={}, lag_lsn={}, \
             lag_seconds={:.3}, epoch={}{error})",
            quoted(&self.name),
            quoted(self.state),
            self.applied_lsn,
            self.lag_lsn,
            self.lag_seconds,
            self.epoch
        )
    }
}
