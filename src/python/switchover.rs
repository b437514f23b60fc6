//! `Primary.switchover`: hands the primary's log to one of its replicas and makes the old
//! primary's store follow it; and `Switchover`, the report of what it did.

use std::time::Duration;

use pyo3::prelude::*;

use super::args::seconds;
use super::display::html;
use super::errors::{owned, run_detached};
use super::primary::PyPrimary;
use super::replica::{default_name, PyReplica};
use crate::fork::ParentOnly;
use crate::replication::monitor;
use crate::replication::replica::{OnDiverge, Replica, ReplicaOptions};
use crate::store::StoreOptions;

/// What a planned switchover did: who is the primary now and where, its epoch, the last
/// LSN of the old primary, how long writes were paused, and the old primary's store as a
/// replica of the new one.
#[pyclass(frozen, get_all, module = "replikv._core", name = "Switchover")]
pub(crate) struct PySwitchover {
    /// The replica that is the primary now.
    to: String,
    /// Where it serves.
    address: String,
    /// Its epoch.
    epoch: u64,
    /// The old primary's last LSN: the new epoch starts after it.
    last_lsn: u64,
    /// Seconds writes were refused with ``WritesPausedError``.
    paused: f64,
    /// The old primary's store, following the new primary.
    replica: Py<PyReplica>,
}

#[pymethods]
impl PySwitchover {
    /// An HTML table of who serves now, where, its epoch and the pause, for Jupyter.
    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    fn __repr__(&self) -> String {
        format!(
            "Switchover(to='{}', address='{}', epoch={}, last_lsn={}, paused={:.1} ms)",
            self.to,
            self.address,
            self.epoch,
            self.last_lsn,
            self.paused * 1000.0
        )
    }
}

/// See `Primary.switchover` in the stubs; with `to` unset, the switchover an operator
/// asked for (`Primary.serve_switchover_request`), if one waits.
pub(super) fn switch_over(
    py: Python<'_>,
    primary: &PyPrimary,
    to: Option<&str>,
    timeout: f64,
    name: Option<String>,
    listen: Option<String>,
) -> PyResult<Option<PySwitchover>> {
    let store = primary.store.get().store.clone();
    owned(py, &store)?;
    let timeout = seconds("timeout", timeout)?.min(Duration::from_secs(3600));
    let name = match name {
        Some(name) => name,
        None => default_name(store.path())?,
    };
    let core = &primary.primary;
    let listen = listen.unwrap_or_else(|| core.address().to_string());
    let token = core.token().map(str::to_owned);
    let switched = run_detached(py, || match to {
        Some(to) => core.switchover(to, &name, timeout).map(Some),
        None => core.serve_switchover_request(&name, timeout),
    })?;
    let Some(switched) = switched else {
        return Ok(None);
    };
    let options = ReplicaOptions {
        primary: switched.address.clone(),
        token,
        name,
        max_backoff: Duration::from_secs(2),
        store: StoreOptions::default(),
        on_diverge: OnDiverge::Stop,
        listen: Some(listen),
    };
    let following = store.clone();
    let replica = run_detached(py, move || Replica::attach(following, options))?;
    let replica = PyReplica::attached(ParentOnly::new(replica), primary.store.clone_ref(py));
    Ok(Some(PySwitchover {
        to: switched.to,
        address: switched.address,
        epoch: switched.epoch,
        last_lsn: switched.last_lsn,
        paused: switched.paused.as_secs_f64(),
        replica: Py::new(py, replica)?,
    }))
}

/// Asks the primary at ``address`` to hand over to its replica ``to`` (what ``replikv
/// switchover`` does); returns the new primary's address once it serves.
///
/// Raises:
///     ReplicationError: the switchover failed (its reason), or the primary's owner took
///         no request in time.
#[pyfunction]
#[pyo3(signature = (address, to, *, token = None, timeout = 40.0))]
pub(crate) fn request_switchover(
    py: Python<'_>,
    address: &str,
    to: &str,
    token: Option<&str>,
    timeout: f64,
) -> PyResult<String> {
    let timeout = seconds("timeout", timeout)?;
    run_detached(py, || {
        monitor::request_switchover(address, to, token, timeout).map_err(crate::Error::from)
    })
}

/// Tells the replica whose ``listen`` address is ``address`` to follow the primary at
/// ``primary`` from now on (what ``replikv follow`` does).
#[pyfunction]
#[pyo3(signature = (address, primary, *, token = None, timeout = 5.0))]
pub(crate) fn request_follow(
    py: Python<'_>,
    address: &str,
    primary: &str,
    token: Option<&str>,
    timeout: f64,
) -> PyResult<()> {
    let timeout = seconds("timeout", timeout)?;
    run_detached(py, || {
        monitor::request_follow(address, primary, token, timeout).map_err(crate::Error::from)
    })
}
