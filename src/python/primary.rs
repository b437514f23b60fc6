//! `Primary`: serves a store's change log to replicas; and `Promotion`, the report of
//! the promotion that made a primary of a replica.

use std::collections::HashMap;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::args::{int, non_negative, opt_int, seconds, timeout as wait_limit};
use super::display::html;
use super::errors::{not_inherited, owned, run_detached};
use super::replication::{wait_until, PrimaryArgs};
use super::settings::{settings_dict, to_dict};
use super::status::{PyPrimaryStatus, PySlot};
use super::store::PyStore;
use super::verify::PyVerifyReport;
use crate::fork::ParentOnly;
use crate::net::runtime;
use crate::replication::handover::Settings;
use crate::replication::primary::Primary;
use crate::replication::replica::Promotion;

/// What a promotion did: the new epoch, where it starts, the members reached, and the
/// range of the old primary's entries that no reached member holds.
#[pyclass(frozen, module = "replikv._core", name = "Promotion")]
pub(crate) struct PyPromotion {
    /// The new epoch.
    #[pyo3(get)]
    epoch: u64,
    /// The first LSN of the new epoch.
    #[pyo3(get)]
    start_lsn: u64,
    /// The members reached, by name (the promoted replica included).
    #[pyo3(get)]
    reached: Vec<String>,
    /// How many members the rule asked for: ``members - quorum + 1``, and at least a
    /// majority of the members (0 if unknown).
    #[pyo3(get)]
    needed: u64,
    /// Whether it was forced past the rule.
    #[pyo3(get)]
    forced: bool,
    /// ``(first, last)``: the LSNs the old primary had committed (as last heard) that
    /// the new primary lacks (async writes; sync ones too only if forced), or ``None``.
    #[pyo3(get)]
    possible_loss: Option<(u64, u64)>,
    settings: Option<Settings>,
}

impl From<Promotion> for PyPromotion {
    fn from(p: Promotion) -> Self {
        Self {
            epoch: p.epoch,
            start_lsn: p.start_lsn,
            reached: p.reached,
            needed: p.needed,
            forced: p.forced,
            possible_loss: p.possible_loss,
            settings: p.settings,
        }
    }
}

/// Makes a stopped replica's store the primary of a new epoch, by the rule
/// :meth:`Replica.promote` follows (with what its primary's heartbeats last said), without
/// serving it. Serve it next as its old primary served, so that the tables it wrote
/// synchronously stay so: ``Primary(Store(path), **promotion.settings)`` (``settings`` is
/// ``None`` if no heartbeat said them), or the ``replikv primary`` command that
/// ``replikv promote DIR`` prints. ``Primary(Store(path))`` alone serves with the
/// defaults: every table async.
///
/// Raises ``ReplicationError`` (nothing changes) when the rule is not met and ``force`` is
/// not set, or when the directory is not a replica's (force or not);
/// ``StoreLockedError`` while a replica runs on it.
#[pyfunction]
#[pyo3(signature = (path, *, force = false))]
pub(crate) fn promote_stopped(
    py: Python<'_>,
    path: std::path::PathBuf,
    force: bool,
) -> PyResult<PyPromotion> {
    let promotion = run_detached(py, move || {
        crate::replication::replica::promote_stopped(&path, force)
    })?;
    Ok(PyPromotion::from(promotion))
}

#[pymethods]
impl PyPromotion {
    /// The old primary's settings as its heartbeats last said (a new dict of
    /// ``Primary``'s keyword arguments: ``quorum``, ``table_modes``, ...), or ``None`` if
    /// none said.
    #[getter]
    fn settings<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.settings
            .as_ref()
            .map(|settings| settings_dict(py, settings))
            .transpose()
    }

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    fn __repr__(&self) -> String {
        let loss = match self.possible_loss {
            Some((first, last)) => format!("({first}, {last})"),
            None => "None".to_owned(),
        };
        let reached: Vec<String> = self.reached.iter().map(|n| format!("'{n}'")).collect();
        format!(
            "Promotion(epoch={}, start_lsn={}, reached=[{}], forced={}, possible_loss={loss})",
            self.epoch,
            self.start_lsn,
            reached.join(", "),
            if self.forced { "True" } else { "False" }
        )
    }
}

