//! A table's rows as a stream of Arrow record batches, read from one snapshot: a first pass
//! infers the schema, a second builds batches of bounded size, one at a time, so a table
//! larger than memory can be streamed.

use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, RecordBatchReader};
use arrow_schema::{ArrowError, SchemaRef};

use super::column::{Column, Unfit};
use super::jobs::Decode;
use super::parallel::{workers, Parallel};
use super::shape::{FieldIndex, Layout, Shape};
use crate::codec::decode_key;
use crate::codec::msgpack::{Reader, Token};
use crate::error::{Result, StoreError};
use crate::store::{SnapshotView, Store};

/// Bytes of variable-length data after which a batch ends (well inside 32-bit offsets).
pub(super) const BATCH_DATA_BYTES: usize = 64 << 20;

/// Rows whose kinds [`Plan::collect`] takes as the schema's before it builds batches.
const SAMPLE_ROWS: u64 = 65_536;

/// Every row of an export, built (see [`Plan::collect`]).
pub struct Collected {
    /// The schema of the batches.
    pub schema: SchemaRef,
    /// The LSN the rows were read at.
    pub lsn: u64,
    /// The batches, in key order.
    pub batches: Vec<RecordBatch>,
}

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
    /// Ends the export early once set (from another thread).
    pub stop: Stop,
}

/// A flag another thread sets to end an export early (Ctrl-C in Python): its next batch,
/// or the next chunk of rows its schema is inferred from, fails with
/// [`StoreError::Stopped`] instead.
#[derive(Debug, Clone, Default)]
pub struct Stop(Option<Arc<AtomicBool>>);

impl Stop {
    /// Ends the export once `flag` is set.
    #[must_use]
    pub fn when(flag: Arc<AtomicBool>) -> Self {
        Self(Some(flag))
    }

    pub(super) fn check(&self) -> Result<()> {
        match &self.0 {
            Some(flag) if flag.load(Ordering::Relaxed) => {
                Err(StoreError::Stopped("the export").into())
            }
            _ => Ok(()),
        }
    }
}

impl ExportRequest {
    /// Rows per batch (at least one).
    pub(super) fn rows_per_batch(&self) -> usize {
        self.batch_rows.max(1)
    }
}

/// An export ready to stream: a snapshot and the schema its rows were found to have. It
/// gives any number of streams of the same rows.
pub struct Plan {
    /// The schema came from the first rows only (see [`Plan::collect`]).
    sampled: bool,
    view: Arc<SnapshotView>,
    request: ExportRequest,
    shape: Shape,
    schema: SchemaRef,
}

/// The batches of one table at one LSN.
pub struct Export {
    request: ExportRequest,
    schema: SchemaRef,
    source: Source,
}

/// Where an export's batches are built.
#[allow(clippy::large_enum_variant)] // one per export
enum Source {
    /// On the thread that asks, one batch at a time.
    Here {
        view: Arc<SnapshotView>,
        builders: Builders,
        /// Where the next batch starts.
        next: Bound<Vec<u8>>,
        done: bool,
    },
    /// Ahead, on threads of the export's own.
    Threads(Parallel<RecordBatch>),
    /// Nowhere: the export was stopped (see [`Stop`]).
    Stopped,
}

/// The columns of the batch being built.
pub(super) struct Builders {
    key: Column,
    layout: Layout,
    columns: Vec<Column>,
    index: FieldIndex,
    /// Which value columns the current row has given a value.
    filled: Vec<bool>,
    /// The schema was inferred from the first rows only: a row it has no column for is
    /// [`Unfit::Unplanned`] instead of being left out.
    sampled: bool,
}

