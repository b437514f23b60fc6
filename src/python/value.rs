//! Python values <-> `MessagePack` through serde, and Python keys <-> ordered key bytes.
//! Only the types of DESIGN §4 are accepted; nothing is ever pickled.

use std::cell::RefCell;
use std::fmt;

use pyo3::exceptions::{PyOverflowError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyBytes, PyDateTime, PyDelta, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use serde::de::{self, DeserializeSeed, Visitor};
use serde::ser::{self, Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::codec::{decode_key, decode_timestamp, encode_key, encode_timestamp, KeyRef};

/// Values nested deeper than this are refused (a guard against runaway recursion).
const MAX_DEPTH: u32 = 128;
/// The `MessagePack` timestamp extension type.
const TIMESTAMP_EXT: i8 = -1;
/// Seconds since the Unix epoch of 0001-01-01T00:00:00Z and of the last second of
/// 9999-12-31 (UTC): the range a Python `datetime` can hold once converted to UTC.
const MIN_UNIX_SECONDS: i64 = -62_135_596_800;
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// Encodes a Python key: `str`, `bytes` or a 64-bit `int` (never `bool`).
pub(crate) fn encode_py_key(key: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    with_py_key(key, encode_key)
}

/// Calls `f` with a Python key as the core sees it: `str`, `bytes` or a 64-bit `int`
/// (never `bool`).
pub(crate) fn with_py_key<R>(
    key: &Bound<'_, PyAny>,
    f: impl FnOnce(KeyRef<'_>) -> R,
) -> PyResult<R> {
    if let Ok(s) = key.cast::<PyString>() {
        return Ok(f(KeyRef::Str(s.to_str()?)));
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
        let value: i64 = i
            .extract()
            .map_err(|_| PyOverflowError::new_err("int keys must fit in 64 bits"))?;
        return Ok(f(KeyRef::Int(value)));
    }
    Err(PyTypeError::new_err(format!(
        "keys must be str, bytes or int, not {}",
        key.get_type().name()?
    )))
}

/// Decodes key bytes back into the Python type they went in as.
pub(crate) fn decode_py_key<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let key = decode_key(bytes).map_err(|e| super::errors::to_py(py, e.into()))?;
    Ok(match key {
        KeyRef::Int(i) => i.into_pyobject(py)?.into_any(),
        KeyRef::Str(s) => PyString::new(py, s).into_any(),
        KeyRef::Bytes(b) => PyBytes::new(py, b).into_any(),
    })
}

fn utc_epoch(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static EPOCH: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    EPOCH
        .get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            let datetime = py.import("datetime")?;
            let utc = datetime.getattr("timezone")?.getattr("utc")?;
            Ok(datetime
                .getattr("datetime")?
                .call1((1970, 1, 1, 0, 0, 0, 0, utc))?
                .unbind())
        })
        .map(|epoch| epoch.bind(py))
}