/// Serves a store's change log to replicas over TCP.
///
/// Async writers never wait for the network: entries are shipped in batches at most
/// every ``ship_interval`` seconds (``0``: within about a millisecond, so that a replica
/// fsyncs once per batch rather than once per write). A sync write ships at once and
/// returns once ``quorum`` replicas that fsync hold it durably. Without a ``token`` only
/// loopback peers may connect.
///
/// Args:
///     listen: ``host:port`` to serve on (port 0 picks a free one; see ``address``).
///     max_batch_bytes: bytes of entries shipped in one frame at most (4 MiB by default,
///         from 4,096 to 64 MiB); an entry larger than that still ships, alone.
///     heartbeat_interval: seconds between heartbeats on a link with nothing to ship
///         (0.5 by default; at least 0.01, at most 2, as replicas drop a link silent for
///         5 s). A replica's link that sends nothing for four heartbeats and a second is
///         dropped.
///     quorum: replicas that must acknowledge a sync write (1 or more).
///     sync_timeout: seconds a sync write waits for them.
///     on_timeout: ``"raise"`` (``ReplicationTimeout``) or ``"degrade"`` (a receipt
///         with ``degraded=True``); the write is committed locally either way.
///     table_modes: ``{table: "sync" | "async"}``, the default durability per table.
///     default_durability: that of the other tables (``"async"`` or ``"sync"``).
///     ship_ahead: ship a sync write's entry to replicas while this primary's own fsync
///         runs, not after it, so that the fsyncs overlap. A replica holds such an entry
///         (durable in its log, not yet shown: its ``flushed_lsn`` may pass its
///         ``applied_lsn``) until it hears the entry is durable here, one frame later. A
///         sync write returns once it is durable here and in ``quorum`` replicas' logs
///         (a promotion shows all the new primary holds), before they may show it; a
///         reader of those replicas sees it a moment later. Default ``False``: entries
///         leave only once durable
///         here and the two fsyncs run one after the other, but each sync write costs a
///         replica one frame and one apply rather than two (async writers beside sync
///         writers keep more of their rate when replicas share the primary's cores).
///     retain_bytes, retain_seconds: caps on the log while this primary serves the store
///         (``None``: the store's own). Within them the log is kept for every replica's
///         slot; a replica being seeded by a snapshot keeps its log whatever the caps.
///
/// Raises:
///     ReplicationError: another ``Primary`` serves the store.
///     ValueError: a setting out of range, or a ``listen`` that is not ``host:port``.
///     NetworkError: ``listen`` cannot be listened on (in use, not local, a host name
///         that does not resolve).
#[pyclass(frozen, module = "replikv._core", name = "Primary")]
pub(crate) struct PyPrimary {
    pub(super) primary: ParentOnly<Primary>,
    pub(super) store: Py<PyStore>,
    /// What the promotion that made it did (`None` for a primary started as one).
    pub(super) promotion: Option<Py<PyPromotion>>,
}

