//! Arrow in: the column-wise import behind `put_arrow` and `put_dataframe`, from anything
//! with `__arrow_c_stream__`, in one transaction or one per `batch_rows` rows.

use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchReader};
use arrow_schema::{DataType, SchemaRef};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3_arrow::PyRecordBatchReader;

use super::args::size;
use super::arrow::repeated;
use super::committing::{committed_anyway, partly_committed, receipt_of};
use super::progress::{Progress, PROGRESS_EVERY};
use super::put_many::{OpSink, RowBuffers};
use super::types::PyReceipt;
use super::value::{encode_py_value_with, EncodeOptions, Location};
use crate::arrow::{field_part, unpack, CellWriter, KeyColumn, Naive, Refusal, RefusalKind};
use crate::codec::OpRef;
use crate::python::display::quoted;
use crate::store::{describe_key, Durability, Store};

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

/// A struct field name given twice inside a value of this type, and the path to that
/// struct (`['address']`, `[]` for a list's items): one dict key would hold one of the
/// fields, and the others' data would be lost.
fn repeated_within(data_type: &DataType, path: String) -> Option<(String, String)> {
    match data_type {
        DataType::Struct(fields) => {
            if let Some(name) = repeated(fields.iter().map(|f| f.name())) {
                return Some((path, name.to_owned()));
            }
            fields.iter().find_map(|f| {
                repeated_within(f.data_type(), format!("{path}{}", field_part(f.name())))
            })
        }
        DataType::List(item)
        | DataType::LargeList(item)
        | DataType::ListView(item)
        | DataType::LargeListView(item)
        | DataType::FixedSizeList(item, _) => {
            repeated_within(item.data_type(), format!("{path}[]"))
        }
        DataType::Dictionary(_, values) => repeated_within(values, path),
        _ => None,
    }
}

/// The exception for a refused cell of row `key`, in the field `field` (`['at']`).
fn refused(table: &str, key: &str, field: &str, refusal: Refusal) -> PyErr {
    let refusal = refusal.within(field);
    let message = format!("{table}[{key}]{}: {}", refusal.path(), refusal.reason);
    error_of(refusal.kind, message)
}

/// The error for a key the key column `column` holds at `row` that cannot be stored,
/// worded as for a DataFrame's keys checked in Python: there is no key to name the row by.
fn refused_key(column: &str, row: usize, refusal: &Refusal) -> PyErr {
    let message = format!(
        "the key column '{}' at <row {row}>{}: {}",
        column.escape_debug(),
        refusal.path(),
        refusal.reason
    );
    error_of(refusal.kind, message)
}

