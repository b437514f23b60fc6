//! A refused value and where it is: the path of indexes and fields from the top of the
//! value (built on the way out of a refusal, so a value that encodes pays nothing for it),
//! named by where the value was going (`events[165260]['at']: naive datetime ...`).

use std::fmt::Write;

use pyo3::exceptions::{PyOverflowError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

/// Where a value was going, as its refusals name it.
pub(crate) enum Location<'a, 'py> {
    /// A value on its own (`encode_value`): named `value`.
    Value,
    /// The value of a row: named `table[key]`, with the key's `repr`.
    Row {
        /// The table written.
        table: &'a str,
        /// The row's key, as the caller gave it.
        key: &'a Bound<'py, PyAny>,
    },
    /// A cell of a column being stored (`put_dataframe`): named `table[key]['field']`.
    Cell {
        /// The table written.
        table: &'a str,
        /// The row's key, encoded.
        key: &'a [u8],
        /// The column.
        field: &'a str,
    },
}

impl Location<'_, '_> {
    /// How deep the value sits in what is stored: a cell is a field of its row's dict, so
    /// its value starts one level down, and is refused at the same depth as `put`'s.
    pub(crate) fn depth(&self) -> u32 {
        match self {
            Location::Value | Location::Row { .. } => 0,
            Location::Cell { .. } => 1,
        }
    }

    fn name(&self) -> String {
        match self {
            Location::Value => "value".to_owned(),
            Location::Row { table, key } => {
                let key = key.repr().map(|r| r.to_string()).unwrap_or_default();
                format!("{table}[{key}]")
            }
            Location::Cell { table, key, field } => {
                let key = crate::store::describe_key(key);
                format!("{table}[{key}]{}", crate::arrow::field_part(field))
            }
        }
    }
}

/// The Python exception a refusal raises (its type is part of the API: tests and users
/// catch `TypeError`, `OverflowError`, `ValueError` and `RuntimeError`).
#[derive(Clone, Copy)]
enum Kind {
    Type,
    Overflow,
    Value,
    Runtime,
}

enum Cause {
    Refused(Kind, String),
    /// An exception raised by Python code the encoder called (a `tzinfo`, a numpy
    /// conversion): not a refusal of ours, so it is raised as it is.
    Raised(PyErr),
}

/// A path longer than this (a value refused for its depth) is cut after these many steps.
const PATH_STEPS_SHOWN: usize = 8;

/// One step down into a value.
enum Step {
    Index(usize),
    Field(Py<PyString>),
}

/// Why a value was refused, and the path to the part refused (innermost step first).
pub(crate) struct Refusal {
    cause: Cause,
    path: Vec<Step>,
}

impl Refusal {
    fn new(cause: Cause) -> Self {
        Self {
            cause,
            path: Vec::new(),
        }
    }

    /// A refusal raised as `TypeError`.
    pub(crate) fn type_error(message: impl Into<String>) -> Self {
        Self::new(Cause::Refused(Kind::Type, message.into()))
    }

    /// A refusal raised as `OverflowError`.
    pub(crate) fn overflow(message: impl Into<String>) -> Self {
        Self::new(Cause::Refused(Kind::Overflow, message.into()))
    }

    /// A refusal raised as `ValueError`.
    pub(crate) fn value_error(message: impl Into<String>) -> Self {
        Self::new(Cause::Refused(Kind::Value, message.into()))
    }

    /// A refusal raised as `RuntimeError`.
    pub(crate) fn runtime(message: impl Into<String>) -> Self {
        Self::new(Cause::Refused(Kind::Runtime, message.into()))
    }

    /// An exception raised by Python code the encoder called, passed on unchanged.
    pub(crate) fn raised(err: PyErr) -> Self {
        Self::new(Cause::Raised(err))
    }

    /// The refusal as seen from the list or tuple holding it at `index`.
    pub(crate) fn at_index(mut self, index: usize) -> Self {
        self.path.push(Step::Index(index));
        self
    }

    /// The refusal as seen from the dict holding it under `field`.
    pub(crate) fn at_field(mut self, field: &Bound<'_, PyString>) -> Self {
        self.path.push(Step::Field(field.clone().unbind()));
        self
    }

    /// The exception to raise, its message prefixed with `at` and the path.
    pub(crate) fn into_err(self, py: Python<'_>, at: &Location<'_, '_>) -> PyErr {
        let (kind, message) = match self.cause {
            Cause::Raised(err) => return err,
            Cause::Refused(kind, message) => (kind, message),
        };
        let mut place = at.name();
        for (shown, step) in self.path.iter().rev().enumerate() {
            if shown == PATH_STEPS_SHOWN {
                // Counted from the top of the stored value, as `put` counts them.
                let levels = self.path.len() + at.depth() as usize;
                let _ = write!(place, "...({levels} levels down)");
                break;
            }
            match step {
                Step::Index(index) => {
                    let _ = write!(place, "[{index}]");
                }
                Step::Field(field) => {
                    let field = field.bind(py).repr().map(|r| r.to_string());
                    let _ = write!(place, "[{}]", field.unwrap_or_default());
                }
            }
        }
        let message = format!("{place}: {message}");
        match kind {
            Kind::Type => PyTypeError::new_err(message),
            Kind::Overflow => PyOverflowError::new_err(message),
            Kind::Value => PyValueError::new_err(message),
            Kind::Runtime => PyRuntimeError::new_err(message),
        }
    }
}
