//! The change feed as Arrow record batches: one row per op (`lsn, epoch, timestamp, table,
//! key, op, value`). A first pass over the feed finds the key column's kind (keys only); the
//! stream then builds batches of bounded size, so one huge entry spans several batches.

use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMicrosecondBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch, RecordBatchReader};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

use super::column::Column;
use super::export::BATCH_DATA_BYTES;
use super::shape::Kind;
use crate::codec::decode_key;
use crate::error::Result;
use crate::feed::{Feed, FeedEntry, FeedRequest};
use crate::store::Store;

/// Rows per batch of the feed.
pub const FEED_BATCH_ROWS: usize = 64 * 1024;

/// A feed ready to stream as Arrow: its request and the schema its ops were found to have.
/// It gives any number of streams of the same rows.
pub struct FeedPlan {
    store: Store,
    request: FeedRequest,
    key: Kind,
    rows: u64,
    schema: SchemaRef,
}

impl FeedPlan {
    /// Reads the feed once (keys only) to find the key column's kind and the row count.
    ///
    /// # Errors
    /// [`crate::error::LogError::Truncated`] below the retained log, a closed store,
    /// corruption, I/O.
    pub fn new(store: Store, request: FeedRequest) -> Result<Self> {
        let mut feed = Feed::new(store.clone(), request.clone());
        let (mut key, mut rows) = (Kind::Null, 0u64);
        while let Some(entry) = feed.next_entry()? {
            for index in 0..entry.len() {
                key = key.join(Kind::of_key(decode_key(entry.op(index)?.key)?));
            }
            rows += entry.len() as u64;
        }
        Ok(Self {
            schema: feed_schema(key),
            store,
            request,
            key,
            rows,
        })
    }

    /// The schema of every batch.
    #[must_use]
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Rows (ops) in the feed.
    #[must_use]
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The range read: entries after the first LSN up to the second.
    #[must_use]
    pub fn range(&self) -> (u64, u64) {
        (self.request.since, self.request.last)
    }

    /// A stream of the rows, from the first, in batches of at most `batch_rows`.
    #[must_use]
    pub fn stream(&self, batch_rows: usize) -> FeedBatches {
        let rows = batch_rows
            .min(usize::try_from(self.rows).unwrap_or(usize::MAX))
            .max(1);
        FeedBatches {
            feed: Feed::new(self.store.clone(), self.request.clone()),
            schema: self.schema.clone(),
            batch_rows: batch_rows.max(1),
            current: None,
            builders: Builders {
                lsn: UInt64Builder::with_capacity(rows),
                epoch: UInt64Builder::with_capacity(rows),
                timestamp: TimestampMicrosecondBuilder::with_capacity(rows),
                table: StringBuilder::with_capacity(rows, rows * 8),
                key: Column::new(self.key, rows),
                op: StringBuilder::with_capacity(rows, rows * 6),
                value: Column::new(Kind::Packed, rows),
            },
            done: false,
        }
    }
}

/// The schema of the feed's rows, with a key column of `key`'s kind.
fn feed_schema(key: Kind) -> SchemaRef {
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("lsn", DataType::UInt64, false),
        Field::new("epoch", DataType::UInt64, false),
        Field::new("timestamp", utc, false),
        Field::new("table", DataType::Utf8, false),
        key.field("key"),
        Field::new("op", DataType::Utf8, false),
        Kind::Packed.field("value"),
    ]))
}

/// The feed's rows as record batches.
pub struct FeedBatches {
    feed: Feed,
    schema: SchemaRef,
    batch_rows: usize,
    /// The entry being turned into rows and the index of its next op.
    current: Option<(FeedEntry, usize)>,
    builders: Builders,
    done: bool,
}

struct Builders {
    lsn: UInt64Builder,
    epoch: UInt64Builder,
    timestamp: TimestampMicrosecondBuilder,
    table: StringBuilder,
    key: Column,
    op: StringBuilder,
    value: Column,
}