pub(super) fn unfit(table: &str, key: &[u8], err: &Unfit) -> crate::Error {
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
        Self::infer(Arc::new(store.snapshot_view()?), request, None)
    }

    /// Infers the schema from the first `sample` rows of `view` (all if `None`: on every
    /// core when the table may hold more than one batch).
    pub(super) fn infer(
        view: Arc<SnapshotView>,
        request: ExportRequest,
        sample: Option<u64>,
    ) -> Result<Self> {
        let shape = super::infer::shape(&view, &request, sample)?;
        shape.check_names(&request.table)?;
        Ok(Self {
            schema: shape.schema(&request.key_name),
            sampled: sample.is_some_and(|rows| shape.rows() >= rows),
            view,
            request,
            shape,
        })
    }

    /// Every row as batches, in one pass over the rows when their first [`SAMPLE_ROWS`]
    /// predict the schema of the whole scan: the batches are built on that schema, and a
    /// row it does not hold (a new field, a value of another type) starts the export over
    /// with the schema of the whole scan. Either way the schema is the whole scan's: a
    /// kind that holds every row's value is the join of their kinds. Returns the schema,
    /// the LSN read at and the batches.
    ///
    /// # Errors
    /// A closed store, a storage failure, or a value that does not decode.
    pub fn collect(store: &Store, request: ExportRequest) -> Result<Collected> {
        let view = Arc::new(store.snapshot_view()?);
        let plan = Self::infer(Arc::clone(&view), request.clone(), Some(SAMPLE_ROWS))?;
        if plan.sampled {
            if let Some(batches) = plan.build_all(true)? {
                return Ok(plan.collected(batches));
            }
            let plan = Self::infer(view, request, None)?;
            let batches = plan
                .build_all(false)?
                .expect("a whole-scan schema holds every row");
            return Ok(plan.collected(batches));
        }
        let batches = plan
            .build_all(false)?
            .expect("a whole-scan schema holds every row");
        Ok(plan.collected(batches))
    }

    /// Every batch; `None` if a row does not fit the schema and `give_up` says to stop
    /// there rather than fail.
    fn build_all(&self, give_up: bool) -> Result<Option<Vec<RecordBatch>>> {
        match self.stream().build_all() {
            Ok(batches) => Ok(Some(batches)),
            Err(Failure::Row(..)) if give_up => Ok(None),
            Err(failure) => Err(failure.into_error(&self.request.table)),
        }
    }

    fn collected(&self, batches: Vec<RecordBatch>) -> Collected {
        Collected {
            schema: self.schema(),
            lsn: self.lsn(),
            batches,
        }
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

    /// A stream of the rows, from the first: built ahead on every core (up to
    /// [`super::parallel::MAX_WORKERS`]) unless the rows are known to fit in one batch.
    #[must_use]
    pub fn stream(&self) -> Export {
        let one_batch = !self.sampled && self.rows() <= self.batch_rows() as u64;
        let threads = workers().filter(|_| !one_batch).and_then(|workers| {
            Parallel::start(&self.view, &self.request, workers, || Decode::new(self))
        });
        match threads {
            Some(threads) => self.export(Source::Threads(threads)),
            None => self.stream_here(),
        }
    }

    /// A stream of the rows built on the thread that reads it.
    pub(super) fn stream_here(&self) -> Export {
        self.export(Source::Here {
            view: self.view.clone(),
            builders: self.builders(),
            next: self.request.bounds.0.clone(),
            done: false,
        })
    }

    fn export(&self, source: Source) -> Export {
        Export {
            request: self.request.clone(),
            schema: self.schema.clone(),
            source,
        }
    }

    /// Empty columns of the schema, with room for one batch: sized by the rows known, so
    /// that a huge `batch_rows` never allocates that many.
    pub(super) fn builders(&self) -> Builders {
        let rows = self.batch_rows().min(self.rows() as usize).max(1);
        let layout = self.shape.layout();
        let columns: Vec<Column> = match &layout {
            Layout::Fields(fields) => fields.iter().map(|(_, k)| Column::new(*k, rows)).collect(),
            Layout::Whole(kind) => vec![Column::new(*kind, rows)],
        };
        let index = match &layout {
            Layout::Fields(fields) => FieldIndex::new(fields.iter().map(|(name, _)| name.as_str())),
            Layout::Whole(_) => FieldIndex::default(),
        };
        Builders {
            // With asked-for columns, other fields are left out by design.
            sampled: self.sampled && self.request.columns.is_none(),
            key: Column::new(self.shape.key(), rows),
            filled: vec![false; columns.len()],
            layout,
            columns,
            index,
        }
    }

    /// Rows per batch.
    pub(super) fn batch_rows(&self) -> usize {
        self.request.rows_per_batch()
    }
}

/// Why a batch could not be built.
pub(super) enum Failure {
    /// A row (its key) that does not fit the schema, or does not decode.
    Row(Vec<u8>, Unfit),
    /// The store failed.
    Store(crate::Error),
}

