//! Types of numpy, pandas and `decimal` that the encoder recognizes, without importing any
//! of them: a library is looked at only once the program has imported it (it is in
//! `sys.modules`), and its types are kept from then on. Only values of no built-in type
//! get here, so a store that never sees one never pays for the look-up.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

/// What a value of a foreign type stands for.
pub(crate) enum Foreign {
    /// `numpy.bool_`.
    Bool,
    /// A numpy integer (`int8` ... `uint64`).
    Int,
    /// `numpy.float16` or `numpy.float32` (`float64` is a `float` already).
    Float,
    /// `pandas.NA`.
    Na,
    /// `pandas.NaT` (a `datetime` subclass: ask before treating a datetime as one).
    NaT,
    /// `decimal.Decimal`.
    Decimal,
}

struct Numpy {
    bool_: Py<PyType>,
    integer: Py<PyType>,
    /// A numpy integer subclass that is a duration, refused as `timedelta` is.
    timedelta64: Py<PyType>,
    float16: Py<PyType>,
    float32: Py<PyType>,
}

struct Pandas {
    na: Py<PyType>,
    nat: Py<PyType>,
}

/// The module `name` if the program has imported it.
fn imported<'py>(py: Python<'py>, name: &str) -> Option<Bound<'py, PyAny>> {
    static MODULES: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
    let modules = MODULES
        .get_or_try_init(py, || -> PyResult<Py<PyDict>> {
            Ok(py.import("sys")?.getattr("modules")?.cast_into()?.unbind())
        })
        .ok()?;
    modules.bind(py).get_item(name).ok().flatten()
}

fn type_of(module: &Bound<'_, PyAny>, name: &str) -> PyResult<Py<PyType>> {
    Ok(module.getattr(name)?.cast_into::<PyType>()?.unbind())
}

fn numpy(py: Python<'_>) -> Option<&Numpy> {
    static NUMPY: PyOnceLock<Numpy> = PyOnceLock::new();
    NUMPY
        .get_or_try_init(py, || -> PyResult<Numpy> {
            let np = imported(py, "numpy").ok_or_else(not_imported)?;
            Ok(Numpy {
                bool_: type_of(&np, "bool_")?,
                integer: type_of(&np, "integer")?,
                timedelta64: type_of(&np, "timedelta64")?,
                float16: type_of(&np, "float16")?,
                float32: type_of(&np, "float32")?,
            })
        })
        .ok()
}

fn pandas(py: Python<'_>) -> Option<&Pandas> {
    static PANDAS: PyOnceLock<Pandas> = PyOnceLock::new();
    PANDAS
        .get_or_try_init(py, || -> PyResult<Pandas> {
            let pd = imported(py, "pandas").ok_or_else(not_imported)?;
            Ok(Pandas {
                na: pd.getattr("NA")?.get_type().unbind(),
                nat: pd.getattr("NaT")?.get_type().unbind(),
            })
        })
        .ok()
}

fn decimal(py: Python<'_>) -> Option<&Py<PyType>> {
    static DECIMAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    DECIMAL
        .get_or_try_init(py, || {
            type_of(
                &imported(py, "decimal").ok_or_else(not_imported)?,
                "Decimal",
            )
        })
        .ok()
}

/// Never raised: it only tells `get_or_try_init` to try again next time.
fn not_imported() -> PyErr {
    pyo3::exceptions::PyImportError::new_err("not imported yet")
}

/// Whether `obj` is `pandas.NaT` (cheap to ask of every `datetime` that is not exactly one).
pub(crate) fn is_nat(obj: &Bound<'_, PyAny>) -> bool {
    pandas(obj.py()).is_some_and(|pd| obj.get_type().is(pd.nat.bind(obj.py())))
}

/// What `obj` stands for, if it is of a foreign type the encoder knows.
pub(crate) fn classify(obj: &Bound<'_, PyAny>) -> Option<Foreign> {
    let py = obj.py();
    let kind = obj.get_type();
    if let Some(np) = numpy(py) {
        if kind.is(np.bool_.bind(py)) {
            return Some(Foreign::Bool);
        }
        if kind.is(np.float16.bind(py)) || kind.is(np.float32.bind(py)) {
            return Some(Foreign::Float);
        }
        if obj.is_instance(np.integer.bind(py)).unwrap_or(false) {
            // `numpy.timedelta64` is an integer subclass: no int, a duration.
            return (!kind.is(np.timedelta64.bind(py))).then_some(Foreign::Int);
        }
    }
    if let Some(pd) = pandas(py) {
        if kind.is(pd.na.bind(py)) {
            return Some(Foreign::Na);
        }
        if kind.is(pd.nat.bind(py)) {
            return Some(Foreign::NaT);
        }
    }
    if decimal(py).is_some_and(|d| obj.is_instance(d.bind(py)).unwrap_or(false)) {
        return Some(Foreign::Decimal);
    }
    None
}
