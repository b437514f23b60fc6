//! Arrow in and out: `ArrowStream` (a table's rows behind the Arrow `PyCapsule` interface)
//! and the column-wise import behind `put_arrow` / `put_dataframe`.

use crate::python::display::quoted;
use arrow_array::{Array, ArrayRef, RecordBatchIterator, RecordBatchReader};
use arrow_schema::SchemaRef;
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyList};
use pyo3_arrow::ffi::to_schema_pycapsule;
use pyo3_arrow::{PyArray, PyRecordBatchReader};

use super::args::size;
use super::put_many::{OpSink, RowBuffers};
use super::store::{Progress, PROGRESS_EVERY};
use super::types::PyReceipt;
use super::value::{decode_py_value, encode_py_value_with, EncodeOptions, Location};
use crate::arrow::{
    field_part, unpack, CellWriter, Collected, ExportRequest, KeyColumn, Naive, Plan, Refusal,
    RefusalKind,
};
use crate::codec::OpRef;
use crate::store::{describe_key, Durability, Store};

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

/// Prepares an export (one pass over a snapshot, with the GIL released): planned, its
/// batches are built as they are read; `build`, all are built now (see `Plan::collect`).
pub(crate) fn stream(
    py: Python<'_>,
    store: &Store,
    request: ExportRequest,
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
    let rows = py
        .detach(|| {
            if build {
                Ok(Rows::Built {
                    table: table.clone(),
                    built: Plan::collect(store, request)?,
                })
            } else {
                Plan::new(store, request).map(|plan| Rows::Planned(Box::new(plan)))
            }
        })
        .map_err(|e| super::errors::to_py(py, e))?;
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

/// A column of values being stored: Arrow cells, or Python objects (a `DataFrame`'s object
/// columns, encoded by the value encoder).
enum Source<'a, 'py> {
    Arrow(CellWriter<'a>),
    Objects(&'a Bound<'py, PyList>),
}

/// What a write of Arrow data needs besides the data.
pub(crate) struct Load<'py> {
    table: String,
    key: String,
    naive: Naive,
    batch_rows: Option<usize>,
    durability: Option<Durability>,
    progress: Option<Bound<'py, PyAny>>,
    /// Value columns held as Python objects, by name, in row order across all batches.
    pub objects: Vec<(String, Bound<'py, PyList>)>,
    /// The order of the value fields (`None`: the Arrow columns' order, then `objects`).
    pub order: Option<Vec<String>>,
}

impl<'py> Load<'py> {
    /// The call that loads, for a refusal: a DataFrame's load orders its fields.
    fn what(&self) -> &'static str {
        if self.order.is_some() {
            "put_dataframe"
        } else {
            "put_arrow"
        }
    }

    /// The arguments of `put_arrow`, checked.
    pub(crate) fn new(
        table: &str,
        key: &str,
        naive: &str,
        batch_rows: Option<i128>,
        progress: Option<Bound<'py, PyAny>>,
        durability: Option<&str>,
    ) -> PyResult<Self> {
        let naive = match naive {
            "refuse" => Naive::Refuse,
            "utc" => Naive::Utc,
            other => {
                return Err(PyValueError::new_err(format!(
                    "naive must be 'refuse' or 'utc', not {}",
                    quoted(other)
                )))
            }
        };
        let batch_rows = batch_rows.map(|b| size("batch_rows", b)).transpose()?;
        if batch_rows == Some(0) {
            return Err(PyValueError::new_err("batch_rows must be positive"));
        }
        Ok(Self {
            table: table.to_owned(),
            key: key.to_owned(),
            naive,
            batch_rows,
            durability: super::args::durability(durability)?,
            progress,
            objects: Vec::new(),
            order: None,
        })
    }
}

/// The first name that `names` gives more than once.
fn repeated<'n>(names: impl Iterator<Item = &'n String>) -> Option<&'n str> {
    let mut seen = std::collections::HashSet::new();
    names.map(String::as_str).find(|name| !seen.insert(*name))
}

/// The exception for a refused cell of row `key`, in the field `field` (`['at']`).
fn refused(table: &str, key: &str, field: &str, refusal: Refusal) -> PyErr {
    let refusal = refusal.within(field);
    let message = format!("{table}[{key}]{}: {}", refusal.path(), refusal.reason);
    match refusal.kind {
        RefusalKind::Type => PyTypeError::new_err(message),
        RefusalKind::Overflow => PyOverflowError::new_err(message),
        RefusalKind::Value => PyValueError::new_err(message),
    }
}

/// The value columns of one Arrow batch, in the order the fields are stored.
struct Batch<'a, 'py> {
    load: &'a Load<'py>,
    names: &'a [String],
    sources: Vec<(String, Source<'a, 'py>)>,
    keys: KeyColumn<'a>,
    /// Rows before this batch (where its rows start in the object columns).
    offset: usize,
    /// How object cells are encoded: missing values as None, naive datetimes as asked.
    options: EncodeOptions,
}

impl<'a, 'py> Batch<'a, 'py> {
    fn new(
        load: &'a Load<'py>,
        names: &'a [String],
        schema: &'a SchemaRef,
        columns: &'a [ArrayRef],
        keys: KeyColumn<'a>,
        offset: usize,
    ) -> PyResult<Self> {
        let mut sources = Vec::with_capacity(names.len());
        for name in names {
            let source = if let Ok(i) = schema.index_of(name) {
                let field = Some(schema.field(i));
                Source::Arrow(CellWriter::new(columns[i].as_ref(), field, load.naive))
            } else if let Some((_, list)) = load.objects.iter().find(|(n, _)| n == name) {
                Source::Objects(list)
            } else {
                return Err(PyValueError::new_err(format!(
                    "no column '{}'",
                    name.escape_debug()
                )));
            };
            sources.push((field_part(name), source));
        }
        let options = EncodeOptions {
            missing_as_none: true,
            naive_utc: load.naive == Naive::Utc,
        };
        Ok(Self {
            load,
            names,
            sources,
            keys,
            offset,
            options,
        })
    }