fn error_of(kind: RefusalKind, message: String) -> PyErr {
    match kind {
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
        self.keys
            .encode_into(row, key)
            .map_err(|r| refused_key(&self.load.key, self.offset + row, &r))?;
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

/// Refuses a batch whose buffers contradict its schema: a producer may hand over strings
/// that are not UTF-8 (pyarrow builds such arrays from raw buffers without a check), and
/// stored, they would be rows no read could decode. `offset`: the batch's first row.
fn valid(batch: &RecordBatch, offset: usize) -> PyResult<()> {
    for (column, field) in batch.columns().iter().zip(batch.schema_ref().fields()) {
        column.to_data().validate_full().map_err(|e| {
            PyValueError::new_err(format!(
                "column {} (rows {offset} to {}) is not valid Arrow data: {e}",
                quoted(field.name()),
                offset + batch.num_rows().saturating_sub(1)
            ))
        })?;
    }
    Ok(())
}

/// `data` as the Arrow reader takes it. polars exports a column of nulls with a buffer the
/// Arrow C data interface says it has not (polars issue 22934), which the reader refuses:
/// a polars frame is read through pyarrow, which takes it, when pyarrow is installed.
fn readable<'py>(data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let module = data.get_type().module()?;
    if module.to_str()?.split('.').next() == Some("polars") {
        if let Ok(pyarrow) = data.py().import("pyarrow") {
            return pyarrow.call_method1("table", (data,));
        }
    }
    Ok(data.clone())
}

/// Writes every row of an Arrow stream (anything with `__arrow_c_stream__`) into `table`:
/// one transaction, or one per `batch_rows` rows. Returns the last transaction's receipt.
/// Arrow's C interface passes column names as C strings: a producer cuts a name at its
/// NUL, and its fields would be stored under the shorter name. Refuses a source whose
/// column names, or the field names of its struct columns (at any depth), as a pyarrow,
/// polars or pandas object shows them, hold one.
fn refuse_cut_names(data: &Bound<'_, PyAny>) -> PyResult<()> {
    // A source that shows its names otherwise (or not at all) is read as the C interface
    // gives them.
    let names = shown_names(data).unwrap_or_default();
    match names.iter().find(|name| name.contains('\0')) {
        Some(name) => Err(PyValueError::new_err(format!(
            "column {} has a NUL character in its name, where Arrow's C interface cuts it \
             short: rename the column (put and put_dataframe store such a name whole)",
            quoted(name)
        ))),
        None => Ok(()),
    }
}

/// The column names of a pyarrow, polars or pandas `data`, and its struct fields' names.
fn shown_names(data: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let mut names = Vec::new();
    match data.getattr("schema") {
        // pyarrow: a schema of fields; polars: a mapping of names to types.
        Ok(schema) if schema.hasattr("items")? => {
            for item in schema.call_method0("items")?.try_iter()? {
                let (name, dtype): (String, Bound<'_, PyAny>) = item?.extract()?;
                names.push(name);
                nested_names(&dtype, &mut names, 0);
            }
        }
        Ok(schema) => {
            for field in schema.try_iter()? {
                let field = field?;
                names.push(field.getattr("name")?.extract()?);
                nested_names(&field.getattr("type")?, &mut names, 0);
            }
        }
        Err(_) => names = data.getattr("columns")?.extract()?,
    }
    Ok(names)
}

/// Adds the field names inside the pyarrow or polars type `dtype` (a struct's, at any
/// depth, through lists) to `names`; what it cannot read it leaves out.
fn nested_names(dtype: &Bound<'_, PyAny>, names: &mut Vec<String>, depth: u32) {
    if depth > crate::codec::msgpack::MAX_DEPTH {
        return;
    }
    let mut children = Vec::new();
    if let Ok(count) = dtype
        .getattr("num_fields")
        .and_then(|n| n.extract::<usize>())
    {
        // A pyarrow struct (a list's num_fields is 1, its item: read as value_type below).
        if !dtype.hasattr("value_type").unwrap_or(true) {
            for i in 0..count {
                if let Ok(field) = dtype.call_method1("field", (i,)) {
                    children.push((field.getattr("name"), field.getattr("type")));
                }
            }
        }
    } else if let Ok(fields) = dtype.getattr("fields").and_then(|f| f.try_iter()) {
        // A polars struct.
        for field in fields.flatten() {
            children.push((field.getattr("name"), field.getattr("dtype")));
        }
    }
    for (name, child) in children {
        if let Ok(name) = name.and_then(|n| n.extract::<String>()) {
            names.push(name);
        }
        if let Ok(child) = child {
            nested_names(&child, names, depth + 1);
        }
    }
    for item in ["value_type", "inner"] {
        if let Ok(item) = dtype.getattr(item) {
            nested_names(&item, names, depth + 1);
        }
    }
}

pub(crate) fn put(
    py: Python<'_>,
    store: &Store,
    data: &Bound<'_, PyAny>,
    load: &Load<'_>,
) -> PyResult<PyReceipt> {
    crate::store::validate_table_name(&load.table).map_err(|e| super::errors::to_py(py, e))?;
    refuse_cut_names(data)?;
    let data = &readable(data)?;
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
    for field in schema.fields() {
        if let Some((path, name)) = repeated_within(field.data_type(), String::new()) {
            return Err(PyValueError::new_err(format!(
                "field names must be unique to be stored as dict keys: {} is the name of \
                 more than one field of column {}{path}",
                quoted(&name),
                quoted(field.name())
            )));
        }
    }
    let names = field_order(load, &schema);
    let progress = Progress::new(
        py,
        load.progress.as_ref(),
        &format!("put {}", load.table),
        || row_count(data),
    )?;
    let input = Input {
        reader,
        names,
        key_index,
        // Data with a row count is in memory, quick to convert: it streams. A reader of
        // unknown length may wait on its source, which must not hold other writers
        // meanwhile.
        streams: row_count(data).is_some(),
    };
    let mut loaded = Loaded::default();
    match (
        load_rows(py, store, load, input, &progress, &mut loaded),
        loaded.receipt,
    ) {
        (Ok(receipt), _) => progress
            .finish()
            .map(|()| receipt.clone())
            .map_err(|err| committed_anyway(py, err, receipt)),
        (Err(err), None) => Err(err),
        // The rows are stored: only reporting the last progress failed.
        (Err(err), Some(receipt)) if loaded.all => Err(committed_anyway(py, err, receipt)),
        (Err(err), Some(receipt)) => Err(partly_committed(py, err, receipt, loaded.written)),
    }
}

/// What a load committed so far.
#[derive(Default)]
struct Loaded {
    /// The last transaction's receipt.
    receipt: Option<PyReceipt>,
    /// Rows committed.
    written: usize,
    /// Every row is committed.
    all: bool,
}

impl Loaded {
    /// Notes the outcome of committing `rows` rows: an exception raised past the commit
    /// point (Ctrl-C during the commit) carries the receipt, and those rows count too.
    fn note(
        &mut self,
        py: Python<'_>,
        rows: usize,
        committed: PyResult<PyReceipt>,
    ) -> PyResult<PyReceipt> {
        if let Some(receipt) = receipt_of(py, &committed) {
            self.receipt = Some(receipt);
            self.written += rows;
        }
        committed
    }
}

/// The Arrow data of a load.
struct Input {
    reader: Box<dyn RecordBatchReader + Send>,
    /// The value columns, in the order their fields are stored.
    names: Vec<String>,
    key_index: usize,
    /// Whether its transactions may stream (see [`OpSink::new`]).
    streams: bool,
}

/// Converts and writes the rows of `input`, noting each commit in `loaded`.
fn load_rows(
    py: Python<'_>,
    store: &Store,
    load: &Load<'_>,
    input: Input,
    progress: &Progress<'_>,
    loaded: &mut Loaded,
) -> PyResult<PyReceipt> {
    let Input {
        reader,
        names,
        key_index,
        streams,
    } = input;
    let schema = reader.schema();
    let mut sink = OpSink::new(store, load.durability, streams, load.what());
    let mut buffers = RowBuffers::default();
    let mut offset = 0usize;
    for batch in reader {
        let batch =
            batch.map_err(|e| PyValueError::new_err(format!("cannot read the Arrow data: {e}")))?;
        valid(&batch, offset)?;
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
                    callback.call1((loaded.written + sink.len(),))?;
                }
            }
            if load.batch_rows.is_some_and(|n| sink.len() >= n) {
                let full = std::mem::replace(
                    &mut sink,
                    OpSink::new(store, load.durability, streams, load.what()),
                );
                let rows = full.len();
                loaded.note(py, rows, full.commit(py))?;
                if let Some(callback) = progress.callback() {
                    callback.call1((loaded.written,))?;
                }
            }
        }
        offset += batch.num_rows();
        py.check_signals()?;
    }
    let receipt = match loaded.receipt.clone() {
        Some(receipt) if sink.len() == 0 => receipt,
        _ => {
            let rows = sink.len();
            loaded.note(py, rows, sink.commit(py))?
        }
    };
    loaded.all = true;
    if let Some(callback) = progress.callback() {
        callback.call1((loaded.written,))?;
    }
    Ok(receipt)
}
