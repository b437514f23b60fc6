//! Arrow record batches built straight from stored values, and stored values from Arrow:
//! the path by which tables reach pandas, polars and `DuckDB` without a Python loop.

mod column;
mod export;
mod feed;
mod import;
mod infer;
mod jobs;
mod packed;
mod parallel;
mod shape;

pub use export::{Collected, Export, ExportRequest, Plan, Stop};
pub use feed::{FeedBatches, FeedPlan, FEED_BATCH_ROWS};
pub use import::{field_part, unpack, CellWriter, KeyColumn, Naive, Refusal, RefusalKind};
pub use shape::{Kind, Layout, Shape, ENCODING_KEY, PACKED, VALUE_COLUMN};

/// Stored bytes that are not a value this module can read.
fn malformed() -> crate::error::CodecError {
    crate::error::CodecError::Malformed {
        what: "value",
        reason: "not a replikv value".into(),
    }
}

/// A record batch of `rows` rows from columns built for `schema`.
fn batch(
    schema: &arrow_schema::SchemaRef,
    columns: Vec<arrow_array::ArrayRef>,
    rows: usize,
) -> arrow_array::RecordBatch {
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
    arrow_array::RecordBatch::try_new_with_options(schema.clone(), columns, &options)
        .expect("invariant: every column was given one value per row, of the schema's type")
}

/// The encoded key of row `i` in the tests' tables.
#[cfg(test)]
fn test_key(i: usize) -> Vec<u8> {
    crate::codec::encode_key(crate::codec::KeyRef::Str(&format!("k{i:06}")))
}