impl Failure {
    pub(super) fn into_error(self, table: &str) -> crate::Error {
        match self {
            Failure::Row(key, err) => unfit(table, &key, &err),
            Failure::Store(err) => err,
        }
    }
}

impl Export {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        self.build_batch()
            .map_err(|failure| failure.into_error(&self.request.table))
    }

    /// Every batch left.
    pub(super) fn build_all(mut self) -> std::result::Result<Vec<RecordBatch>, Failure> {
        let mut batches = Vec::new();
        while let Some(batch) = self.build_batch()? {
            batches.push(batch);
        }
        Ok(batches)
    }

    fn build_batch(&mut self) -> std::result::Result<Option<RecordBatch>, Failure> {
        if let Err(stopped) = self.request.stop.check() {
            // The stream ends at its first error: the threads building ahead (and the
            // snapshot) are let go of now.
            if !matches!(self.source, Source::Stopped) {
                self.source = Source::Stopped;
                return Err(Failure::Store(stopped));
            }
        }
        let (view, builders, next, done) = match &mut self.source {
            Source::Threads(threads) => return threads.next(),
            Source::Stopped => return Ok(None),
            Source::Here {
                view,
                builders,
                next,
                done,
            } => (view, builders, next, done),
        };
        if *done {
            return Ok(None);
        }
        let (lower, upper) = (next.clone(), self.request.bounds.1.clone());
        let (table, batch_rows) = (&self.request.table, self.request.batch_rows);
        let mut rows = 0usize;
        let mut last = None;
        let mut failed = None;
        let walked = view
            .visit(
                table,
                (as_slice(&lower), as_slice(&upper)),
                &mut |key, value| {
                    if let Err(err) = builders.push(key, value) {
                        failed = Some(Failure::Row(key.to_vec(), err));
                        return false;
                    }
                    rows += 1;
                    let full = rows >= batch_rows || builders.data_bytes() >= BATCH_DATA_BYTES;
                    if full {
                        last = Some(key.to_vec());
                    }
                    !full
                },
            )
            .map_err(Failure::Store);
        // The stream ends at its first error.
        if let Some(failure) = walked.err().or(failed) {
            *done = true;
            return Err(failure);
        }
        match last {
            Some(key) => *next = Bound::Excluded(key),
            None => *done = true,
        }
        if rows == 0 {
            return Ok(None);
        }
        Ok(Some(super::batch(&self.schema, builders.finish(), rows)))
    }
}

impl Builders {
    fn data_bytes(&self) -> usize {
        self.columns.iter().map(Column::data_bytes).sum()
    }

    pub(super) fn finish(&mut self) -> Vec<ArrayRef> {
        let mut arrays = vec![self.key.finish()];
        arrays.extend(self.columns.iter_mut().map(Column::finish));
        arrays
    }

    /// Appends one row.
    pub(super) fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), Unfit> {
        let filled = &mut self.filled;
        let decoded = decode_key(key).map_err(|_| super::malformed())?;
        self.key.push_key(decoded)?;
        if let Layout::Whole(_) = self.layout {
            return self.columns[0].push(value);
        }
        filled.fill(false);
        let mut reader = Reader::new(value);
        // Asked-for columns are exported from any value: one that is not a dict has none of
        // them, and a field that is not named by a string is not one of them.
        let len = match reader.next_token()? {
            Token::Map(len) => len,
            _ if self.sampled => return Err(Unfit::Unplanned),
            _ => 0,
        };
        for position in 0..len {
            let name = reader.next_token()?;
            let (first, raw) = reader.token_and_value()?;
            let Token::Str(name) = name else {
                if self.sampled {
                    return Err(Unfit::Unplanned);
                }
                continue;
            };
            match self.index.find(position, name) {
                // A repeated field (not something replikv writes) keeps its first value.
                Some(i) if !filled[i] => {
                    filled[i] = true;
                    self.columns[i].push_read(first, raw)?;
                }
                None if self.sampled => return Err(Unfit::Unplanned),
                _ => {}
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

pub(super) fn bounds(owned: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (as_slice(&owned.0), as_slice(&owned.1))
}

impl Iterator for Export {
    type Item = std::result::Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_batch() {
            Ok(batch) => batch.map(Ok),
            // The stream ends at its first error (see `build_batch`).
            Err(err) => Some(Err(ArrowError::ExternalError(Box::new(err)))),
        }
    }
}

impl RecordBatchReader for Export {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
