//! Arguments from Python, checked before use: a negative position, a NaN timeout or
//! `sys.maxsize` seconds must be a clear exception or a documented meaning, never an
//! overflow panic deep inside; a lone `str` given for a list of names, an exception that
//! says so.

use crate::python::display::quoted;
use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt, PyString};

use crate::store::Durability;

/// Longest interval or duration setting accepted: far beyond any real use, and small
/// enough that adding it to any clock reading cannot overflow.
const MAX_SETTING_SECONDS: f64 = 100.0 * 365.25 * 86_400.0;

/// An integer argument (`#[pyo3(from_py_with = int)]`): any `int`, or an object with
/// `__index__` (a numpy integer), but never a `bool`: `since=True` or `quorum=True` is a
/// mistake, not 1. Taken as an `i128`, so that range checks name the argument.
pub(crate) fn int(value: &Bound<'_, PyAny>) -> PyResult<i128> {
    if value.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "expected an int, not a bool ({})",
            value.repr()?
        )));
    }
    if let Ok(int) = value.cast::<PyInt>() {
        return int.extract();
    }
    // Through `operator.index`, as Python's own int arguments: the limited API's
    // conversion of a non-int shifts it as an int, which an object that only has
    // `__index__` refuses with a message about `>>`.
    let index = value.py().import("operator")?.getattr("index")?;
    index.call1((value,))?.extract()
}

/// [`int`] for an argument that may be `None`.
pub(crate) fn opt_int(value: &Bound<'_, PyAny>) -> PyResult<Option<i128>> {
    if value.is_none() {
        Ok(None)
    } else {
        int(value).map(Some)
    }
}

/// A non-negative integer argument (an LSN, a position, a count). Taken from Python as an
/// `i128` so that a negative value gets this message rather than pyo3's "can't convert
/// negative int to unsigned".
pub(crate) fn non_negative(name: &str, value: i128) -> PyResult<u64> {
    if value < 0 {
        return Err(PyValueError::new_err(format!(
            "{name} cannot be negative (got {value})"
        )));
    }
    u64::try_from(value)
        .map_err(|_| PyOverflowError::new_err(format!("{name} must fit in 64 bits, not {value}")))
}

/// A size in bytes or a count held in memory, as [`non_negative`].
pub(crate) fn size(name: &str, value: i128) -> PyResult<usize> {
    let value = non_negative(name, value)?;
    usize::try_from(value)
        .map_err(|_| PyOverflowError::new_err(format!("{name} is too large: {value}")))
}

/// An optional `limit=` argument: how many items at most (`None`: no limit).
pub(crate) fn limit(value: Option<i128>) -> PyResult<usize> {
    value.map_or(Ok(usize::MAX), |l| {
        non_negative("limit", l).map(|l| usize::try_from(l).unwrap_or(usize::MAX))
    })
}

fn finite_seconds(name: &str, value: f64) -> PyResult<f64> {
    if value.is_nan() || value < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{name} must be a non-negative number of seconds, not {value}"
        )));
    }
    Ok(value)
}

/// An interval or duration setting, in seconds (at most a century).
pub(crate) fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    let value = finite_seconds(name, value)?;
    if value > MAX_SETTING_SECONDS {
        return Err(PyValueError::new_err(format!(
            "{name} must be at most {MAX_SETTING_SECONDS:.0} seconds (a century), not {value}"
        )));
    }
    Ok(Duration::from_secs_f64(value))
}

/// How long a wait may last: `None` means no limit, which any timeout longer than a
/// century (`float("inf")`, `sys.maxsize`) stands for.
pub(crate) fn timeout(name: &str, value: f64) -> PyResult<Option<Duration>> {
    let value = finite_seconds(name, value)?;
    Ok((value <= MAX_SETTING_SECONDS).then(|| Duration::from_secs_f64(value)))
}

/// A durability setting: `"async"` or `"sync"`.
pub(crate) fn durability_setting(name: &str, value: &str) -> PyResult<Durability> {
    match value {
        "async" => Ok(Durability::Async),
        "sync" => Ok(Durability::Sync),
        other => Err(PyValueError::new_err(format!(
            "{name} must be 'async' or 'sync', not {}",
            quoted(other)
        ))),
    }
}

/// A write's `durability=` argument: `"async"`, `"sync"`, or `None` for the default of the
/// tables it writes.
pub(crate) fn durability(value: Option<&str>) -> PyResult<Option<Durability>> {
    value
        .map(|value| durability_setting("durability", value))
        .transpose()
}

/// A store's directory: any path but the empty one, which would put a store's files in the
/// working directory.
pub(crate) fn directory(path: PathBuf) -> PyResult<PathBuf> {
    if path.as_os_str().is_empty() {
        return Err(PyValueError::new_err(
            "path is empty: name the store's directory, e.g. 'data/crm'",
        ));
    }
    Ok(path)
}

/// A list of names (tables, columns, node addresses), as any iterable of `str` but a lone
/// `str`: that is iterable too, and meant as `[name]`.
pub(crate) fn names(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<String>>> {
    let Some(value) = value else {
        return Ok(None);
    };
    if let Ok(one) = value.cast::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "{name} takes a list of str, not a str: write {name}=[{}]",
            quoted(&one.to_string_lossy())
        )));
    }
    let iter = value.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name} takes a list of str, not {}",
            value
                .get_type()
                .name()
                .map_or_else(|_| "that".into(), |n| n.to_string())
        ))
    })?;
    iter.map(|item| {
        let item = item?;
        item.extract::<String>().map_err(|_| {
            PyTypeError::new_err(format!(
                "{name} takes a list of str; one item is {}",
                item.get_type()
                    .name()
                    .map_or_else(|_| "non-str".into(), |n| n.to_string())
            ))
        })
    })
    .collect::<PyResult<Vec<String>>>()
    .map(Some)
}
