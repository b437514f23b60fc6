//! A primary's settings as Python sees them: the keyword arguments of `Primary(...)`. A
//! promotion serves with the old primary's (as its heartbeats last said), each replaced by
//! the argument given in its place.

use std::collections::HashMap;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::replication::PrimaryArgs;
use crate::replication::handover::Settings;
use crate::replication::primary::PrimaryOptions;

fn micros(us: u64) -> f64 {
    Duration::from_micros(us).as_secs_f64()
}

fn millis(ms: u64) -> f64 {
    Duration::from_millis(ms).as_secs_f64()
}

fn seconds(s: u64) -> f64 {
    Duration::from_secs(s).as_secs_f64()
}

fn durability(sync: bool) -> &'static str {
    if sync {
        "sync"
    } else {
        "async"
    }
}

fn on_timeout(degrade: bool) -> &'static str {
    if degrade {
        "degrade"
    } else {
        "raise"
    }
}

fn table_modes(settings: &Settings) -> HashMap<String, String> {
    settings
        .tables
        .iter()
        .map(|(table, sync)| (table.clone(), durability(*sync).to_owned()))
        .collect()
}

/// `settings` as the keyword arguments of `Primary(...)` (all but `listen` and `token`).
pub(super) fn to_dict<'py>(py: Python<'py>, settings: &Settings) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("ship_interval", micros(settings.ship_interval_us))?;
    dict.set_item("max_batch_bytes", settings.max_batch_bytes)?;
    dict.set_item("heartbeat_interval", millis(settings.heartbeat_interval_ms))?;
    dict.set_item("retain_bytes", settings.retain_bytes)?;
    dict.set_item("retain_seconds", settings.retain_seconds.map(seconds))?;
    dict.set_item("quorum", settings.quorum)?;
    dict.set_item("sync_timeout", millis(settings.sync_timeout_ms))?;
    dict.set_item("on_timeout", on_timeout(settings.degrade))?;
    dict.set_item("table_modes", table_modes(settings))?;
    dict.set_item("default_durability", durability(settings.default_sync))?;
    dict.set_item("ship_ahead", settings.ship_ahead)?;
    Ok(dict)
}

/// The arguments of `Replica.promote` that stand in for the old primary's settings, each
/// `None` when not given.
pub(super) struct Overrides {
    pub ship_interval: Option<f64>,
    pub quorum: Option<i128>,
    pub sync_timeout: Option<f64>,
    pub on_timeout: Option<String>,
    pub table_modes: Option<HashMap<String, String>>,
    pub default_durability: Option<String>,
    pub ship_ahead: Option<bool>,
}

impl Overrides {
    /// The options a promotion serves with on `listen` proving `token`: `inherited` (the
    /// old primary's settings; a new primary's defaults when unknown), with every given
    /// argument in place of its setting, checked as `Primary(...)` checks them.
    pub(super) fn options(
        self,
        listen: &str,
        token: Option<String>,
        inherited: Option<Settings>,
    ) -> PyResult<PrimaryOptions> {
        let base = inherited.unwrap_or_else(|| Settings::of(&PrimaryOptions::default()));
        PrimaryArgs {
            listen,
            token,
            ship_interval: self.ship_interval.unwrap_or(micros(base.ship_interval_us)),
            max_batch_bytes: i128::from(base.max_batch_bytes),
            heartbeat_interval: millis(base.heartbeat_interval_ms),
            retain_bytes: base.retain_bytes.map(i128::from),
            retain_seconds: base.retain_seconds.map(seconds),
            quorum: self.quorum.unwrap_or(i128::from(base.quorum)),
            sync_timeout: self.sync_timeout.unwrap_or(millis(base.sync_timeout_ms)),
            on_timeout: self
                .on_timeout
                .as_deref()
                .unwrap_or(on_timeout(base.degrade)),
            table_modes: Some(self.table_modes.unwrap_or_else(|| table_modes(&base))),
            default_durability: self
                .default_durability
                .as_deref()
                .unwrap_or(durability(base.default_sync)),
            ship_ahead: self.ship_ahead.unwrap_or(base.ship_ahead),
        }
        .options()
    }
}
