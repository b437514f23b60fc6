//! Arrow out: `ArrowStream` (a table's rows behind the Arrow `PyCapsule` interface), and
//! the columns that hold packed MessagePack decoded back (see `arrow_in` for Arrow in).

use crate::python::display::quoted;
use arrow_array::{Array, RecordBatchIterator, RecordBatchReader};
use arrow_schema::SchemaRef;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyList};
use pyo3_arrow::ffi::to_schema_pycapsule;
use pyo3_arrow::{PyArray, PyRecordBatchReader};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::errors::{run_detached, run_stoppable};
use super::value::decode_py_value;
use crate::arrow::{Collected, ExportRequest, Plan, Stop};
use crate::store::Store;

/// A table's rows at one LSN as Arrow record batches, behind the Arrow `PyCapsule` interface:
/// `pyarrow.table(s)`, `polars.from_arrow(s)` and `DuckDB` read it without copies, batch by
/// batch. Each `__arrow_c_stream__` call streams the same rows again.
#[pyclass(frozen, module = "replikv._core", name = "ArrowStream")]
pub(crate) struct PyArrowStream {
    rows: Rows,
}

/// Where a stream's batches come from.
enum Rows {
    /// Built batch by batch as they are read (`to_arrow_batches`).
    Planned(Box<Plan>),
    /// Built already (`to_arrow`, `to_pandas`).
    Built { table: String, built: Collected },
}

impl Rows {
    fn schema(&self) -> SchemaRef {
        match self {
            Rows::Planned(plan) => plan.schema(),
            Rows::Built { built, .. } => built.schema.clone(),
        }
    }

    fn table(&self) -> &str {
        match self {
            Rows::Planned(plan) => plan.table(),
            Rows::Built { table, .. } => table,
        }
    }

    fn lsn(&self) -> u64 {
        match self {
            Rows::Planned(plan) => plan.lsn(),
            Rows::Built { built, .. } => built.lsn,
        }
    }

    fn count(&self) -> u64 {
        match self {
            Rows::Planned(plan) => plan.rows(),
            Rows::Built { built, .. } => built.batches.iter().map(|b| b.num_rows() as u64).sum(),
        }
    }

    fn reader(&self) -> Box<dyn RecordBatchReader + Send> {
        match self {
            Rows::Planned(plan) => Box::new(plan.stream()),
            Rows::Built { built, .. } => Box::new(RecordBatchIterator::new(
                built.batches.clone().into_iter().map(Ok),
                built.schema.clone(),
            )),
        }
    }
}

#[pymethods]
impl PyArrowStream {
    /// A new Arrow C stream of the rows (a `PyCapsule` named `arrow_array_stream`).
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyCapsule>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        c_stream(py, self.rows.reader(), requested_schema)
    }

    /// The schema of the rows (a `PyCapsule` named `arrow_schema`).
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        Ok(to_schema_pycapsule(py, self.rows.schema().as_ref())?)
    }

    /// The table the rows come from.
    #[getter]
    fn table(&self) -> &str {
        self.rows.table()
    }

    /// The LSN the rows were read at.
    #[getter]
    fn lsn(&self) -> u64 {
        self.rows.lsn()
    }

    /// How many rows a stream gives.
    #[getter]
    fn num_rows(&self) -> u64 {
        self.rows.count()
    }

    /// The column names, key first.
    #[getter]
    fn column_names(&self) -> Vec<String> {
        self.rows
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// Names of the columns that hold each value's `MessagePack` bytes (lists, dicts and
    /// columns of mixed types).
    #[getter]
    fn packed_columns(&self) -> Vec<String> {
        packed(&self.rows.schema())
    }

    fn __repr__(&self) -> String {
        let schema = self.rows.schema();
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect();
        format!(
            "<ArrowStream {}: {} rows at LSN {}; {}>",
            self.rows.table(),
            self.rows.count(),
            self.rows.lsn(),
            columns.join(", ")
        )
    }
}

/// An Arrow C stream (a `PyCapsule` named `arrow_array_stream`) of `reader`'s batches.
pub(crate) fn c_stream<'py>(
    py: Python<'py>,
    reader: Box<dyn RecordBatchReader + Send>,
    requested_schema: Option<Bound<'py, PyCapsule>>,
) -> PyResult<Bound<'py, PyAny>> {
    let reader = Bound::new(py, PyRecordBatchReader::new(reader))?;
    reader.call_method1("__arrow_c_stream__", (requested_schema,))
}