/// Seconds and nanoseconds since the Unix epoch of an aware datetime.
pub(crate) fn datetime_to_unix(dt: &Bound<'_, PyAny>) -> PyResult<(i64, u32)> {
    if dt.call_method0("utcoffset")?.is_none() {
        return Err(PyTypeError::new_err(
            "naive datetimes are ambiguous: give the datetime a timezone (for example timezone.utc)",
        ));
    }
    let delta = dt.call_method1("__sub__", (utc_epoch(dt.py())?,))?;
    let days: i64 = delta.getattr("days")?.extract()?;
    let seconds: i64 = delta.getattr("seconds")?.extract()?;
    let micros: u32 = delta.getattr("microseconds")?.extract()?;
    let unix = days
        .checked_mul(86_400)
        .and_then(|s| s.checked_add(seconds))
        .filter(|s| (MIN_UNIX_SECONDS..=MAX_UNIX_SECONDS).contains(s))
        .ok_or_else(|| {
            // A value stored anyway could never be read back as a datetime.
            PyOverflowError::new_err(format!(
                "{} is outside years 1-9999 once converted to UTC, so it could not be read back",
                dt.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
    if micros >= 1_000_000 {
        return Err(PyValueError::new_err("datetime microseconds out of range"));
    }
    Ok((unix, micros * 1_000))
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
    utc_epoch(py)?.call_method1("__add__", (delta,))
}

/// A Python object being serialized; a refusal is kept in `failure` so that the caller can
/// raise the precise Python exception (`TypeError`, `OverflowError`) rather than a generic one.
pub(crate) struct PyValue<'a, 'py> {
    obj: &'a Bound<'py, PyAny>,
    depth: u32,
    failure: &'a RefCell<Option<PyErr>>,
}

impl<'py> PyValue<'_, 'py> {
    fn fail<E: ser::Error>(&self, err: PyErr) -> E {
        let message = err.to_string();
        self.failure.borrow_mut().get_or_insert(err);
        E::custom(message)
    }

    fn child<'b>(&'b self, obj: &'b Bound<'py, PyAny>) -> PyValue<'b, 'py> {
        PyValue {
            obj,
            depth: self.depth + 1,
            failure: self.failure,
        }
    }
}

/// Encoding a datetime runs Python code (a pure-Python `utcoffset`, a finalizer, a switch
/// to another thread), so a dict or list may change while it is encoded. Each step checks
/// the size first (what pyo3's dict iterator would otherwise panic on), and a container is
/// never given fewer or more entries than its header promised: a change is a
/// `RuntimeError`, as Python raises for a dict changed during iteration.
fn changed(what: &str) -> PyErr {
    PyRuntimeError::new_err(format!("{what} changed size while it was being stored"))
}

impl<'py> PyValue<'_, 'py> {
    fn serialize_dict<S: Serializer>(
        &self,
        dict: &Bound<'py, PyDict>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let len = dict.len();
        let mut map = s.serialize_map(Some(len))?;
        let mut entries = dict.iter();
        for _ in 0..len {
            if dict.len() != len {
                return Err(self.fail(changed("dictionary")));
            }
            let Some((k, v)) = entries.next() else {
                return Err(self.fail(changed("dictionary")));
            };
            if !k.is_instance_of::<PyString>() {
                let name = k
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default();
                return Err(self.fail(PyTypeError::new_err(format!(
                    "dict keys in values must be str, not {name}"
                ))));
            }
            map.serialize_entry(&self.child(&k), &self.child(&v))?;
        }
        // Same size but other keys: the iterator still has some to give.
        if dict.len() != len || entries.next().is_some() {
            return Err(self.fail(changed("dictionary")));
        }
        map.end()
    }

    fn serialize_list<S: Serializer>(
        &self,
        list: &Bound<'py, PyList>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let len = list.len();
        let mut seq = s.serialize_seq(Some(len))?;
        for index in 0..len {
            let item = match list.get_item(index) {
                Ok(item) if list.len() == len => item,
                _ => return Err(self.fail(changed("list"))),
            };
            seq.serialize_element(&self.child(&item))?;
        }
        if list.len() != len {
            return Err(self.fail(changed("list")));
        }
        seq.end()
    }
}

impl Serialize for PyValue<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let obj = self.obj;
        if self.depth > MAX_DEPTH {
            return Err(self.fail(PyValueError::new_err(format!(
                "values nested deeper than {MAX_DEPTH} levels are refused"
            ))));
        }
        if obj.is_none() {
            return s.serialize_unit();
        }
        if let Ok(b) = obj.cast::<PyBool>() {
            return s.serialize_bool(b.is_true());
        }
        if let Ok(i) = obj.cast::<PyInt>() {
            return match i.extract::<i64>() {
                Ok(v) => s.serialize_i64(v),
                Err(_) => Err(self.fail(PyOverflowError::new_err(
                    "int values must fit in 64 bits (signed)",
                ))),
            };
        }
        if let Ok(f) = obj.cast::<PyFloat>() {
            return s.serialize_f64(f.value());
        }
        if let Ok(text) = obj.cast::<PyString>() {
            return match text.to_str() {
                Ok(text) => s.serialize_str(text),
                Err(err) => Err(self.fail(err)),
            };
        }
        if let Ok(bytes) = obj.cast::<PyBytes>() {
            return s.serialize_bytes(bytes.as_bytes());
        }
        if let Ok(dict) = obj.cast::<PyDict>() {
            return self.serialize_dict(dict, s);
        }
        if let Ok(list) = obj.cast::<PyList>() {
            return self.serialize_list(list, s);
        }
        if let Ok(tuple) = obj.cast::<PyTuple>() {
            let mut seq = s.serialize_seq(Some(tuple.len()))?;
            for item in tuple.iter() {
                seq.serialize_element(&self.child(&item))?;
            }
            return seq.end();
        }
        if obj.is_instance_of::<PyDateTime>() {
            let (secs, nanos) = datetime_to_unix(obj).map_err(|e| self.fail(e))?;
            let payload = encode_timestamp(secs, nanos);
            return s.serialize_newtype_struct(
                rmp_serde::MSGPACK_EXT_STRUCT_NAME,
                &(TIMESTAMP_EXT, serde_bytes::Bytes::new(&payload)),
            );
        }
        let name = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        Err(self.fail(PyTypeError::new_err(format!(
            "cannot store a value of type {name}: values are None, bool, int, float, str, bytes, \
             list, tuple, dict with str keys, aware datetime, or nestings of these"
        ))))
    }
}

