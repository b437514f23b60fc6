//! A table's rows as a stream of Arrow record batches, read from one snapshot: a first pass
//! infers the schema, a second builds batches of bounded size, one at a time, so a table
//! larger than memory can be streamed.

use std::ops::Bound;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions, RecordBatchReader};
use arrow_schema::{ArrowError, SchemaRef};

use super::column::{Column, Unfit};
use super::shape::{FieldIndex, Layout, Shape};
use crate::codec::decode_key;
use crate::codec::msgpack::{Reader, Token};
use crate::error::{Result, StoreError};
use crate::store::{SnapshotView, Store};

/// Bytes of variable-length data after which a batch ends (well inside 32-bit offsets).
pub(super) const BATCH_DATA_BYTES: usize = 64 << 20;

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// The table.
    pub table: String,
    /// Encoded-key bounds.
    pub bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>),
    /// Only these value columns, in this order (`None`: every field seen).
    pub columns: Option<Vec<String>>,
    /// The name of the key column.
    pub key_name: String,
    /// Rows per batch (a batch also ends at [`BATCH_DATA_BYTES`] of strings and bytes).
    pub batch_rows: usize,
}

/// An export ready to stream: a snapshot and the schema its rows were found to have. It
/// gives any number of streams of the same rows.
pub struct Plan {
    view: Arc<SnapshotView>,
    request: ExportRequest,
    shape: Shape,
    schema: SchemaRef,
}

/// The batches of one table at one LSN.
pub struct Export {
    view: Arc<SnapshotView>,
    request: ExportRequest,
    schema: SchemaRef,
    builders: Builders,
    /// Where the next batch starts.
    next: Bound<Vec<u8>>,
    done: bool,
}

/// The columns of the batch being built.
struct Builders {
    key: Column,
    layout: Layout,
    columns: Vec<Column>,
    index: FieldIndex,
    /// Which value columns the current row has given a value.
    filled: Vec<bool>,
}

fn unfit(table: &str, key: &[u8], err: &Unfit) -> crate::Error {
    StoreError::DamagedRow {
        table: table.to_owned(),
        key: key.to_vec(),
        reason: format!("its value cannot be exported: {err}"),
    }
    .into()
}

impl Plan {
    /// Takes a snapshot of the store and reads it once to infer the schema.
    ///
    /// # Errors
    /// A closed store, a storage failure, or a value that does not decode.
    pub fn new(store: &Store, request: ExportRequest) -> Result<Self> {
        let view = store.snapshot_view()?;
        let mut shape = Shape::new(request.columns.as_deref());
        let mut failed = None;
        view.visit(
            &request.table,
            bounds(&request.bounds),
            &mut |key, value| match shape.observe(key, value) {
                Ok(()) => true,
                Err(err) => {
                    failed = Some(unfit(&request.table, key, &err.into()));
                    false
                }
            },
        )?;
        if let Some(err) = failed {
            return Err(err);
        }
        Ok(Self {
            schema: shape.schema(&request.key_name),
            view: Arc::new(view),
            request,
            shape,
        })
    }

    /// The schema of every batch.
    #[must_use]
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Rows in the export.
    #[must_use]
    pub fn rows(&self) -> u64 {
        self.shape.rows()
    }

    /// The LSN the rows are read at.
    #[must_use]
    pub fn lsn(&self) -> u64 {
        self.view.start.lsn
    }

    /// The table exported.
    #[must_use]
    pub fn table(&self) -> &str {
        &self.request.table
    }

    /// A stream of the rows, from the first.
    #[must_use]
    pub fn stream(&self) -> Export {
        let rows = self.request.batch_rows.min(self.rows() as usize).max(1);
        let layout = self.shape.layout();
        let columns: Vec<Column> = match &layout {
            Layout::Fields(fields) => fields.iter().map(|(_, k)| Column::new(*k, rows)).collect(),
            Layout::Whole(kind) => vec![Column::new(*kind, rows)],
        };
        let index = match &layout {
            Layout::Fields(fields) => FieldIndex::new(fields.iter().map(|(name, _)| name.as_str())),
            Layout::Whole(_) => FieldIndex::default(),
        };
        Export {
            view: self.view.clone(),
            schema: self.schema.clone(),
            builders: Builders {
                key: Column::new(self.shape.key(), rows),
                filled: vec![false; columns.len()],
                layout,
                columns,
                index,
            },
            next: self.request.bounds.0.clone(),
            done: false,
            request: self.request.clone(),
        }
    }
}

impl Export {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.done {
            return Ok(None);
        }
        let (lower, upper) = (self.next.clone(), self.request.bounds.1.clone());
        let (table, batch_rows) = (&self.request.table, self.request.batch_rows);
        let builders = &mut self.builders;
        let mut rows = 0usize;
        let mut last = None;
        let mut failed = None;
        self.view.visit(
            table,
            (as_slice(&lower), as_slice(&upper)),
            &mut |key, value| {
                if let Err(err) = builders.push(key, value) {
                    failed = Some(unfit(table, key, &err));
                    return false;
                }
                rows += 1;
                let full = rows >= batch_rows || builders.data_bytes() >= BATCH_DATA_BYTES;
                if full {
                    last = Some(key.to_vec());
                }
                !full
            },
        )?;
        if let Some(err) = failed {
            return Err(err);
        }
        match last {
            Some(key) => self.next = Bound::Excluded(key),
            None => self.done = true,
        }
        if rows == 0 {
            return Ok(None);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            self.builders.finish(),
            &options,
        )
        .expect("every column was given one value per row, of the schema's type");
        Ok(Some(batch))
    }
}

impl Builders {
    fn data_bytes(&self) -> usize {
        self.columns.iter().map(Column::data_bytes).sum()
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        let mut arrays = vec![self.key.finish()];
        arrays.extend(self.columns.iter_mut().map(Column::finish));
        arrays
    }

    /// Appends one row.
    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), Unfit> {
        let filled = &mut self.filled;
        let decoded = decode_key(key).map_err(|_| super::malformed())?;
        self.key.push_key(decoded);
        if let Layout::Whole(_) = self.layout {
            return self.columns[0].push(value);
        }
        filled.fill(false);
        let mut reader = Reader::new(value);
        // Asked-for columns are exported from any value: one that is not a dict has none of
        // them, and a field that is not named by a string is not one of them.
        let len = match reader.next_token()? {
            Token::Map(len) => len,
            _ => 0,
        };
        for position in 0..len {
            let name = reader.next_token()?;
            let raw = reader.value()?;
            let Token::Str(name) = name else {
                continue;
            };
            if let Some(i) = self.index.find(position, name) {
                // A repeated field (not something replikv writes) keeps its first value.
                if !filled[i] {
                    filled[i] = true;
                    self.columns[i].push(raw)?;
                }
            }
        }
        for (column, filled) in self.columns.iter_mut().zip(filled.iter()) {
            if !filled {
                column.push_null();
            }
        }
        Ok(())
    }
}

fn as_slice(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    bound.as_ref().map(Vec::as_slice)
}

fn bounds(owned: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (as_slice(&owned.0), as_slice(&owned.1))
}

impl Iterator for Export {
    type Item = std::result::Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_batch() {
            Ok(batch) => batch.map(Ok),
            Err(err) => {
                self.done = true;
                Some(Err(ArrowError::ExternalError(Box::new(err))))
            }
        }
    }
}

impl RecordBatchReader for Export {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
