//! What the typed reports share for display: `to_dict()` values made JSON-able and
//! `_repr_html_()` tables, both by the pure-Python helpers (`replikv._plain` and
//! `replikv._html`), so every class follows one rule for each.

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// `fields` with every value as JSON holds it (datetimes as ISO 8601, bytes as
/// `{"$base64": ...}`, NaN as `None`, tuples as lists).
pub(crate) fn plain<'py>(fields: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
    let py = fields.py();
    py.import("replikv._plain")?
        .getattr("jsonable")?
        .call1((fields,))?
        .cast_into::<PyDict>()
        .map_err(PyErr::from)
}

/// The HTML table of `object` for Jupyter.
pub(crate) fn html(object: &Bound<'_, PyAny>) -> PyResult<String> {
    object
        .py()
        .import("replikv._html")?
        .getattr("render")?
        .call1((object,))?
        .extract()
}

/// `text` as Python's `repr()` shows a str: in single quotes (in double quotes when it
/// holds a single quote and no double one), with backslashes, that quote and control
/// characters escaped. Reprs and messages use it so that they read as Python, not Rust.
pub(crate) fn quoted(text: &str) -> String {
    use std::fmt::Write as _;
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// A list of strs as Python's `repr()` shows it: `['a', 'b']`.
pub(crate) fn quoted_list<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let items: Vec<String> = items.into_iter().map(|s| quoted(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}