    /// The write of row `row`, encoded in `buffers`.
    fn op<'b>(&'b self, row: usize, buffers: &'b mut RowBuffers) -> PyResult<OpRef<'b>> {
        let table = &self.load.table;
        let RowBuffers { key, value } = buffers;
        self.keys.encode_into(row, key).map_err(|r| {
            let at = format!("<row {}>", self.offset + row);
            refused(table, &at, &field_part(&self.load.key), r)
        })?;
        value.clear();
        rmp::encode::write_map_len(value, self.names.len() as u32)
            .expect("writing to a Vec cannot fail");
        for ((part, source), name) in self.sources.iter().zip(self.names) {
            rmp::encode::write_str(value, name).expect("writing to a Vec cannot fail");
            match source {
                Source::Arrow(writer) => writer
                    .write(row, value)
                    .map_err(|r| refused(table, &describe_key(key), part, r))?,
                Source::Objects(list) => {
                    let item = list.get_item(self.offset + row)?;
                    let at = Location::Cell {
                        table,
                        key,
                        field: name,
                    };
                    encode_py_value_with(&item, self.options, value, &at)?;
                }
            }
        }
        Ok(OpRef {
            table,
            key,
            value: Some(value),
        })
    }
}

/// The value fields in the order they are stored.
fn field_order(load: &Load<'_>, schema: &SchemaRef) -> Vec<String> {
    match &load.order {
        Some(order) => order.clone(),
        None => schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| *n != load.key)
            .chain(load.objects.iter().map(|(n, _)| n.clone()))
            .collect(),
    }
}

/// The rows of Arrow data, when it says (a pyarrow `Table` or `RecordBatch`, a polars
/// `DataFrame`): the total of its progress bar. A stream of unknown length gives `None`.
fn row_count(data: &Bound<'_, PyAny>) -> Option<usize> {
    match data.getattr("num_rows") {
        Ok(rows) => rows.extract().ok(),
        Err(_) => data.len().ok(),
    }
}

/// Writes every row of an Arrow stream (anything with `__arrow_c_stream__`) into `table`:
/// one transaction, or one per `batch_rows` rows. Returns the last transaction's receipt.
pub(crate) fn put(
    py: Python<'_>,
    store: &Store,
    data: &Bound<'_, PyAny>,
    load: &Load<'_>,
) -> PyResult<PyReceipt> {
    crate::store::validate_table_name(&load.table).map_err(|e| super::errors::to_py(py, e))?;
    let reader = data.extract::<PyRecordBatchReader>()?.into_reader()?;
    let schema = reader.schema();
    let key_index = schema.index_of(&load.key).map_err(|_| {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        PyValueError::new_err(format!(
            "no key column '{}' (the columns are: {})",
            load.key.escape_debug(),
            names.join(", ")
        ))
    })?;
    // A name given twice would be one dict key holding one of the columns: the others'
    // data would be lost without a word.
    if let Some(name) = repeated(schema.fields().iter().map(|f| f.name())) {
        return Err(PyValueError::new_err(format!(
            "column names must be unique to be stored as dict keys: {} is the name of more \
             than one column",
            quoted(name)
        )));
    }
    let names = field_order(load, &schema);
    let progress = Progress::new(
        py,
        load.progress.as_ref(),
        &format!("put {}", load.table),
        || row_count(data),
    )?;
    // Data with a row count is in memory, quick to convert: it streams. A reader of
    // unknown length may wait on its source, which must not hold other writers meanwhile.
    let streams = row_count(data).is_some();
    let mut sink = OpSink::new(store, load.durability, streams, load.what());
    let mut receipt = None;
    let mut buffers = RowBuffers::default();
    let mut written = 0usize;
    let mut offset = 0usize;
    for batch in reader {
        let batch =
            batch.map_err(|e| PyValueError::new_err(format!("cannot read the Arrow data: {e}")))?;
        let columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| unpack(c.clone()))
            .collect::<Result<_, _>>()
            .map_err(|r| PyTypeError::new_err(r.reason))?;
        let rows = Batch::new(
            load,
            &names,
            &schema,
            &columns,
            KeyColumn::new(columns[key_index].as_ref(), Some(schema.field(key_index))),
            offset,
        )?;
        for row in 0..batch.num_rows() {
            sink.push(py, rows.op(row, &mut buffers)?)?;
            if sink.len().is_multiple_of(PROGRESS_EVERY) {
                if let Some(callback) = progress.callback() {
                    callback.call1((written + sink.len(),))?;
                }
            }
            if load.batch_rows.is_some_and(|n| sink.len() >= n) {
                written += sink.len();
                let full = std::mem::replace(
                    &mut sink,
                    OpSink::new(store, load.durability, streams, load.what()),
                );
                receipt = Some(full.commit(py)?);
                if let Some(callback) = progress.callback() {
                    callback.call1((written,))?;
                }
            }
        }
        offset += batch.num_rows();
        py.check_signals()?;
    }
    if sink.len() > 0 || receipt.is_none() {
        written += sink.len();
        receipt = Some(sink.commit(py)?);
        if let Some(callback) = progress.callback() {
            callback.call1((written,))?;
        }
    }
    progress.finish()?;
    Ok(receipt.expect("a transaction was committed"))
}
