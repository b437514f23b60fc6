//! `Primary` and `Replica`: thin wrappers over the core's replication.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::args::{durability_setting, non_negative, seconds, timeout as wait_limit};
use super::diverged::{account, diverged_error};
use super::errors::{owned, raise, run_detached};
use super::store::PyStore;
use super::value::unix_to_datetime;
use super::verify::PyVerifyReport;
use crate::fork::ParentOnly;
use crate::net::runtime;
use crate::replication::primary::{Primary, PrimaryOptions};
use crate::replication::protocol::MAX_FRAME_BYTES;
use crate::replication::quorum::SyncOptions;
use crate::replication::replica::{OnDiverge, Replica, ReplicaOptions};
use crate::replication::status::{lag_seconds, LinkState, ReplicaLink};
use crate::store::{OnTimeout, StoreOptions};

/// The smallest `max_batch_bytes`: a batch must have room for at least a small entry.
const MIN_BATCH_BYTES: usize = 4096;

/// How long a blocking wait sleeps between checks for Ctrl-C.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// Waits in slices, releasing the GIL, until `done` or `timeout` (`None`: no limit),
/// checking for Ctrl-C.
fn wait_until(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut done: impl FnMut() -> bool + Send,
) -> PyResult<bool> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let left = deadline.map_or(SIGNAL_CHECK, |d| {
            d.saturating_duration_since(Instant::now())
        });
        let slice = left.min(SIGNAL_CHECK);
        let finished = py.detach(|| {
            let until = Instant::now() + slice;
            loop {
                if done() {
                    return true;
                }
                if Instant::now() >= until {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        if finished {
            return Ok(true);
        }
        py.check_signals()?;
        if left.is_zero() {
            return Ok(false);
        }
    }
}

/// The sync-write settings of a `Primary`, checked.
fn sync_options(
    quorum: i128,
    sync_timeout: f64,
    on_timeout: &str,
    table_modes: HashMap<String, String>,
    default_durability: &str,
) -> PyResult<SyncOptions> {
    if quorum < 1 {
        return Err(PyValueError::new_err(format!(
            "quorum must be 1 or more, not {quorum}"
        )));
    }
    let on_timeout = match on_timeout {
        "raise" => OnTimeout::Raise,
        "degrade" => OnTimeout::Degrade,
        other => {
            return Err(PyValueError::new_err(format!(
                "on_timeout must be 'raise' or 'degrade', not {other:?}"
            )))
        }
    };
    let table_modes = table_modes
        .into_iter()
        .map(|(table, mode)| {
            crate::store::validate_table_name(&table)
                .map_err(|e| PyValueError::new_err(format!("table_modes: {e}")))?;
            let mode = durability_setting(&format!("table_modes[{table:?}]"), &mode)?;
            Ok((table, mode))
        })
        .collect::<PyResult<_>>()?;
    Ok(SyncOptions {
        quorum: usize::try_from(quorum).unwrap_or(usize::MAX),
        sync_timeout: seconds("sync_timeout", sync_timeout)?,
        on_timeout,
        table_modes,
        default_durability: durability_setting("default_durability", default_durability)?,
    })
}

/// One replica as the primary sees it.
#[pyclass(frozen, get_all, module = "replikv._core", name = "ReplicaInfo")]
pub(crate) struct PyReplicaInfo {
    name: String,
    address: String,
    state: &'static str,
    sent_lsn: u64,
    acked_lsn: u64,
    lag_lsn: u64,
    lag_bytes: u64,
    lag_seconds: f64,
    last_seen: Py<PyAny>,
    sync_state: &'static str,
}

impl PyReplicaInfo {
    fn new(py: Python<'_>, link: ReplicaLink) -> PyResult<Self> {
        let ms = i64::try_from(link.last_seen_ms).unwrap_or(i64::MAX);
        let last_seen = unix_to_datetime(
            py,
            ms.div_euclid(1000),
            (ms.rem_euclid(1000) * 1_000_000) as u32,
        )?
        .unbind();
        Ok(Self {
            name: link.name,
            address: link.address,
            state: link.state.name(),
            sent_lsn: link.sent_lsn,
            acked_lsn: link.acked_lsn,
            lag_lsn: link.lag_lsn,
            lag_bytes: link.lag_bytes,
            lag_seconds: link.lag_seconds,
            last_seen,
            sync_state: link.sync_state.name(),
        })
    }
}

#[pymethods]
impl PyReplicaInfo {
    fn __repr__(&self) -> String {
        format!(
            "ReplicaInfo(name={:?}, state={:?}, sync_state={:?}, acked_lsn={}, lag_lsn={}, \
             lag_seconds={:.3})",
            self.name, self.state, self.sync_state, self.acked_lsn, self.lag_lsn, self.lag_seconds
        )
    }
}

/// Serves a store's change log to replicas over TCP.
#[pyclass(frozen, module = "replikv._core", name = "Primary")]
pub(crate) struct PyPrimary {
    primary: ParentOnly<Primary>,
    store: Py<PyStore>,
}

#[pymethods]
impl PyPrimary {
    #[new]
    #[pyo3(signature = (store, *, listen = "127.0.0.1:0", token = None, ship_interval = 0.05,
        max_batch_bytes = 4_194_304, heartbeat_interval = 0.5, retain_bytes = None,
        retain_seconds = None, quorum = 1, sync_timeout = 5.0, on_timeout = "raise",
        table_modes = None, default_durability = "async"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        store: Py<PyStore>,
        listen: &str,
        token: Option<String>,
        ship_interval: f64,
        max_batch_bytes: usize,
        heartbeat_interval: f64,
        retain_bytes: Option<u64>,
        retain_seconds: Option<f64>,
        quorum: i128,
        sync_timeout: f64,
        on_timeout: &str,
        table_modes: Option<HashMap<String, String>>,
        default_durability: &str,
    ) -> PyResult<Self> {
        let sync = sync_options(
            quorum,
            sync_timeout,
            on_timeout,
            table_modes.unwrap_or_default(),
            default_durability,
        )?;
        if !(MIN_BATCH_BYTES..=MAX_FRAME_BYTES).contains(&max_batch_bytes) {
            return Err(PyValueError::new_err(format!(
                "max_batch_bytes must be between {MIN_BATCH_BYTES} and {MAX_FRAME_BYTES} (a frame)"
            )));
        }
        let options = PrimaryOptions {
            listen: listen.to_owned(),
            token,
            ship_interval: seconds("ship_interval", ship_interval)?,
            max_batch_bytes,
            heartbeat_interval: seconds("heartbeat_interval", heartbeat_interval)?
                .max(Duration::from_millis(10)),
            retain_bytes,
            retain_seconds: retain_seconds
                .map(|s| seconds("retain_seconds", s))
                .transpose()?,
            sync,
            ..PrimaryOptions::default()
        };
        let core = store.get().store.clone();
        let primary = run_detached(py, move || Primary::start(core, options))?;
        Ok(Self {
            primary: ParentOnly::new(primary),
            store,
        })
    }

    /// The address replicas connect to.
    #[getter]
    fn address(&self) -> String {
        self.primary.address().to_string()
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

    /// The durable slots: `name`, `acked_lsn`, `created` and `fsync` of each replica the log
    /// is kept for.
    fn slots<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, pyo3::types::PyDict>>> {
        owned(py, self.primary.store())?;
        self.primary
            .slots()
            .into_iter()
            .map(|slot| {
                let row = pyo3::types::PyDict::new(py);
                row.set_item("name", slot.name)?;
                row.set_item("acked_lsn", slot.acked_lsn)?;
                row.set_item("fsync", slot.fsync)?;
                let ms = i64::try_from(slot.created_ms).unwrap_or(i64::MAX);
                let created = unix_to_datetime(
                    py,
                    ms.div_euclid(1000),
                    (ms.rem_euclid(1000) * 1_000_000) as u32,
                )?;
                row.set_item("created", created)?;
                Ok(row)
            })
            .collect()
    }

    /// Drops a replica's slot (the log is no longer kept for it); returns whether it existed.
    fn drop_slot(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        owned(py, self.primary.store())?;
        run_detached(py, || self.primary.drop_slot(name))
    }

    /// Applies retention now: persists the slots and drops the log segments no slot needs
    /// (within the caps). Returns how many segments were dropped.
    fn retain(&self, py: Python<'_>) -> PyResult<usize> {
        owned(py, self.primary.store())?;
        run_detached(py, || self.primary.retain())
    }

    /// Whether sync writes can complete now: "ok" (at least `quorum` replicas that fsync
    /// are connected), "degraded" (enough are registered but fewer are connected: sync
    /// writes wait and may time out) or "unavailable" (fewer are registered: sync writes
    /// are refused).
    #[getter]
    fn sync_state(&self, py: Python<'_>) -> PyResult<&'static str> {
        owned(py, self.primary.store())?;
        Ok(self.primary.status().sync_state.name())
    }

    /// Every replica seen since start, with its state and lag.
    fn status(&self, py: Python<'_>) -> PyResult<Vec<PyReplicaInfo>> {
        owned(py, self.primary.store())?;
        self.primary
            .status()
            .replicas
            .into_iter()
            .map(|link| PyReplicaInfo::new(py, link))
            .collect()
    }

    /// Waits until `replicas` replicas acknowledged `lsn` as durable (or `timeout`, in
    /// seconds; an infinite timeout waits for ever); returns how many did. Only replicas
    /// that count toward the quorum are counted (never consumers or `fsync=False` ones).
    #[pyo3(signature = (lsn, replicas = 1, timeout = 2.0))]
    fn wait_for(&self, py: Python<'_>, lsn: i128, replicas: i128, timeout: f64) -> PyResult<usize> {
        owned(py, self.primary.store())?;
        let lsn = non_negative("lsn", lsn)?;
        let replicas = usize::try_from(non_negative("replicas", replicas)?).unwrap_or(usize::MAX);
        let timeout = wait_limit("timeout", timeout)?;
        wait_until(py, timeout, || {
            self.primary.wait_for(lsn, replicas, Duration::ZERO) >= replicas
        })?;
        Ok(self.primary.wait_for(lsn, replicas, Duration::ZERO))
    }

    /// Compares each replica's per-table checksums with this primary's at an LSN both
    /// recorded (waiting up to `timeout` seconds for answers); returns a `VerifyReport`.
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

    /// Stops serving; the store stays open.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        owned(py, self.primary.store())?;
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

    fn __repr__(&self) -> String {
        if let Err(err) = self.primary.store().check_process() {
            return format!("<Primary {}: {err}>", self.primary.address());
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

/// Follows a primary into a local, read-only store.
#[pyclass(frozen, module = "replikv._core", name = "Replica")]
pub(crate) struct PyReplica {
    replica: ParentOnly<Replica>,
    store: Py<PyStore>,
}

#[pymethods]
impl PyReplica {
    #[new]
    #[pyo3(signature = (path, *, primary, token = None, name = None, fsync = true, max_backoff = 2.0, on_diverge = "stop"))]
    #[allow(clippy::too_many_arguments)] // the keyword arguments of the Python API
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        primary: String,
        token: Option<String>,
        name: Option<String>,
        fsync: bool,
        max_backoff: f64,
        on_diverge: &str,
    ) -> PyResult<Self> {
        let on_diverge = match on_diverge {
            "stop" => OnDiverge::Stop,
            "resync" => OnDiverge::Resync,
            other => {
                return Err(PyValueError::new_err(format!(
                    "on_diverge must be 'stop' or 'resync', not {other:?}"
                )))
            }
        };
        let name = match name {
            Some(name) => name,
            None => path
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| crate::store::validate_table_name(n).is_ok())
                .ok_or_else(|| {
                    PyValueError::new_err(
                        "give the replica a name= (letters, digits, '_', '.', '-')",
                    )
                })?
                .to_owned(),
        };
        crate::store::validate_table_name(&name).map_err(|_| {
            PyValueError::new_err(format!(
                "invalid replica name {name:?}: use letters, digits, '_', '.', '-'"
            ))
        })?;
        let options = ReplicaOptions {
            primary,
            token,
            name,
            max_backoff: seconds("max_backoff", max_backoff)?.max(Duration::from_millis(10)),
            store: StoreOptions {
                fsync,
                ..StoreOptions::default()
            },
            on_diverge,
        };
        let replica = run_detached(py, move || Replica::start(path, options))?;
        let store = Py::new(
            py,
            PyStore {
                store: replica.store().clone(),
            },
        )?;
        Ok(Self {
            replica: ParentOnly::new(replica),
            store,
        })
    }

    /// The replica's store: readable while it applies; writes raise `ReadOnlyError`.
    #[getter]
    fn store(&self, py: Python<'_>) -> Py<PyStore> {
        self.store.clone_ref(py)
    }

    /// The replica's name (its slot on the primary).
    #[getter]
    fn name(&self) -> String {
        self.replica.name().to_owned()
    }

    /// The last LSN applied here.
    #[getter]
    fn applied_lsn(&self, py: Python<'_>) -> PyResult<u64> {
        owned(py, self.replica.store())?;
        Ok(self.replica.store().last_lsn())
    }

    /// Waits until `lsn` is applied here; returns whether it was within `timeout` (in
    /// seconds; an infinite timeout waits for ever).
    ///
    /// Raises `ReplicationError` with the primary's reason once the link has failed for
    /// good (a wrong token, a diverged history), rather than waiting for nothing.
    #[pyo3(signature = (lsn, timeout = 5.0))]
    fn wait_for(&self, py: Python<'_>, lsn: i128, timeout: f64) -> PyResult<bool> {
        let lsn = non_negative("lsn", lsn)?;
        let timeout = wait_limit("timeout", timeout)?;
        self.wait_applied(py, lsn, timeout)
    }

    /// Reads `key` once the replica has applied `min_lsn` (read-your-writes).
    #[pyo3(signature = (table, key, default = None, *, min_lsn = 0, timeout = 1.0))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        table: &str,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
        min_lsn: i128,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let min_lsn = non_negative("min_lsn", min_lsn)?;
        let limit = wait_limit("timeout", timeout)?;
        if !self.wait_applied(py, min_lsn, limit)? {
            let applied = self.replica.store().last_lsn();
            let mut message =
                format!("the replica has applied LSN {applied}, not {min_lsn}, after {timeout} s");
            let state = self.replica.state();
            if let Some(error) = state.last_error {
                let _ = write!(message, " (its link is {}: {error})", state.state.name());
            }
            return Err(raise(py, "ReplicationTimeout", (message, min_lsn)));
        }
        self.store.bind(py).get().get(py, table, key, default)
    }

    /// The link's state and lag: `state`, `flushed_lsn` (durable in its log: what its acks
    /// carry), `applied_lsn` (what its readers see; today equal), `primary_last_lsn`,
    /// `lag_lsn`, `lag_seconds`, `epoch`, `connections`, `snapshots` (installed so far),
    /// `snapshot_progress` (rows received and rows in all, while one arrives), `last_error`.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        owned(py, self.replica.store())?;
        let state = self.replica.state();
        let applied = self.replica.store().last_lsn();
        let lag_lsn = state.primary_last_lsn.saturating_sub(applied);
        // On the primary's clock: the commit time of the oldest entry missing here (from
        // its last heartbeat) against its clock now (that heartbeat plus what elapsed here).
        let lag = match (lag_lsn, state.primary_now_ms()) {
            (0, _) => 0.0,
            (_, Some(now)) if state.oldest_missing_ms > 0 => {
                lag_seconds(Some(state.oldest_missing_ms), now)
            }
            // Behind, but no heartbeat has said since when yet.
            _ => f64::NAN,
        };
        let status = pyo3::types::PyDict::new(py);
        status.set_item("name", self.replica.name())?;
        status.set_item("primary", self.replica.primary())?;
        status.set_item("state", state.state.name())?;
        // A follower applies each batch as it makes it durable: the two positions are
        // reported apart so that callers never rely on that.
        status.set_item("applied_lsn", applied)?;
        status.set_item("flushed_lsn", applied)?;
        status.set_item("primary_last_lsn", state.primary_last_lsn)?;
        status.set_item("lag_lsn", lag_lsn)?;
        status.set_item("lag_seconds", lag)?;
        status.set_item("epoch", state.primary_epoch)?;
        status.set_item("connections", state.connections)?;
        status.set_item("snapshots", state.snapshots)?;
        status.set_item("snapshot_progress", state.snapshot)?;
        status.set_item("last_error", state.last_error)?;
        let diverged = state
            .diverged
            .as_ref()
            .map(|divergence| account(py, divergence))
            .transpose()?;
        status.set_item("diverged", diverged)?;
        status.set_item("resyncs", state.resyncs)?;
        let last_resync = match &state.last_resync {
            Some(resynced) => {
                let last = account(py, &resynced.divergence)?;
                last.set_item("report", resynced.report.display().to_string())?;
                Some(last)
            }
            None => None,
        };
        status.set_item("last_resync", last_resync)?;
        Ok(status)
    }

    /// Stops following and closes the store.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        owned(py, self.replica.store())?;
        run_detached(py, || self.replica.close())
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
        if let Err(err) = self.replica.store().check_process() {
            return format!("<Replica {:?}: {err}>", self.replica.name());
        }
        let state = self.replica.state();
        format!(
            "<Replica {:?} of {} state={} applied_lsn={}>",
            self.replica.name(),
            self.replica.primary(),
            state.state.name(),
            self.replica.store().last_lsn()
        )
    }
}

impl PyReplica {
    /// Waits until `lsn` is applied here (or `timeout`); a link that failed for good
    /// raises its reason instead of letting the caller wait for nothing.
    fn wait_applied(&self, py: Python<'_>, lsn: u64, timeout: Option<Duration>) -> PyResult<bool> {
        owned(py, self.replica.store())?;
        let store = self.replica.store();
        let replica = &self.replica;
        wait_until(py, timeout, || {
            store.last_lsn() >= lsn || replica.state().state == LinkState::Failed
        })?;
        if store.last_lsn() >= lsn {
            return Ok(true);
        }
        let state = replica.state();
        if state.state == LinkState::Failed {
            let reason = state.last_error.unwrap_or_default();
            let message = format!(
                "replica {:?} stopped following {} and will not reach LSN {lsn}: {reason}",
                replica.name(),
                replica.primary()
            );
            if let Some(divergence) = &state.diverged {
                return Err(diverged_error(py, message, divergence));
            }
            return Err(raise(py, "ReplicationError", (message,)));
        }
        Ok(false)
    }
}

/// Asks the primary at `address` for its status: `last_lsn`, `epoch`, `rejected`,
/// `sync_state` (as `Primary.sync_state`) and `replicas` (a list of `ReplicaInfo`).
#[pyfunction]
#[pyo3(signature = (address, *, token = None, timeout = 5.0))]
pub(crate) fn fetch_status<'py>(
    py: Python<'py>,
    address: &str,
    token: Option<String>,
    timeout: f64,
) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    let timeout = seconds("timeout", timeout)?;
    let address = address.to_owned();
    let report = run_detached(py, move || {
        crate::replication::monitor::fetch_status(&address, token.as_deref(), timeout)
            .map_err(crate::Error::from)
    })?;
    let status = pyo3::types::PyDict::new(py);
    status.set_item("last_lsn", report.last_lsn)?;
    status.set_item("epoch", report.epoch)?;
    status.set_item("rejected", report.rejected)?;
    status.set_item("sync_state", report.sync_state.name())?;
    let replicas = report
        .replicas
        .into_iter()
        .map(|link| PyReplicaInfo::new(py, link))
        .collect::<PyResult<Vec<_>>>()?;
    status.set_item("replicas", replicas)?;
    Ok(status)
}
