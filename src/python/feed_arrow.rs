//! `ChangeStream`: the change feed as Arrow record batches behind the Arrow `PyCapsule`
//! interface, one row per op.

use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use pyo3_arrow::ffi::to_schema_pycapsule;

use super::arrow::{c_stream, packed};
use crate::arrow::FeedPlan;

/// The ops of a change feed as Arrow record batches (the Arrow PyCapsule interface).
///
/// Batches hold at most 65,536 rows, so a huge entry spans several. Each
/// ``__arrow_c_stream__`` call streams the same rows again.
#[pyclass(frozen, module = "replikv._core", name = "ChangeStream")]
pub(crate) struct PyChangeStream {
    plan: FeedPlan,
    batch_rows: usize,
}

impl PyChangeStream {
    pub(crate) fn new(plan: FeedPlan, batch_rows: usize) -> Self {
        Self { plan, batch_rows }
    }
}

#[pymethods]
impl PyChangeStream {
    /// A new Arrow C stream of the rows (a `PyCapsule` named `arrow_array_stream`).
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyCapsule>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        c_stream(
            py,
            Box::new(self.plan.stream(self.batch_rows)),
            requested_schema,
        )
    }

    /// The schema of the rows (a `PyCapsule` named `arrow_schema`).
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        Ok(to_schema_pycapsule(py, self.plan.schema().as_ref())?)
    }

    /// How many rows (ops) a stream gives.
    #[getter]
    fn num_rows(&self) -> u64 {
        self.plan.rows()
    }

    /// Names of the columns that hold `MessagePack` bytes (`value`, and `key` when keys of
    /// several types are mixed).
    #[getter]
    fn packed_columns(&self) -> Vec<String> {
        packed(&self.plan.schema())
    }

    fn __repr__(&self) -> String {
        let (since, last) = self.plan.range();
        let key = self.plan.schema().field(4).data_type().clone();
        format!(
            "<ChangeStream: {} ops after LSN {since} up to LSN {last}; key: {key}>",
            self.plan.rows()
        )
    }
}
