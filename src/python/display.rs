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