#[pymethods]
impl PyPrimary {
    #[new]
    #[pyo3(signature = (store, *, listen = "127.0.0.1:0", token = None, ship_interval = 0.05,
        max_batch_bytes = 4_194_304, heartbeat_interval = 0.5, retain_bytes = None,
        retain_seconds = None, quorum = 1, sync_timeout = 5.0, on_timeout = "raise",
        table_modes = None, default_durability = "async", ship_ahead = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        store: Py<PyStore>,
        listen: &str,
        token: Option<String>,
        ship_interval: f64,
        #[pyo3(from_py_with = int)] max_batch_bytes: i128,
        heartbeat_interval: f64,
        #[pyo3(from_py_with = opt_int)] retain_bytes: Option<i128>,
        retain_seconds: Option<f64>,
        #[pyo3(from_py_with = int)] quorum: i128,
        sync_timeout: f64,
        on_timeout: &str,
        table_modes: Option<HashMap<String, String>>,
        default_durability: &str,
        ship_ahead: bool,
    ) -> PyResult<Self> {
        let options = PrimaryArgs {
            listen,
            token,
            ship_interval,
            max_batch_bytes,
            heartbeat_interval,
            retain_bytes,
            retain_seconds,
            quorum,
            sync_timeout,
            on_timeout,
            table_modes,
            default_durability,
            ship_ahead,
        }
        .options()?;
        let core = store.get().store.clone();
        let primary = run_detached(py, move || Primary::start(core, options))?;
        Ok(Self {
            primary: ParentOnly::new(primary),
            store,
            promotion: None,
        })
    }

    /// Hands this primary's log to the replica named ``to`` (one that fsyncs and was
    /// started with ``listen=``), with zero loss and no resync.
    ///
    /// Writes pause (``WritesPausedError``, retryable) at an exact LSN; once ``to`` holds
    /// it, ``to`` becomes the primary of the next epoch, serving on its ``listen``
    /// address with this primary's settings (quorum, table modes, intervals), and this
    /// primary's other replicas are told to follow it. This primary is then closed and
    /// its store becomes a replica of the new primary, named ``name`` (default: the
    /// directory's name), answering members on ``listen`` (default: this primary's
    /// address): ``Switchover.replica``. On the replica's side, ``Replica.promoted`` is
    /// the new ``Primary``.
    ///
    /// Each step waits at most ``timeout`` seconds.
    ///
    /// Raises:
    ///     ReplicationError: ``to`` does not listen, is not connected or does not catch
    ///         up in time (writes resume here and nothing changed); or it was told to take
    ///         over and did not answer in time (this primary is deposed anyway, as ``to``
    ///         may have taken over: check it).
    #[pyo3(signature = (to, *, timeout = 10.0, name = None, listen = None))]
    fn switchover(
        &self,
        py: Python<'_>,
        to: &str,
        timeout: f64,
        name: Option<String>,
        listen: Option<String>,
    ) -> PyResult<super::switchover::PySwitchover> {
        let switched = super::switchover::switch_over(py, self, Some(to), timeout, name, listen)?;
        Ok(switched.expect("invariant: a named switchover always reports"))
    }

    /// Carries out the switchover an operator asked for from a shell
    /// (``replikv switchover ADDR --to NAME``), if one waits, as :meth:`switchover` does,
    /// and tells the operator how it went; ``None`` if none waits, or if it changed
    /// nothing (the operator is told why, :meth:`status` counts it as refused, and this
    /// primary serves on). ``replikv primary`` calls it every 0.2 s; a program serving a
    /// ``Primary`` calls it to take such requests (unanswered, a request is refused
    /// after 30 s).
    ///
    /// Raises:
    ///     ReplicationError: ``to`` was told to take over and did not answer in time
    ///         (this primary is deposed anyway, as ``to`` may have taken over: check it).
    #[pyo3(signature = (*, timeout = 10.0, name = None, listen = None))]
    fn serve_switchover_request(
        &self,
        py: Python<'_>,
        timeout: f64,
        name: Option<String>,
        listen: Option<String>,
    ) -> PyResult<Option<super::switchover::PySwitchover>> {
        super::switchover::switch_over(py, self, None, timeout, name, listen)
    }

    /// What the promotion that made this primary did, or `None` for a primary started
    /// as one.
    #[getter]
    fn promotion(&self, py: Python<'_>) -> Option<Py<PyPromotion>> {
        self.promotion.as_ref().map(|p| p.clone_ref(py))
    }

    /// ``host:port`` replicas connect to (the real port if 0 was asked for).
    #[getter]
    fn address(&self) -> String {
        self.primary.address().to_string()
    }

    /// Whether a sync write's entry ships while this primary's own fsync runs
    /// (``Primary(ship_ahead=True)``).
    #[getter]
    fn ship_ahead(&self) -> bool {
        self.primary.ships_ahead()
    }

    /// The settings it serves with, as ``Primary``'s keyword arguments (all but
    /// ``listen`` and ``token``): ``Primary(store, **primary.settings)`` serves alike. A
    /// promoted primary's are its old primary's, but for the arguments given to
    /// ``promote()``.
    #[getter]
    fn settings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        to_dict(py, self.primary.options())
    }

    /// The store being served.
    #[getter]
    fn store(&self, py: Python<'_>) -> Py<PyStore> {
        self.store.clone_ref(py)
    }

    /// The store's epoch.
    #[getter]
    fn epoch(&self, py: Python<'_>) -> PyResult<u64> {
        owned(py, self.primary.store())?;
        Ok(self.primary.store().epoch())
    }

    /// Connections refused since start (bad token, garbage, wrong version, ...).
    #[getter]
    fn rejected(&self, py: Python<'_>) -> PyResult<u64> {
        owned(py, self.primary.store())?;
        Ok(self.primary.status().rejected)
    }

    /// Why the last connection was refused, if any was.
    #[getter]
    fn last_rejection(&self, py: Python<'_>) -> PyResult<Option<String>> {
        owned(py, self.primary.store())?;
        Ok(self.primary.status().last_rejection)
    }

    /// The durable slots, one `Slot` per replica the log is kept for.
    fn slots(&self, py: Python<'_>) -> PyResult<Vec<PySlot>> {
        owned(py, self.primary.store())?;
        self.primary
            .slots()
            .into_iter()
            .map(|slot| PySlot::new(py, slot))
            .collect()
    }

    /// Drops a replica's slot (the log is no longer kept for it); returns whether it existed.
    fn drop_slot(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        owned(py, self.primary.store())?;
        run_detached(py, || self.primary.drop_slot(name))
    }

    /// Checkpoints and drops the log segments no slot needs (within ``retain_bytes``
    /// / ``retain_seconds``) now rather than at the next tick; returns how many.
    fn retain(&self, py: Python<'_>) -> PyResult<usize> {
        owned(py, self.primary.store())?;
        run_detached(py, || self.primary.retain())
    }

    /// Whether sync writes can complete now: "ok" (at least `quorum` replicas that fsync
    /// are connected), "degraded" (enough are registered but fewer are connected: sync
    /// writes wait and may time out) or "unavailable" (fewer are registered, or this
    /// primary is deposed: sync writes are refused).
    #[getter]
    fn sync_state(&self, py: Python<'_>) -> PyResult<&'static str> {
        owned(py, self.primary.store())?;
        Ok(self.primary.status().sync_state.name())
    }

    /// Its position and sync state, and every replica seen since start with its state
    /// and lag (iterate over it for the replicas).
    fn status(&self, py: Python<'_>) -> PyResult<PyPrimaryStatus> {
        owned(py, self.primary.store())?;
        PyPrimaryStatus::new(py, self.address(), self.primary.status())
    }

    /// Waits until ``replicas`` replicas acknowledged ``lsn`` as durable; returns how
    /// many did. Only replicas that count toward the quorum are counted (never
    /// consumers or replicas with ``fsync=False``, nor a replica still ``'joining'``).
    /// With ``ship_ahead``, replicas may acknowledge an entry before this primary's own
    /// fsync of it ends.
    ///
    /// ``timeout`` is in seconds; ``float("inf")`` (or any timeout over a century) waits
    /// for ever, a negative or NaN one is a ``ValueError``.
    #[pyo3(signature = (lsn, replicas = 1, timeout = 2.0))]
    fn wait_for(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = int)] lsn: i128,
        #[pyo3(from_py_with = int)] replicas: i128,
        timeout: f64,
    ) -> PyResult<usize> {
        owned(py, self.primary.store())?;
        let lsn = non_negative("lsn", lsn)?;
        let replicas = usize::try_from(non_negative("replicas", replicas)?).unwrap_or(usize::MAX);
        let timeout = wait_limit("timeout", timeout)?;
        wait_until(py, timeout, || {
            self.primary.wait_for(lsn, replicas, Duration::ZERO) >= replicas
        })?;
        Ok(self.primary.wait_for(lsn, replicas, Duration::ZERO))
    }

    /// Compares each replica's per-table row counts and checksums with this primary's
    /// at an LSN both recorded recently.
    ///
    /// Replicas apply the same entries in other batches, so both sides keep the sums of
    /// their recent batches and the greatest LSN both hold is compared; this works under
    /// a steady write load. A replica that is not streaming, does not answer within
    /// ``timeout`` seconds (at most an hour), or is too far behind is reported as not
    /// comparable, with why.
    ///
    /// Raises:
    ///     StoreClosed: the store was closed.
    #[pyo3(signature = (timeout = 5.0))]
    fn verify(&self, py: Python<'_>, timeout: f64) -> PyResult<PyVerifyReport> {
        owned(py, self.primary.store())?;
        let timeout = seconds("timeout", timeout)?;
        let task = self.primary.spawn_verify(timeout);
        wait_until(py, None, || task.is_finished())?;
        let report = run_detached(py, || {
            runtime()
                .block_on(task)
                .unwrap_or_else(|failed| std::panic::resume_unwind(failed.into_panic()))
        })?;
        Ok(report.into())
    }

    /// Whether it stopped serving: by its ``close()``, or at the end of a switchover from
    /// it. Its store stays open.
    #[getter]
    fn closed(&self) -> bool {
        self.primary.is_closed()
    }

    /// Stops serving; the store stays open.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        not_inherited(py, self.primary.store())?;
        py.detach(|| self.primary.close());
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

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    fn __repr__(&self) -> String {
        if let Err(err) = self.primary.store().check_process() {
            return format!("<Primary {}: {err}>", self.primary.address());
        }
        if self.primary.is_closed() {
            return format!("<Primary {} closed>", self.primary.address());
        }
        let status = self.primary.status();
        format!(
            "<Primary {} last_lsn={} epoch={} replicas={} sync_state={}>",
            self.primary.address(),
            status.last_lsn,
            status.epoch,
            status.replicas.len(),
            status.sync_state.name()
        )
    }
}
