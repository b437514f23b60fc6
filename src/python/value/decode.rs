//! `MessagePack` -> Python objects, built straight from the reader's tokens. Dict keys are
//! taken from a small per-thread cache of field names: the rows of a table repeat the same
//! few names, and a cached name costs a reference count instead of a new string (whose
//! hash Python then computes again for every dict it goes into).

use std::cell::RefCell;
use std::sync::OnceLock;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyList, PyString};

use super::datetime::{days_to_date, unix_to_datetime};
use crate::codec::{
    decode_date, decode_timestamp, Reader, Token, DATE_EXT, MAX_DEPTH, TIMESTAMP_EXT,
};

/// Why bytes did not decode (the callers add what was being decoded).
type Failure = String;

/// Decodes a stored value; bytes that are not exactly one value are a `CorruptionError`.
pub(crate) fn decode_py_value<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    decode_whole(py, bytes).map_err(|reason| {
        super::super::errors::raise(
            py,
            "CorruptionError",
            (format!("a stored value does not decode: {reason}"),),
        )
    })
}

/// The value of `bytes`, which must hold exactly one value.
pub(crate) fn decode_whole<'py>(
    py: Python<'py>,
    bytes: &[u8],
) -> Result<Bound<'py, PyAny>, Failure> {
    let mut decoder = Decoder {
        py,
        reader: Reader::new(bytes),
    };
    let value = decoder.value(0)?;
    match decoder.reader.rest().len() {
        0 => Ok(value),
        extra => Err(format!("{extra} bytes follow the end of the value")),
    }
}

struct Decoder<'a, 'py> {
    py: Python<'py>,
    reader: Reader<'a>,
}

#[allow(clippy::needless_pass_by_value)] // Used as `map_err(python)`.
fn python(err: PyErr) -> Failure {
    err.to_string()
}

impl<'py> Decoder<'_, 'py> {
    fn value(&mut self, depth: u32) -> Result<Bound<'py, PyAny>, Failure> {
        let token = self.reader.next_token().map_err(|e| e.to_string())?;
        self.build(token, depth)
    }

    fn build(&mut self, token: Token<'_>, depth: u32) -> Result<Bound<'py, PyAny>, Failure> {
        let py = self.py;
        Ok(match token {
            Token::Nil => py.None().into_bound(py),
            Token::Bool(flag) => PyBool::new(py, flag).to_owned().into_any(),
            Token::Int(int) => {
                let Ok(int) = int.into_pyobject(py);
                int.into_any()
            }
            Token::UInt(int) => {
                let Ok(int) = int.into_pyobject(py);
                int.into_any()
            }
            Token::Float(float) => PyFloat::new(py, float).into_any(),
            Token::Str(text) => PyString::from_bytes(py, text).map_err(python)?.into_any(),
            Token::Bin(bytes) => PyBytes::new(py, bytes).into_any(),
            Token::Array(len) => self.list(len, depth)?,
            Token::Map(len) => self.dict(len, depth)?,
            Token::Ext(tag, payload) => ext(py, tag, payload)?,
        })
    }

    fn list(&mut self, len: usize, depth: u32) -> Result<Bound<'py, PyAny>, Failure> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".to_owned());
        }
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            items.push(self.value(depth + 1)?);
        }
        Ok(PyList::new(self.py, items).map_err(python)?.into_any())
    }

    fn dict(&mut self, len: usize, depth: u32) -> Result<Bound<'py, PyAny>, Failure> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".to_owned());
        }
        let dict = new_dict(self.py, len);
        for _ in 0..len {
            let key = match self.reader.next_token().map_err(|e| e.to_string())? {
                Token::Str(name) => field_name(self.py, name)?.into_any(),
                other => self.build(other, depth + 1)?,
            };
            let value = self.value(depth + 1)?;
            dict.set_item(key, value).map_err(python)?;
        }
        Ok(dict.into_any())
    }
}