impl Builders {
    fn push(&mut self, entry: &FeedEntry, index: usize) -> Result<()> {
        let op = entry.op(index)?;
        self.lsn.append_value(entry.lsn);
        self.epoch.append_value(entry.epoch);
        let millis = i64::try_from(entry.timestamp_ms).unwrap_or(i64::MAX);
        self.timestamp.append_value(millis.saturating_mul(1000));
        self.table.append_value(op.table);
        self.key
            .push_key(decode_key(op.key)?)
            .expect("the key column's kind was found over every key of the range");
        if let Some(value) = op.value {
            self.op.append_value("put");
            // A packed column takes the bytes as they are: this cannot fail.
            self.value
                .push(value)
                .expect("invariant: a packed column takes any bytes");
        } else {
            self.op.append_value("delete");
            self.value.push_null();
        }
        Ok(())
    }

    fn data_bytes(&self) -> usize {
        self.table.values_slice().len() + self.key.data_bytes() + self.value.data_bytes()
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.lsn.finish()),
            Arc::new(self.epoch.finish()),
            Arc::new(self.timestamp.finish().with_timezone("UTC")),
            Arc::new(self.table.finish()),
            self.key.finish(),
            Arc::new(self.op.finish()),
            self.value.finish(),
        ]
    }
}

impl FeedBatches {
    fn has_room(&self, rows: usize) -> bool {
        rows < self.batch_rows && self.builders.data_bytes() < BATCH_DATA_BYTES
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let mut rows = 0usize;
        while !self.done && self.has_room(rows) {
            let (entry, mut index) = if let Some(current) = self.current.take() {
                current
            } else if let Some(entry) = self.feed.next_entry()? {
                (entry, 0)
            } else {
                self.done = true;
                break;
            };
            while index < entry.len() && self.has_room(rows) {
                self.builders.push(&entry, index)?;
                index += 1;
                rows += 1;
            }
            if index < entry.len() {
                self.current = Some((entry, index));
            }
        }
        if rows == 0 {
            return Ok(None);
        }
        Ok(Some(super::batch(
            &self.schema,
            self.builders.finish(),
            rows,
        )))
    }
}

impl Iterator for FeedBatches {
    type Item = std::result::Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_batch() {
            Ok(batch) => batch.map(Ok),
            Err(err) => {
                self.done = true;
                self.current = None;
                Some(Err(ArrowError::ExternalError(Box::new(err))))
            }
        }
    }
}

impl RecordBatchReader for FeedBatches {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_key, KeyRef, Op};
    use crate::store::StoreOptions;

    fn put(table: &str, key: i64) -> Op {
        Op {
            table: table.to_owned(),
            key: encode_key(KeyRef::Int(key)),
            value: Some(vec![0xc0]),
        }
    }

    #[test]
    fn an_entry_spans_batches_and_a_filter_keeps_only_its_tables() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("db"), StoreOptions::default()).unwrap();
        let mut ops: Vec<Op> = (0..10).map(|k| put("a", k)).collect();
        ops.push(put("b", 99));
        store.commit(ops, None).unwrap();
        store.commit(vec![put("b", 1)], None).unwrap();

        let plan = FeedPlan::new(store.clone(), FeedRequest::new(0, store.last_lsn())).unwrap();
        assert_eq!(plan.rows(), 12);
        let sizes: Vec<usize> = plan.stream(4).map(|b| b.unwrap().num_rows()).collect();
        assert_eq!(sizes, [4, 4, 4], "batches are cut inside an entry");

        let mut only_a = FeedRequest::new(0, store.last_lsn());
        only_a.tables = Some(["a".to_owned()].into());
        let plan = FeedPlan::new(store.clone(), only_a).unwrap();
        assert_eq!(
            plan.rows(),
            10,
            "the other table's ops and entry are left out"
        );
        assert_eq!(plan.schema().field(4).data_type(), &DataType::Int64);
        let lsns: Vec<u64> =
            plan.stream(64)
                .flat_map(|b| {
                    let b = b.unwrap();
                    let lsn = arrow_array::cast::AsArray::as_primitive::<
                        arrow_array::types::UInt64Type,
                    >(b.column(0).as_ref())
                    .values()
                    .to_vec();
                    lsn
                })
                .collect();
        assert_eq!(lsns, [1; 10]);
        store.close().unwrap();
    }
}
