//! What a pass over an export's rows on threads ([`super::parallel`]) does with each chunk:
//! decode it into a record batch, or find its shape. Both check every row's CRC first.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::export::{Builders, ExportRequest, Failure, Plan};
use super::parallel::{Chunk, Job};
use super::shape::Shape;
use crate::store::checked_value;

/// Decodes chunks into record batches of a plan's schema.
pub(super) struct Decode {
    builders: Builders,
    schema: SchemaRef,
    table: Arc<str>,
}

impl Decode {
    pub(super) fn new(plan: &Plan) -> Self {
        Self {
            builders: plan.builders(),
            schema: plan.schema(),
            table: plan.table().into(),
        }
    }
}

impl Job for Decode {
    type Out = RecordBatch;

    fn run(&mut self, chunk: &Chunk) -> Result<RecordBatch, Failure> {
        for (key, stored) in chunk.rows() {
            let pushed = match checked_value(&self.table, key, stored) {
                Ok(value) => self
                    .builders
                    .push(key, value)
                    .map_err(|err| Failure::Row(key.to_vec(), err)),
                Err(damaged) => Err(Failure::Store(damaged)),
            };
            if let Err(failure) = pushed {
                // Empties the builders of the chunk's rows (and of the bad row's start).
                self.builders.finish();
                return Err(failure);
            }
        }
        Ok(super::batch(
            &self.schema,
            self.builders.finish(),
            chunk.len(),
        ))
    }
}

/// Finds the shape of each chunk's rows: [`Shape::merge`] puts them together in key order.
pub(super) struct Observe {
    columns: Option<Vec<String>>,
    table: Arc<str>,
}

impl Observe {
    pub(super) fn new(request: &ExportRequest) -> Self {
        Self {
            columns: request.columns.clone(),
            table: request.table.as_str().into(),
        }
    }
}

impl Job for Observe {
    type Out = Shape;

    fn run(&mut self, chunk: &Chunk) -> Result<Shape, Failure> {
        let mut shape = Shape::new(self.columns.as_deref());
        for (key, stored) in chunk.rows() {
            let value = checked_value(&self.table, key, stored).map_err(Failure::Store)?;
            shape
                .observe(key, value)
                .map_err(|err| Failure::Row(key.to_vec(), err.into()))?;
        }
        Ok(shape)
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;
    use std::sync::Arc;

    use super::super::export::{ExportRequest, Stop};
    use super::super::infer::{shape_here, shape_on_threads};
    use super::super::test_key as key;
    use crate::codec::Op;
    use crate::store::{SnapshotView, Store, StoreOptions};

    /// Row `i` of 1,000: a dict whose fields change along the table (an int column that
    /// turns float, a str column with one int, a field first seen late and first in its
    /// dict); with `mixed`, now and then a value that is not a dict.
    fn value(i: usize, mixed: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if mixed && i % 250 == 249 {
            rmp::encode::write_str(&mut out, "not a dict").unwrap();
            return out;
        }
        let late = i >= 600;
        rmp::encode::write_map_len(&mut out, 3 + u32::from(late)).unwrap();
        if late {
            rmp::encode::write_str(&mut out, "late").unwrap();
            rmp::encode::write_sint(&mut out, 1).unwrap();
        }
        rmp::encode::write_str(&mut out, "n").unwrap();
        if i < 500 {
            rmp::encode::write_sint(&mut out, i as i64).unwrap();
        } else {
            rmp::encode::write_f64(&mut out, 0.5).unwrap();
        }
        rmp::encode::write_str(&mut out, "tag").unwrap();
        if i == 900 {
            rmp::encode::write_sint(&mut out, 1).unwrap();
        } else {
            rmp::encode::write_str(&mut out, "x").unwrap();
        }
        rmp::encode::write_str(&mut out, "flag").unwrap();
        rmp::encode::write_bool(&mut out, i.is_multiple_of(2)).unwrap();
        out
    }

    /// A store whose table `t` holds 1,000 rows of `value(i)`, except the rows in `bad`,
    /// which hold bytes that are not a value; and a snapshot of it.
    fn view(dir: &tempfile::TempDir, mixed: bool, bad: &[usize]) -> (Store, Arc<SnapshotView>) {
        let store = Store::open(dir.path().join("s"), StoreOptions::default()).unwrap();
        let ops = (0..1000)
            .map(|i| Op {
                table: "t".into(),
                key: key(i),
                value: Some(if bad.contains(&i) {
                    vec![0xc1]
                } else {
                    value(i, mixed)
                }),
            })
            .collect();
        store.commit(ops, None).unwrap();
        let view = Arc::new(store.snapshot_view().unwrap());
        (store, view)
    }

    fn request(columns: Option<Vec<String>>, batch_rows: usize) -> ExportRequest {
        ExportRequest {
            table: "t".into(),
            bounds: (Bound::Included(key(3)), Bound::Unbounded),
            columns,
            key_name: "key".into(),
            batch_rows,
            stop: Stop::default(),
        }
    }

    #[test]
    fn the_shape_found_on_threads_is_the_shape_found_on_one_thread() {
        let asked = Some(vec!["late".to_owned(), "n".to_owned(), "absent".to_owned()]);
        for mixed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (_store, view) = view(&dir, mixed, &[]);
            for columns in [None, asked.clone()] {
                for batch_rows in [1, 7, 64, 5000] {
                    let request = request(columns.clone(), batch_rows);
                    let here = shape_here(&view, &request, None).unwrap();
                    for workers in [1, 2, 3] {
                        let there = shape_on_threads(&view, &request, workers).unwrap().unwrap();
                        let case = format!("mixed {mixed}, {columns:?}, {batch_rows} a chunk");
                        assert_eq!(there.schema("key"), here.schema("key"), "{case}");
                        assert_eq!(there.layout(), here.layout(), "{case}");
                        assert_eq!(there.rows(), 997, "{case}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_bad_row_fails_the_shape_at_the_first_one_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, view) = view(&dir, false, &[600, 800]);
        let request = request(None, 16);
        let here = shape_here(&view, &request, None).unwrap_err().to_string();
        assert!(here.contains("k000600"), "{here}");
        // Chunks are done in any order: the first bad row in key order must win each time.
        for _ in 0..20 {
            let there = shape_on_threads(&view, &request, 3).unwrap().unwrap_err();
            assert_eq!(there.to_string(), here);
        }
    }
}