/// A dict for `len` fields. `PyDict_New` makes room for 5 and grows at the 6th (a new
/// table, every entry moved again): a row of 6 fields or more paid that on every read.
/// `_PyDict_NewPresized` sizes it at once, but it is not in the stable ABI this module is
/// built for, so it is looked up when the module first decodes, on the interpreters known
/// to export it with its signature (3.10 to 3.13); elsewhere `PyDict_New` serves.
fn new_dict(py: Python<'_>, len: usize) -> Bound<'_, PyDict> {
    if len > 5 {
        if let Some(presized) = presized_dict(py) {
            let len = isize::try_from(len).unwrap_or(isize::MAX);
            // SAFETY: called with the GIL held; returns a new reference to an empty dict,
            // or NULL with an exception set (a failed allocation), which is fetched here.
            #[allow(unsafe_code)]
            let made = unsafe { Bound::from_owned_ptr_or_err(py, presized(len)) };
            if let Ok(dict) = made {
                if let Ok(dict) = dict.cast_into::<PyDict>() {
                    return dict;
                }
            }
        }
    }
    PyDict::new(py)
}

type NewPresized = unsafe extern "C" fn(ffi::Py_ssize_t) -> *mut ffi::PyObject;

fn presized_dict(py: Python<'_>) -> Option<NewPresized> {
    static FOUND: OnceLock<Option<NewPresized>> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let known = py.version_info() >= (3, 10) && py.version_info() < (3, 14);
        if !known {
            return None;
        }
        // SAFETY: dlsym only reads the symbol tables of the objects loaded in the process
        // (the interpreter exports its C API to extension modules); the name is
        // NUL-terminated. Where found, on these versions, the symbol is
        // `PyObject *_PyDict_NewPresized(Py_ssize_t minused)`.
        #[allow(unsafe_code)]
        unsafe {
            let symbol = libc::dlsym(libc::RTLD_DEFAULT, c"_PyDict_NewPresized".as_ptr());
            (!symbol.is_null())
                .then(|| std::mem::transmute::<*mut std::ffi::c_void, NewPresized>(symbol))
        }
    })
}

fn ext<'py>(py: Python<'py>, tag: i8, payload: &[u8]) -> Result<Bound<'py, PyAny>, Failure> {
    match tag {
        TIMESTAMP_EXT => {
            let (secs, nanos) =
                decode_timestamp(payload).ok_or_else(|| "malformed timestamp".to_owned())?;
            unix_to_datetime(py, secs, nanos).map_err(python)
        }
        DATE_EXT => {
            let days = decode_date(payload).ok_or_else(|| "malformed date".to_owned())?;
            days_to_date(py, days).map_err(python)
        }
        _ => Err(format!(
            "unknown extension type {tag} (replikv writes type {TIMESTAMP_EXT}, a timestamp, \
             and type {DATE_EXT}, a date: 4 bytes, the big-endian signed days since 1970-01-01)"
        )),
    }
}

/// Field names at most this long are cached.
const NAME_MAX_BYTES: usize = 32;
/// Slots of the cache (a power of two); a name lives in the slot its hash picks, so a
/// new name displaces the one before it there.
const NAME_SLOTS: usize = 256;

type NameSlot = Option<(Box<[u8]>, Py<PyString>)>;

thread_local! {
    static NAMES: RefCell<[NameSlot; NAME_SLOTS]> = const { RefCell::new([const { None }; NAME_SLOTS]) };
}

/// The Python string of a field name, from this thread's cache when it is there. The cache
/// is never borrowed while Python runs anything that could run Python code (a finalizer
/// that reads the store would decode again on this thread): it is looked at, then filled.
fn field_name<'py>(py: Python<'py>, name: &[u8]) -> Result<Bound<'py, PyString>, Failure> {
    if name.len() > NAME_MAX_BYTES {
        return PyString::from_bytes(py, name).map_err(python);
    }
    let slot = (xxhash_rust::xxh3::xxh3_64(name) as usize) & (NAME_SLOTS - 1);
    let cached = NAMES.with(|names| {
        let names = names.try_borrow().ok()?;
        match &names[slot] {
            Some((text, string)) if **text == *name => Some(string.clone_ref(py)),
            _ => None,
        }
    });
    if let Some(string) = cached {
        return Ok(string.into_bound(py));
    }
    // Only a name that is valid UTF-8 gets into the cache.
    let string = PyString::from_bytes(py, name).map_err(python)?;
    let displaced = NAMES.with(|names| {
        let mut names = names.try_borrow_mut().ok()?;
        names[slot].replace((name.into(), string.clone().unbind()))
    });
    // Dropped once the cache is released: freeing a str runs no Python code, but keeping
    // the borrow short is the rule that makes the cache safe.
    drop(displaced);
    Ok(string)
}
