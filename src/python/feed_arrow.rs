//! `ChangeStream`: the change feed as Arrow record batches behind the Arrow `PyCapsule`
//! interface, one row per op, and the error its reading failed with.

use std::sync::{Arc, Mutex, PoisonError};

use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_schema::{ArrowError, SchemaRef};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use pyo3_arrow::ffi::to_schema_pycapsule;

use super::arrow::{c_stream, packed};
use super::errors::to_py;
use crate::arrow::{FeedBatches, FeedPlan};
use crate::error::Error;

/// The ops of a change feed as Arrow record batches (the Arrow PyCapsule interface).
///
/// Batches hold at most 65,536 rows, so a huge entry spans several. Each
/// ``__arrow_c_stream__`` call streams the same rows again.
#[pyclass(frozen, module = "replikv._core", name = "ChangeStream")]
pub(crate) struct PyChangeStream {
    plan: FeedPlan,
    batch_rows: usize,
    /// The error a stream's reading last failed with (a closed store, a log dropped by
    /// retention): its consumer sees only the message, in an Arrow error of its own.
    failure: Failure,
}

type Failure = Arc<Mutex<Option<Error>>>;

impl PyChangeStream {
    pub(crate) fn new(plan: FeedPlan, batch_rows: usize) -> Self {
        Self {
            plan,
            batch_rows,
            failure: Failure::default(),
        }
    }

    /// What `read` (pyarrow or pandas reading this stream) returns; if it raises because
    /// the stream's reading failed, that failure's own exception (`LogTruncated`,
    /// `StoreClosed`...) instead, with the consumer's error as its cause.
    pub(crate) fn read<'py, R>(
        slf: &Bound<'py, Self>,
        read: impl FnOnce(&Bound<'py, Self>) -> PyResult<R>,
    ) -> PyResult<R> {
        let py = slf.py();
        read(slf).map_err(|consumer| {
            let failed = slf
                .get()
                .failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            match failed {
                Some(failed) => {
                    let raised = to_py(py, failed);
                    raised.set_cause(py, Some(consumer));
                    raised
                }
                None => consumer,
            }
        })
    }
}

/// A stream's batches, keeping the error their reading fails with in `failure` and giving
/// the consumer its message.
struct Keeping {
    batches: FeedBatches,
    failure: Failure,
}

impl Iterator for Keeping {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.batches.next()? {
            Err(ArrowError::ExternalError(source)) => match source.downcast::<Error>() {
                Ok(failed) => {
                    let message = failed.to_string();
                    *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(*failed);
                    Err(ArrowError::ExternalError(message.into()))
                }
                Err(source) => Err(ArrowError::ExternalError(source)),
            },
            read => read,
        })
    }
}

impl RecordBatchReader for Keeping {
    fn schema(&self) -> SchemaRef {
        self.batches.schema()
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
        let batches = Keeping {
            batches: self.plan.stream(self.batch_rows),
            failure: Arc::clone(&self.failure),
        };
        c_stream(py, Box::new(batches), requested_schema)
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
