//! `Primary`: serves a store's change log to replicas; and `Promotion`, the report of
//! the promotion that made a primary of a replica.

use std::collections::HashMap;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::args::{non_negative, seconds, timeout as wait_limit};
use super::display::html;
use super::errors::{owned, run_detached};
use super::replication::{wait_until, PrimaryArgs};
use super::status::{PyPrimaryStatus, PySlot};
use super::store::PyStore;
use super::verify::PyVerifyReport;
use crate::fork::ParentOnly;
use crate::net::runtime;
use crate::replication::primary::Primary;
use crate::replication::replica::Promotion;

/// What a promotion did: the new epoch, where it starts, the members reached, and the
/// range of the old primary's entries that no reached member holds.
#[pyclass(frozen, get_all, module = "replikv._core", name = "Promotion")]
pub(crate) struct PyPromotion {
    /// The new epoch.
    epoch: u64,
    /// The first LSN of the new epoch.
    start_lsn: u64,
    /// The members reached, by name (the promoted replica included).
    reached: Vec<String>,
    /// How many members the rule asked for (`members - quorum + 1`; 0 if unknown).
    needed: u64,
    /// Whether it was forced past the rule.
    forced: bool,
    /// `(first, last)` LSNs the old primary had committed (as last heard) that the new
    /// one lacks, or `None`.
    possible_loss: Option<(u64, u64)>,
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
        }
    }
}

/// Makes a stopped replica's store at `path` the primary of a new epoch, by the rule
/// `Replica.promote` follows (with what its primary's heartbeats last said), without
/// serving it: `Primary(Store(path))` or `replikv primary --data DIR` serves it next.
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
    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    fn __repr__(&self) -> String {
        let loss = match self.possible_loss {
            Some((first, last)) => format!("LSN {first} to {last}"),
            None => "none".to_owned(),
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

    /// Hands the log to the replica named `to` (one that fsyncs and listens) and makes
    /// this primary's store its replica: see the stubs.
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

    /// Carries out the switchover an operator asked for with `replikv switchover`, if one
    /// waits (see the stubs).
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

    /// Its position, sync state and every replica seen since start, with its state and
    /// lag (a `PrimaryStatus`).
    fn status(&self, py: Python<'_>) -> PyResult<PyPrimaryStatus> {
        owned(py, self.primary.store())?;
        PyPrimaryStatus::new(py, self.address(), self.primary.status())
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

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
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
