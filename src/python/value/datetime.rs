//! `datetime` and `date` <-> the instants and day counts the codec stores (see
//! `crate::codec::encode_timestamp` and `crate::codec::encode_date`).

use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDate, PyDelta};

use super::path::Refusal;

/// Seconds since the Unix epoch of 0001-01-01T00:00:00Z and of the last second of
/// 9999-12-31 (UTC): the range a Python `datetime` can hold once converted to UTC.
const MIN_UNIX_SECONDS: i64 = -62_135_596_800;
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;
/// `date(1970, 1, 1).toordinal()`.
const UNIX_EPOCH_ORDINAL: i64 = 719_163;

/// 1970-01-01T00:00:00, aware (UTC) or naive.
fn epoch(py: Python<'_>, aware: bool) -> PyResult<&Bound<'_, PyAny>> {
    static AWARE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static NAIVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let cell = if aware { &AWARE } else { &NAIVE };
    cell.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        let datetime = py.import("datetime")?;
        let utc = if aware {
            datetime.getattr("timezone")?.getattr("utc")?
        } else {
            py.None().into_bound(py)
        };
        Ok(datetime
            .getattr("datetime")?
            .call1((1970, 1, 1, 0, 0, 0, 0, utc))?
            .unbind())
    })
    .map(|epoch| epoch.bind(py))
}

/// Seconds and nanoseconds since the Unix epoch of a `datetime` (or a subclass such as
/// `pandas.Timestamp`, whose nanoseconds are truncated to microseconds). A naive one is
/// taken as UTC if `naive_utc`, else refused; `in_frame`: the refusal names the
/// DataFrame paths' `naive="utc"`.
pub(crate) fn datetime_to_unix(
    dt: &Bound<'_, PyAny>,
    naive_utc: bool,
    in_frame: bool,
) -> Result<(i64, u32), Refusal> {
    let py = dt.py();
    let naive = dt
        .call_method0("utcoffset")
        .map_err(Refusal::raised)?
        .is_none();
    if naive && !naive_utc {
        let mut message = String::from(
            "naive datetime (it has no timezone, so the instant it means is ambiguous): give \
             it one, for example timezone.utc",
        );
        if in_frame {
            message.push_str(
                ", or pass naive=\"utc\" if the frame's are UTC (a numpy array in a cell, as \
                 pandas reads a parquet list of timestamps, holds none)",
            );
        }
        return Err(Refusal::type_error(message));
    }
    let delta = epoch(py, !naive)
        .and_then(|epoch| dt.call_method1("__sub__", (epoch,)))
        .map_err(Refusal::raised)?;
    let field = |name: &str| -> Result<i64, Refusal> {
        delta
            .getattr(name)
            .and_then(|v| v.extract())
            .map_err(Refusal::raised)
    };
    let (days, seconds, micros) = (field("days")?, field("seconds")?, field("microseconds")?);
    let unix = days
        .checked_mul(86_400)
        .and_then(|s| s.checked_add(seconds))
        .filter(|s| (MIN_UNIX_SECONDS..=MAX_UNIX_SECONDS).contains(s))
        .ok_or_else(|| {
            // A value stored anyway could never be read back as a datetime.
            Refusal::overflow(format!(
                "{} is outside years 1-9999 once converted to UTC, so it could not be read back",
                dt.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
    if !(0..1_000_000).contains(&micros) {
        return Err(Refusal::value_error("datetime microseconds out of range"));
    }
    Ok((unix, micros as u32 * 1_000))
}

/// The aware UTC datetime for seconds and nanoseconds since the Unix epoch.
pub(crate) fn unix_to_datetime(
    py: Python<'_>,
    secs: i64,
    nanos: u32,
) -> PyResult<Bound<'_, PyAny>> {
    let days = secs.div_euclid(86_400);
    let seconds = secs.rem_euclid(86_400);
    let days =
        i32::try_from(days).map_err(|_| PyOverflowError::new_err("timestamp out of range"))?;
    let delta = PyDelta::new(py, days, seconds as i32, (nanos / 1_000) as i32, true)?;
    epoch(py, true)?.call_method1("__add__", (delta,))
}

/// The aware UTC datetime `ms` milliseconds after the Unix epoch (clamped to `i64`).
pub(crate) fn ms_to_datetime(py: Python<'_>, ms: u64) -> PyResult<Bound<'_, PyAny>> {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    let nanos = u32::try_from(ms.rem_euclid(1000) * 1_000_000)
        .expect("invariant: under a second of nanoseconds fits a u32");
    unix_to_datetime(py, ms.div_euclid(1000), nanos)
}

/// Days since 1970-01-01 of a `date` (never a `datetime`: the caller tests that first).
pub(crate) fn date_to_days(date: &Bound<'_, PyAny>) -> Result<i32, Refusal> {
    let ordinal: i64 = date
        .call_method0("toordinal")
        .and_then(|o| o.extract())
        .map_err(Refusal::raised)?;
    // Years 1-9999 are about ±2.9 million days from 1970: always an i32.
    i32::try_from(ordinal - UNIX_EPOCH_ORDINAL)
        .map_err(|_| Refusal::overflow("date outside years 1-9999"))
}

/// The `date` `days` after 1970-01-01.
pub(crate) fn days_to_date(py: Python<'_>, days: i32) -> PyResult<Bound<'_, PyAny>> {
    py.get_type::<PyDate>()
        .call_method1("fromordinal", (i64::from(days) + UNIX_EPOCH_ORDINAL,))
}
