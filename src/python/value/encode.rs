//! Python value -> `MessagePack`, written with `rmp::encode` as the object is walked (the
//! same functions rmp-serde writes with, so stored bytes are what they always were).

use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyBytes, PyDate, PyDateTime, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use rmp::encode::ByteBuf;

use super::datetime::{date_to_days, datetime_to_unix};
use super::foreign::{classify, is_nat, Foreign};
use super::path::{Location, Refusal};
use crate::codec::{encode_date, encode_timestamp, DATE_EXT, MAX_DEPTH, TIMESTAMP_EXT};

/// How the `DataFrame` paths take missing values and naive datetimes; the default (both
/// false) is what `put` does.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EncodeOptions {
    /// A value that is float NaN (numpy floats too), `pandas.NA` or `pandas.NaT` is stored
    /// as `None`, as is an `NA` or `NaT` nested in it (by default NaN is stored as NaN, and
    /// `NA`/`NaT` are refused). A NaN inside a list or dict is data, not a missing value:
    /// it stays NaN, as `put` stores it.
    pub missing_as_none: bool,
    /// A naive `datetime` or `pandas.Timestamp` is taken as UTC (by default it is refused).
    pub naive_utc: bool,
}

/// Encodes `obj` onto the end of `out`. A refused value leaves `out` as it was, and its
/// exception names `at` and the path to the refused part.
pub(crate) fn encode_py_value_with(
    obj: &Bound<'_, PyAny>,
    options: EncodeOptions,
    out: &mut Vec<u8>,
    at: &Location<'_, '_>,
) -> PyResult<()> {
    let start = out.len();
    let mut encoder = Encoder {
        options,
        top: at.depth(),
        out: ByteBuf::from_vec(std::mem::take(out)),
    };
    let result = encoder.value(obj, at.depth());
    *out = encoder.out.into_vec();
    result.map_err(|refusal| {
        out.truncate(start);
        refusal.into_err(obj.py(), at)
    })
}

/// The `MessagePack` bytes of a value given on its own (default options).
pub(crate) fn encode_py_value(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let mut out = Vec::new();
    encode_py_value_with(obj, EncodeOptions::default(), &mut out, &Location::Value)?;
    Ok(out)
}

/// The `MessagePack` bytes of the value of row `key` of `table`, as `put` stores it.
pub(crate) fn encode_row_value(
    table: &str,
    key: &Bound<'_, PyAny>,
    obj: &Bound<'_, PyAny>,
) -> PyResult<Vec<u8>> {
    let mut out = Vec::new();
    let at = Location::Row { table, key };
    encode_py_value_with(obj, EncodeOptions::default(), &mut out, &at)?;
    Ok(out)
}

