//! A primary's settings as Python sees them: the keyword arguments of `Primary(...)`. A
//! promotion serves with the old primary's (as its heartbeats last said), each replaced by
//! the argument given in its place.

use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::args::{durability_setting, seconds};
use super::replication::{on_timeout, quorum, table_modes};
use crate::error::ReplicationError;
use crate::replication::handover::Settings;
use crate::replication::primary::PrimaryOptions;
use crate::store::OnTimeout;

/// `options` as the keyword arguments of `Primary(...)` (all but `listen` and `token`).
pub(super) fn to_dict<'py>(
    py: Python<'py>,
    options: &PrimaryOptions,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("ship_interval", options.ship_interval.as_secs_f64())?;
    dict.set_item("max_batch_bytes", options.max_batch_bytes)?;
    dict.set_item(
        "heartbeat_interval",
        options.heartbeat_interval.as_secs_f64(),
    )?;
    dict.set_item("retain_bytes", options.retain_bytes)?;
    dict.set_item(
        "retain_seconds",
        options.retain_seconds.map(|d| d.as_secs_f64()),
    )?;
    let sync = &options.sync;
    dict.set_item("quorum", sync.quorum)?;
    dict.set_item("sync_timeout", sync.sync_timeout.as_secs_f64())?;
    let on_timeout = match sync.on_timeout {
        OnTimeout::Raise => "raise",
        OnTimeout::Degrade => "degrade",
    };
    dict.set_item("on_timeout", on_timeout)?;
    let modes: HashMap<&str, &str> = sync
        .table_modes
        .iter()
        .map(|(table, mode)| (table.as_str(), mode.name()))
        .collect();
    dict.set_item("table_modes", modes)?;
    dict.set_item("default_durability", sync.default_durability.name())?;
    dict.set_item("ship_ahead", options.ship_ahead)?;
    Ok(dict)
}

/// `settings` as the keyword arguments of `Primary(...)`.
pub(super) fn settings_dict<'py>(
    py: Python<'py>,
    settings: &Settings,
) -> PyResult<Bound<'py, PyDict>> {
    to_dict(py, &settings.options(String::new(), None))
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
    /// argument in place of its setting, each checked as `Primary(...)` checks it. Only
    /// the arguments given can be refused: what was inherited is brought within bounds
    /// (see [`Settings::options`]). Settings kept on disk that cannot be read back
    /// (`Err`: the damage) are refused unless the arguments say the quorum and how each
    /// table is written: a promotion never serves weaker than the old primary did.
    pub(super) fn options(
        self,
        py: Python<'_>,
        listen: &str,
        token: Option<String>,
        inherited: Result<Option<Settings>, String>,
    ) -> PyResult<PrimaryOptions> {
        let inherited = match inherited {
            Ok(settings) => settings,
            Err(damage)
                if self.quorum.is_none()
                    || self.table_modes.is_none()
                    || self.default_durability.is_none() =>
            {
                let refused = ReplicationError::Refused {
                    reason: format!(
                        "the old primary's settings cannot be read back ({damage}), and no \
                         heartbeat has told them since this replica started: pass quorum=, \
                         table_modes= and default_durability= to promote(), as the old \
                         primary served"
                    ),
                };
                return Err(super::errors::to_py(py, refused.into()));
            }
            Err(_) => None,
        };
        let mut options = if let Some(settings) = inherited {
            settings.options(listen.to_owned(), token)
        } else {
            tracing::warn!(
                "no heartbeat told this replica how its primary served: the promoted primary \
                 serves with Primary's defaults (every table async) but for the arguments \
                 given to promote()"
            );
            PrimaryOptions {
                listen: listen.to_owned(),
                token,
                ..PrimaryOptions::default()
            }
        };
        let sync = &mut options.sync;
        if let Some(interval) = self.ship_interval {
            options.ship_interval = seconds("ship_interval", interval)?;
        }
        if let Some(given) = self.quorum {
            sync.quorum = quorum(given)?;
        }
        if let Some(timeout) = self.sync_timeout {
            sync.sync_timeout = seconds("sync_timeout", timeout)?;
        }
        if let Some(given) = &self.on_timeout {
            sync.on_timeout = on_timeout(given)?;
        }
        if let Some(given) = self.table_modes {
            sync.table_modes = table_modes(given)?;
        }
        if let Some(given) = &self.default_durability {
            sync.default_durability = durability_setting("default_durability", given)?;
        }
        if let Some(ahead) = self.ship_ahead {
            options.ship_ahead = ahead;
        }
        Ok(options)
    }
}
