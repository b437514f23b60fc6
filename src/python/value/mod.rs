//! Python values <-> `MessagePack`, and Python keys <-> ordered key bytes. Only the types of
//! DESIGN §4 (and the conversions README lists: numpy scalars, dates, pandas timestamps)
//! are accepted; nothing is ever pickled.
//!
//! Both directions work on the bytes directly: the encoder writes `MessagePack` with
//! `rmp::encode` as it walks the Python object, and the decoder builds Python objects
//! straight from `crate::codec::Reader`'s tokens, with no intermediate tree.

mod datetime;
mod decode;
mod encode;
mod foreign;
mod key;
mod path;

use crate::python::display::quoted;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pub(crate) use datetime::{datetime_to_unix, ms_to_datetime};
pub(crate) use decode::decode_py_value;
// `encode_py_value_with`, `EncodeOptions` and `Location` also serve the DataFrame paths.
pub(crate) use encode::{encode_py_value, encode_py_value_with, encode_row_value, EncodeOptions};
pub(crate) use key::{decode_py_key, encode_py_key, with_py_key};
pub(crate) use path::Location;

/// The MessagePack bytes replikv stores for ``value`` (what a cache node's GET returns).
///
/// numpy scalars are stored as the Python values they stand for, a ``date`` as extension
/// type 1 (4 bytes: big-endian signed days since 1970-01-01), an aware ``pandas.Timestamp``
/// as a datetime (nanoseconds truncated to microseconds).
///
/// Args:
///     value: the value.
///     missing_as_none: store a NaN, ``pandas.NA`` or ``pandas.NaT`` value as ``None``
///         (as the DataFrame paths store a cell), NA and NaT inside it too; a NaN inside a
///         list or dict stays NaN. By default NaN is stored as NaN and NA/NaT are refused.
///     naive: ``"utc"`` takes a naive datetime or Timestamp as UTC; ``"refuse"`` (the
///         default, what ``put`` does) refuses it.
///
/// Raises:
///     TypeError: a type replikv does not store (nothing is ever pickled), a naive
///         datetime, a ``Decimal``. The message names the path to the refused part
///         (``value['at'][2]: ...``).
///     OverflowError: an int outside 64 bits, a datetime outside years 1-9999 in UTC.
///     ValueError: a value nested deeper than 128 levels, an unknown ``naive``.
///     RuntimeError: a dict or list changed while it was encoded.
#[pyfunction]
#[pyo3(signature = (value, /, *, missing_as_none = false, naive = "refuse"))]
pub(crate) fn encode_value<'py>(
    value: &Bound<'py, PyAny>,
    missing_as_none: bool,
    naive: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let naive_utc = match naive {
        "refuse" => false,
        "utc" => true,
        other => {
            return Err(PyValueError::new_err(format!(
                "naive must be 'refuse' or 'utc', not {}",
                quoted(other)
            )))
        }
    };
    let options = EncodeOptions {
        missing_as_none,
        naive_utc,
    };
    let mut out = Vec::new();
    encode_py_value_with(value, options, &mut out, &Location::Value)?;
    Ok(PyBytes::new(value.py(), &out))
}

/// `replikv.decode_value`: the value of `MessagePack` bytes as replikv stores them. Bytes
/// that are not exactly one such value (trailing bytes included) are a `ValueError`.
#[pyfunction]
#[pyo3(signature = (data, /))]
pub(crate) fn decode_value<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    decode::decode_whole(py, data)
        .map_err(|reason| PyValueError::new_err(format!("not a replikv value: {reason}")))
}