/// Encoding a datetime runs Python code (a pure-Python `utcoffset`, a finalizer, a switch
/// to another thread), so a dict or list may change while it is encoded. Each step checks
/// the size first (what pyo3's dict iterator would otherwise panic on), and a container is
/// never given fewer or more entries than its header promised: a change is a
/// `RuntimeError`, as Python raises for a dict changed during iteration.
fn changed(what: &str) -> Refusal {
    Refusal::runtime(format!("{what} changed size while it was being stored"))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// `MessagePack` lengths are 32-bit.
fn length(len: usize) -> Result<u32, Refusal> {
    u32::try_from(len).map_err(|_| Refusal::value_error(format!("{len} items are too many")))
}

struct Encoder {
    options: EncodeOptions,
    /// The depth of the value given (a NaN there is a missing value).
    top: u32,
    out: ByteBuf,
}

// Writing to a `ByteBuf` cannot fail: its error type is `Infallible`, so each `let Ok`
// below is irrefutable.
impl Encoder {
    fn value(&mut self, obj: &Bound<'_, PyAny>, depth: u32) -> Result<(), Refusal> {
        if depth > MAX_DEPTH {
            return Err(Refusal::value_error(format!(
                "values nested deeper than {MAX_DEPTH} levels are refused"
            )));
        }
        // The common types first, each by a comparison of the type pointer.
        if let Ok(text) = obj.cast_exact::<PyString>() {
            return self.str(text);
        }
        if let Ok(int) = obj.cast_exact::<PyInt>() {
            return self.int(int);
        }
        if let Ok(dict) = obj.cast_exact::<PyDict>() {
            return self.dict(dict, depth);
        }
        if let Ok(flag) = obj.cast_exact::<PyBool>() {
            let Ok(()) = rmp::encode::write_bool(&mut self.out, flag.is_true());
            return Ok(());
        }
        if let Ok(float) = obj.cast_exact::<PyFloat>() {
            self.float(float.value(), depth);
            return Ok(());
        }
        if obj.is_none() {
            let Ok(()) = rmp::encode::write_nil(&mut self.out);
            return Ok(());
        }
        if let Ok(list) = obj.cast_exact::<PyList>() {
            return self.list(list, depth);
        }
        self.other(obj, depth)
    }

    /// Subclasses of the common types (`numpy.float64`, `numpy.str_`, `IntEnum`,
    /// `OrderedDict`), then the other types accepted.
    fn other(&mut self, obj: &Bound<'_, PyAny>, depth: u32) -> Result<(), Refusal> {
        if let Ok(text) = obj.cast::<PyString>() {
            return self.str(text);
        }
        if let Ok(int) = obj.cast::<PyInt>() {
            return self.int(int);
        }
        if let Ok(float) = obj.cast::<PyFloat>() {
            self.float(float.value(), depth);
            return Ok(());
        }
        if let Ok(bytes) = obj.cast::<PyBytes>() {
            let Ok(()) = rmp::encode::write_bin(&mut self.out, bytes.as_bytes());
            return Ok(());
        }
        if let Ok(dict) = obj.cast::<PyDict>() {
            return self.dict(dict, depth);
        }
        if let Ok(list) = obj.cast::<PyList>() {
            return self.list(list, depth);
        }
        if let Ok(tuple) = obj.cast::<PyTuple>() {
            let Ok(_) = rmp::encode::write_array_len(&mut self.out, length(tuple.len())?);
            for (index, item) in tuple.iter().enumerate() {
                self.value(&item, depth + 1)
                    .map_err(|r| r.at_index(index))?;
            }
            return Ok(());
        }
        if obj.is_instance_of::<PyDateTime>() && !is_nat(obj) {
            let (secs, nanos) =
                datetime_to_unix(obj, self.options.naive_utc, self.options.missing_as_none)?;
            self.ext(TIMESTAMP_EXT, &encode_timestamp(secs, nanos));
            return Ok(());
        }
        if obj.is_instance_of::<PyDate>() && !is_nat(obj) {
            let days = date_to_days(obj)?;
            self.ext(DATE_EXT, &encode_date(days));
            return Ok(());
        }
        match classify(obj) {
            Some(Foreign::Bool) => {
                let flag = obj.is_truthy().map_err(Refusal::raised)?;
                let Ok(()) = rmp::encode::write_bool(&mut self.out, flag);
                Ok(())
            }
            Some(Foreign::Int) => match obj.extract::<i64>() {
                Ok(value) => {
                    let Ok(_) = rmp::encode::write_sint(&mut self.out, value);
                    Ok(())
                }
                Err(_) => Err(Refusal::overflow(format!(
                    "{} {} does not fit in 64 bits (signed)",
                    type_name(obj),
                    obj.str().map(|s| s.to_string()).unwrap_or_default()
                ))),
            },
            Some(Foreign::Float) => {
                self.float(obj.extract::<f64>().map_err(Refusal::raised)?, depth);
                Ok(())
            }
            Some(missing @ (Foreign::Na | Foreign::NaT)) => {
                if self.options.missing_as_none {
                    let Ok(()) = rmp::encode::write_nil(&mut self.out);
                    return Ok(());
                }
                let name = if matches!(missing, Foreign::Na) {
                    "NA"
                } else {
                    "NaT"
                };
                Err(Refusal::type_error(format!(
                    "pandas.{name} (a missing value) is refused: store None instead, or pass \
                     missing_as_none=True where the call offers it"
                )))
            }
            Some(Foreign::Decimal) => Err(Refusal::type_error(
                "Decimal is refused: replikv has no decimal type, and reading back a float or \
                 a str where a Decimal went in would change its type silently; store \
                 str(value) to keep every digit, or float(value) to compute with it",
            )),
            None => Err(Refusal::type_error(format!(
                "cannot store a value of type {}: values are None, bool, int, float, str, \
                 bytes, list, tuple, dict with str keys, aware datetime, date, numpy scalars, \
                 or nestings of these",
                type_name(obj)
            ))),
        }
    }

    fn str(&mut self, text: &Bound<'_, PyString>) -> Result<(), Refusal> {
        let text = text
            .to_str()
            .map_err(|err| Refusal::value_error(format!("cannot store this str: {err}")))?;
        let Ok(()) = rmp::encode::write_str(&mut self.out, text);
        Ok(())
    }

    fn int(&mut self, int: &Bound<'_, PyInt>) -> Result<(), Refusal> {
        let value = int
            .extract::<i64>()
            .map_err(|_| Refusal::overflow("int values must fit in 64 bits (signed)"))?;
        let Ok(_) = rmp::encode::write_sint(&mut self.out, value);
        Ok(())
    }

    fn float(&mut self, value: f64, depth: u32) {
        if value.is_nan() && self.options.missing_as_none && depth == self.top {
            let Ok(()) = rmp::encode::write_nil(&mut self.out);
        } else {
            let Ok(()) = rmp::encode::write_f64(&mut self.out, value);
        }
    }

    fn ext(&mut self, tag: i8, payload: &[u8]) {
        let Ok(_) = rmp::encode::write_ext_meta(&mut self.out, payload.len() as u32, tag);
        self.out.as_mut_vec().extend_from_slice(payload);
    }

    fn dict(&mut self, dict: &Bound<'_, PyDict>, depth: u32) -> Result<(), Refusal> {
        let len = dict.len();
        let Ok(_) = rmp::encode::write_map_len(&mut self.out, length(len)?);
        let mut entries = dict.iter();
        for _ in 0..len {
            if dict.len() != len {
                return Err(changed("dictionary"));
            }
            let Some((field, item)) = entries.next() else {
                return Err(changed("dictionary"));
            };
            let Ok(field) = field.cast::<PyString>() else {
                return Err(Refusal::type_error(format!(
                    "dict keys in values must be str, not {} ({})",
                    type_name(&field),
                    field.repr().map(|r| r.to_string()).unwrap_or_default()
                )));
            };
            self.str(field)
                .and_then(|()| self.value(&item, depth + 1))
                .map_err(|r| r.at_field(field))?;
        }
        // Same size but other keys: the iterator still has some to give.
        if dict.len() != len || entries.next().is_some() {
            return Err(changed("dictionary"));
        }
        Ok(())
    }

    fn list(&mut self, list: &Bound<'_, PyList>, depth: u32) -> Result<(), Refusal> {
        let len = list.len();
        let Ok(_) = rmp::encode::write_array_len(&mut self.out, length(len)?);
        for index in 0..len {
            let item = match list.get_item(index) {
                Ok(item) if list.len() == len => item,
                _ => return Err(changed("list")),
            };
            self.value(&item, depth + 1)
                .map_err(|r| r.at_index(index))?;
        }
        if list.len() != len {
            return Err(changed("list"));
        }
        Ok(())
    }
}
