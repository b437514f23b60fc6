//! Arrow record batches built straight from stored values, and stored values from Arrow:
//! the path by which tables reach pandas, polars and `DuckDB` without a Python loop.

mod column;
mod export;
mod feed;
mod import;
mod shape;

pub use export::{Collected, Export, ExportRequest, Plan};
pub use feed::{FeedBatches, FeedPlan, FEED_BATCH_ROWS};
pub use import::{cell_key, field_part, unpack, CellWriter, Naive, Refusal, RefusalKind};
pub use shape::{Kind, Layout, Shape, ENCODING_KEY, PACKED, VALUE_COLUMN};

/// Stored bytes that are not a value this module can read.
fn malformed() -> crate::error::CodecError {
    crate::error::CodecError::Malformed {
        what: "value",
        reason: "not a replikv value".into(),
    }
}