/// Names of the columns of `schema` that hold `MessagePack` bytes.
pub(crate) fn packed(schema: &SchemaRef) -> Vec<String> {
    schema
        .fields()
        .iter()
        .filter(|f| {
            f.metadata()
                .get(crate::arrow::ENCODING_KEY)
                .map(String::as_str)
                == Some(crate::arrow::PACKED)
        })
        .map(|f| f.name().clone())
        .collect()
}

/// Tables of more rows than this are exported on a thread of their own, so that Ctrl-C
/// stops them (a pass over 65,536 rows takes tens of milliseconds).
const INTERRUPTIBLE_FROM_ROWS: u64 = 65_536;

/// Prepares an export (one pass over a snapshot, with the GIL released): planned, its
/// batches are built as they are read; `build`, all are built now (see `Plan::collect`).
pub(crate) fn stream(
    py: Python<'_>,
    store: &Store,
    mut request: ExportRequest,
    build: bool,
) -> PyResult<PyArrowStream> {
    let table = request.table.clone();
    let key_name = request.key_name.clone();
    crate::store::validate_table_name(&table).map_err(|e| super::errors::to_py(py, e))?;
    if request.batch_rows == 0 {
        return Err(PyValueError::new_err("batch_rows must be positive"));
    }
    if let Some(repeated) = request.columns.as_deref().and_then(|c| repeated(c.iter())) {
        return Err(PyValueError::new_err(format!(
            "columns lists {} more than once: each column can be asked for once",
            quoted(repeated)
        )));
    }
    if request
        .columns
        .as_ref()
        .is_some_and(|c| c.contains(&key_name))
    {
        return Err(PyValueError::new_err(format!(
            "a value column is named {} like the key column: pass another key_name=",
            quoted(&key_name)
        )));
    }
    // Ctrl-C ends the pass over the rows (a schema's, or every batch's) at its next chunk,
    // on a table large enough to make the wait felt; a small one's pass ends sooner than
    // a thread to run it on would start.
    let stop = Arc::new(AtomicBool::new(false));
    request.stop = Stop::when(Arc::clone(&stop));
    let small = store
        .table_sum(&table)
        .is_ok_and(|sum| sum.rows <= INTERRUPTIBLE_FROM_ROWS);
    let pass = || {
        if build {
            Ok(Rows::Built {
                table: table.clone(),
                built: Plan::collect(store, request)?,
            })
        } else {
            Plan::new(store, request).map(|plan| Rows::Planned(Box::new(plan)))
        }
    };
    let rows = if small {
        run_detached(py, pass)?
    } else {
        run_stoppable(py, &stop, pass)?
    };
    if rows
        .schema()
        .fields()
        .iter()
        .skip(1)
        .any(|f| *f.name() == key_name)
    {
        return Err(PyValueError::new_err(format!(
            "table {table} has a field named {}, like the key column: pass another \
             key_name=",
            quoted(&key_name)
        )));
    }
    Ok(PyArrowStream { rows })
}

/// `replikv._core.decode_packed`: the values in a packed (`MessagePack`) Arrow column as a
/// list of Python objects (`None` for nulls).
#[pyfunction]
pub(crate) fn decode_packed(py: Python<'_>, array: PyArray) -> PyResult<Bound<'_, PyList>> {
    let array = array.into_inner().0;
    let Some(binary) = arrow_array::cast::AsArray::as_binary_opt::<i32>(array.as_ref()) else {
        return Err(PyTypeError::new_err(format!(
            "a packed column is binary, not {}",
            array.data_type()
        )));
    };
    let list = PyList::empty(py);
    for row in 0..binary.len() {
        if binary.is_null(row) {
            list.append(py.None())?;
        } else {
            list.append(decode_py_value(py, binary.value(row))?)?;
        }
    }
    Ok(list)
}

/// The first name that `names` gives more than once.
pub(crate) fn repeated<'n>(names: impl Iterator<Item = &'n String>) -> Option<&'n str> {
    let mut seen = std::collections::HashSet::new();
    names.map(String::as_str).find(|name| !seen.insert(*name))
}
