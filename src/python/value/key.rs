//! Python keys <-> ordered key bytes (see `crate::codec::encode_key`).

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyInt, PyString};

use crate::codec::{decode_key, encode_key, KeyRef};

/// Encodes a Python key: `str`, `bytes` or a 64-bit integer (never `bool`).
pub(crate) fn encode_py_key(key: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    with_py_key(key, encode_key)
}

/// Calls `f` with a Python key as the core sees it: `str`, `bytes` or a 64-bit `int`
/// (never `bool`), or another integer type (numpy's) as the `int` it stands for.
pub(crate) fn with_py_key<R>(
    key: &Bound<'_, PyAny>,
    f: impl FnOnce(KeyRef<'_>) -> R,
) -> PyResult<R> {
    if let Ok(s) = key.cast::<PyString>() {
        let text = s.to_str().map_err(|err| unencodable(s, err))?;
        return Ok(f(KeyRef::Str(text)));
    }
    if let Ok(b) = key.cast::<PyBytes>() {
        return Ok(f(KeyRef::Bytes(b.as_bytes())));
    }
    if key.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(
            "bool is not a valid key type (use int, str or bytes)",
        ));
    }
    if let Ok(i) = key.cast::<PyInt>() {
        return Ok(f(KeyRef::Int(int_key(i)?)));
    }
    // Another integer type (numpy's `int64` from a DataFrame's index, ...) is the int its
    // `__index__` gives, as `operator.index` takes it: it reads back as an `int`. Types
    // that are not integers (floats, numpy's `bool_`) have none.
    let py = key.py();
    match py
        .import(intern!(py, "operator"))?
        .getattr(intern!(py, "index"))?
        .call1((key,))
    {
        Ok(index) => {
            if let Ok(i) = index.cast::<PyInt>() {
                return Ok(f(KeyRef::Int(int_key(i)?)));
            }
        }
        // Not an integer; anything else (Ctrl-C in `__index__`) goes up as it is.
        Err(err) if err.is_instance_of::<PyTypeError>(py) => {}
        Err(err) => return Err(err),
    }
    Err(PyTypeError::new_err(format!(
        "keys must be str, bytes or int, not {}",
        key.get_type().name()?
    )))
}

/// A `str` key UTF-8 cannot encode (one with a lone surrogate, as `os.fsdecode` leaves of
/// a file name that is not UTF-8): a `ValueError` naming it (cut if long), with the
/// codec's `UnicodeEncodeError` as its cause.
fn unencodable(key: &Bound<'_, PyString>, err: PyErr) -> PyErr {
    const SHOWN: usize = 80;
    let py = key.py();
    let mut shown = key
        .repr()
        .map_or_else(|_| "<str>".to_owned(), |r| r.to_string());
    if shown.chars().count() > SHOWN {
        shown = shown.chars().take(SHOWN).chain("…".chars()).collect();
    }
    let refused = PyValueError::new_err(format!(
        "invalid key {shown}: str keys are stored as UTF-8, which cannot encode it ({})",
        err.value(py)
    ));
    refused.set_cause(py, Some(err));
    refused
}

fn int_key(i: &Bound<'_, PyInt>) -> PyResult<i64> {
    i.extract()
        .map_err(|_| PyOverflowError::new_err("int keys must fit in 64 bits"))
}

/// Decodes key bytes back into the Python type they went in as.
pub(crate) fn decode_py_key<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let key = decode_key(bytes).map_err(|e| super::super::errors::to_py(py, e.into()))?;
    Ok(match key {
        KeyRef::Int(i) => i.into_pyobject(py)?.into_any(),
        KeyRef::Str(s) => PyString::new(py, s).into_any(),
        KeyRef::Bytes(b) => PyBytes::new(py, b).into_any(),
    })
}