/// Encodes a Python value as `MessagePack`. A value refused part-way leaves nothing behind:
/// the partial encoding is dropped with the error.
pub(crate) fn encode_py_value(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let failure = RefCell::new(None);
    let mut out = Vec::with_capacity(64);
    let value = PyValue {
        obj,
        depth: 0,
        failure: &failure,
    };
    let encoded = super::errors::run(obj.py(), || {
        Ok(value.serialize(&mut rmp_serde::Serializer::new(&mut out)))
    })?;
    match encoded {
        Ok(()) => Ok(out),
        Err(err) => Err(failure
            .into_inner()
            .unwrap_or_else(|| PyValueError::new_err(format!("cannot encode value: {err}")))),
    }
}

/// Decodes stored `MessagePack` into Python objects.
pub(crate) fn decode_py_value<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    PySeed { py, depth: 0 }.deserialize(&mut de).map_err(|e| {
        super::errors::raise(
            py,
            "CorruptionError",
            (format!("a stored value does not decode: {e}"),),
        )
    })
}

/// `replikv.encode_value`: the `MessagePack` bytes replikv stores for a value (and that a
/// cache node returns for `GET`).
#[pyfunction]
#[pyo3(signature = (value, /))]
pub(crate) fn encode_value<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let encoded = encode_py_value(value)?;
    Ok(PyBytes::new(value.py(), &encoded))
}

/// `replikv.decode_value`: the value of `MessagePack` bytes as replikv stores them. Bytes
/// that are not exactly one such value (trailing bytes included) are a `ValueError`.
#[pyfunction]
#[pyo3(signature = (data, /))]
pub(crate) fn decode_value<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let refused = |reason: String| PyValueError::new_err(format!("not a replikv value: {reason}"));
    // A reader that advances `rest`, so that what follows the value can be seen.
    let mut rest = data;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    let value = PySeed { py, depth: 0 }
        .deserialize(&mut de)
        .map_err(|e| refused(e.to_string()))?;
    drop(de);
    if !rest.is_empty() {
        return Err(refused(format!(
            "{} bytes follow the end of the value",
            rest.len()
        )));
    }
    Ok(value)
}

#[derive(Clone, Copy)]
struct PySeed<'py> {
    py: Python<'py>,
    depth: u32,
}

impl<'de, 'py> DeserializeSeed<'de> for PySeed<'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.depth > MAX_DEPTH {
            return Err(de::Error::custom("nested too deeply"));
        }
        d.deserialize_any(self)
    }
}

fn py_err<E: de::Error>(err: PyErr) -> E {
    E::custom(err)
}

impl<'de, 'py> Visitor<'de> for PySeed<'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a replikv value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.py.None().into_bound(self.py))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.py, v).to_owned().into_any())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        let Ok(int) = v.into_pyobject(self.py);
        Ok(int.into_any())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        let Ok(int) = v.into_pyobject(self.py);
        Ok(int.into_any())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(PyFloat::new(self.py, v).into_any())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(PyString::new(self.py, v).into_any())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(PyBytes::new(self.py, v).into_any())
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let list = PyList::empty(self.py);
        let child = PySeed {
            depth: self.depth + 1,
            ..self
        };
        while let Some(item) = seq.next_element_seed(child)? {
            list.append(item).map_err(py_err)?;
        }
        Ok(list.into_any())
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let dict = PyDict::new(self.py);
        let child = PySeed {
            depth: self.depth + 1,
            ..self
        };
        while let Some((k, v)) = map.next_entry_seed(child, child)? {
            dict.set_item(k, v).map_err(py_err)?;
        }
        Ok(dict.into_any())
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let (tag, payload): (i8, serde_bytes::ByteBuf) = de::Deserialize::deserialize(d)?;
        if tag != TIMESTAMP_EXT {
            return Err(de::Error::custom(format!("unknown extension type {tag}")));
        }
        let (secs, nanos) =
            decode_timestamp(&payload).ok_or_else(|| de::Error::custom("malformed timestamp"))?;
        unix_to_datetime(self.py, secs, nanos).map_err(py_err)
    }
}
