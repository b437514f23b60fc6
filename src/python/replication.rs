//! What the replication wrappers share: waits that notice Ctrl-C, the checked options of a
//! `Primary`, `fetch_status` (what `replikv status` asks) and `request_drop_slot` (what
//! `replikv drop-slot` asks).

use crate::python::display::quoted;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::args::{durability_setting, non_negative, seconds, size};
use super::errors::run_detached;
use super::status::PyPrimaryStatus;
use crate::replication::primary::{PrimaryOptions, MAX_HEARTBEAT, MIN_BATCH_BYTES, MIN_HEARTBEAT};
use crate::replication::protocol::MAX_FRAME_BYTES;
use crate::replication::quorum::SyncOptions;
use crate::store::{Durability, OnTimeout};

/// How long a blocking wait sleeps between checks for Ctrl-C.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// Waits in slices, releasing the GIL, until `done` or `timeout` (`None`: no limit),
/// checking for Ctrl-C.
pub(super) fn wait_until(
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

/// `quorum=`, checked.
pub(super) fn quorum(quorum: i128) -> PyResult<usize> {
    if quorum < 1 {
        return Err(PyValueError::new_err(format!(
            "quorum must be 1 or more, not {quorum}"
        )));
    }
    Ok(usize::try_from(quorum).unwrap_or(usize::MAX))
}

/// `on_timeout=`, checked.
pub(super) fn on_timeout(on_timeout: &str) -> PyResult<OnTimeout> {
    match on_timeout {
        "raise" => Ok(OnTimeout::Raise),
        "degrade" => Ok(OnTimeout::Degrade),
        other => Err(PyValueError::new_err(format!(
            "on_timeout must be 'raise' or 'degrade', not {}",
            quoted(other)
        ))),
    }
}

/// `table_modes=`, checked.
pub(super) fn table_modes(
    table_modes: HashMap<String, String>,
) -> PyResult<HashMap<String, Durability>> {
    table_modes
        .into_iter()
        .map(|(table, mode)| {
            crate::store::validate_table_name(&table)
                .map_err(|e| PyValueError::new_err(format!("table_modes: {e}")))?;
            let mode = durability_setting(&format!("table_modes[{}]", quoted(&table)), &mode)?;
            Ok((table, mode))
        })
        .collect()
}

/// The keyword arguments a `Primary` is made with (by `Primary(...)` or a promotion).
pub(super) struct PrimaryArgs<'a> {
    pub listen: &'a str,
    pub token: Option<String>,
    pub ship_interval: f64,
    pub max_batch_bytes: i128,
    pub heartbeat_interval: f64,
    pub retain_bytes: Option<i128>,
    pub retain_seconds: Option<f64>,
    pub quorum: i128,
    pub sync_timeout: f64,
    pub on_timeout: &'a str,
    pub table_modes: Option<HashMap<String, String>>,
    pub default_durability: &'a str,
    pub ship_ahead: bool,
}

impl PrimaryArgs<'_> {
    /// The options, checked.
    pub(super) fn options(self) -> PyResult<PrimaryOptions> {
        let sync = SyncOptions {
            quorum: quorum(self.quorum)?,
            sync_timeout: seconds("sync_timeout", self.sync_timeout)?,
            on_timeout: on_timeout(self.on_timeout)?,
            table_modes: table_modes(self.table_modes.unwrap_or_default())?,
            default_durability: durability_setting("default_durability", self.default_durability)?,
        };
        let max_batch_bytes = size("max_batch_bytes", self.max_batch_bytes)?;
        if !(MIN_BATCH_BYTES..=MAX_FRAME_BYTES).contains(&max_batch_bytes) {
            return Err(PyValueError::new_err(format!(
                "max_batch_bytes must be between {MIN_BATCH_BYTES} and {MAX_FRAME_BYTES} (a frame)"
            )));
        }
        let heartbeat_interval = seconds("heartbeat_interval", self.heartbeat_interval)?;
        if !(MIN_HEARTBEAT..=MAX_HEARTBEAT).contains(&heartbeat_interval) {
            return Err(PyValueError::new_err(format!(
                "heartbeat_interval must be between {} and {} seconds (replicas drop a link \
                 silent for 5 s), not {}",
                MIN_HEARTBEAT.as_secs_f64(),
                MAX_HEARTBEAT.as_secs_f64(),
                self.heartbeat_interval
            )));
        }
        Ok(PrimaryOptions {
            listen: self.listen.to_owned(),
            token: self.token,
            ship_interval: seconds("ship_interval", self.ship_interval)?,
            max_batch_bytes,
            heartbeat_interval,
            retain_bytes: self
                .retain_bytes
                .map(|b| non_negative("retain_bytes", b))
                .transpose()?,
            retain_seconds: self
                .retain_seconds
                .map(|s| seconds("retain_seconds", s))
                .transpose()?,
            sync,
            ship_ahead: self.ship_ahead,
            ..PrimaryOptions::default()
        })
    }
}

/// Asks the primary at ``address`` for its status (as :meth:`Primary.status`).
#[pyfunction]
#[pyo3(signature = (address, *, token = None, timeout = 5.0))]
pub(crate) fn fetch_status(
    py: Python<'_>,
    address: &str,
    token: Option<String>,
    timeout: f64,
) -> PyResult<PyPrimaryStatus> {
    let timeout = seconds("timeout", timeout)?;
    let asked = address.to_owned();
    let report = run_detached(py, move || {
        crate::replication::monitor::fetch_status(&asked, token.as_deref(), timeout)
            .map_err(crate::Error::from)
    })?;
    PyPrimaryStatus::new(py, address.to_owned(), report)
}

/// Asks the primary at ``address`` to drop the slot of its replica ``name``, gone for good
/// (what ``replikv drop-slot`` does): it no longer keeps log for that replica, nor counts
/// it among its members. Returns its status once the slot is dropped.
///
/// Raises:
///     ReplicationError: no slot has that name (the message lists those there are), or
///         that replica is connected (stop it first).
#[pyfunction]
#[pyo3(signature = (address, name, *, token = None, timeout = 5.0))]
pub(crate) fn request_drop_slot(
    py: Python<'_>,
    address: &str,
    name: &str,
    token: Option<String>,
    timeout: f64,
) -> PyResult<PyPrimaryStatus> {
    let timeout = seconds("timeout", timeout)?;
    let (asked, slot) = (address.to_owned(), name.to_owned());
    let report = run_detached(py, move || {
        crate::replication::monitor::request_drop_slot(&asked, &slot, token.as_deref(), timeout)
            .map_err(crate::Error::from)
    })?;
    PyPrimaryStatus::new(py, address.to_owned(), report)
}
