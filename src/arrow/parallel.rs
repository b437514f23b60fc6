//! A whole export built on every core. One thread walks the snapshot (a redb iterator
//! belongs to one thread) and copies its rows, as stored, into chunks of one batch's rows;
//! workers check each row's CRC and decode the chunks into record batches, which are put
//! back in key order. Walking and copying is about a fifth of an export's time, so two
//! cores build a large export in a little over half the time of one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::export::{bounds, Builders, Failure, Plan, BATCH_DATA_BYTES};
use crate::store::checked_value;

/// Rows copied out of the snapshot as stored: one batch's worth.
#[derive(Default)]
struct Chunk {
    /// Its place in key order.
    seq: usize,
    bytes: Vec<u8>,
    /// Where each row's key and stored value end in `bytes`.
    ends: Vec<(usize, usize)>,
}

impl Chunk {
    /// Empties the chunk for another batch (its memory is kept: fresh memory costs a
    /// page fault per page on first use, which was the walking thread's largest cost).
    fn reuse(mut self, seq: usize) -> Self {
        self.bytes.clear();
        self.ends.clear();
        self.seq = seq;
        self
    }

    fn push(&mut self, key: &[u8], value: &[u8]) {
        self.bytes.extend_from_slice(key);
        let key_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.ends.push((key_end, self.bytes.len()));
    }

    fn rows(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(key_end, end)| {
            let row = (&self.bytes[start..key_end], &self.bytes[key_end..end]);
            start = end;
            row
        })
    }
}

/// A chunk as a batch, or why its first bad row is bad.
type Built = (usize, Result<RecordBatch, Failure>);

/// Every batch of `plan`'s rows, decoded by up to `workers` threads; `None` if not one
/// could be started (the caller builds on its own thread). A bad row (damaged, or not
/// fitting the schema) fails the build with the first one in key order, as a build on one
/// thread would: every chunk before the one it is in is decoded whole.
pub(super) fn build(plan: &Plan, workers: usize) -> Option<Result<Vec<RecordBatch>, Failure>> {
    let batch_rows = plan.batch_rows();
    // A chunk waits while each worker decodes one: with smaller chunks for more workers,
    // the rows in flight stay about those of a batch built on one thread.
    let chunk_bytes = BATCH_DATA_BYTES / workers.max(1);
    let (send, receive) = sync_channel::<Chunk>(1);
    // Owned by the workers alone: once they are all gone (a panic), sending fails and the
    // walk stops instead of waiting for room forever.
    let receive = Arc::new(Mutex::new(receive));
    let (recycle, recycled) = channel::<Chunk>();
    let bad = AtomicBool::new(false);
    let schema = plan.schema();
    let table = plan.request().table.as_str();
    let (scanned, built) = thread::scope(|scope| {
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            let worker = Worker {
                chunks: Arc::clone(&receive),
                recycle: recycle.clone(),
                bad: &bad,
                builders: plan.builders(batch_rows.min(plan.rows() as usize).max(1)),
                schema: &schema,
                table,
            };
            let started = thread::Builder::new()
                .name("replikv-export".to_owned())
                .spawn_scoped(scope, move || worker.run());
            match started {
                Ok(handle) => handles.push(handle),
                Err(_) => break, // as many as the system gives (none: see above)
            }
        }
        drop((receive, recycle));
        if handles.is_empty() {
            return (Ok(()), None);
        }
        let scanned = scan(plan, (batch_rows, chunk_bytes), &send, &recycled, &bad);
        // Workers end once the chunks sent are decoded.
        drop(send);
        let built: Vec<Built> = handles
            .into_iter()
            .flat_map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
            .collect();
        (scanned, Some(built))
    });
    let mut built = built?;
    built.sort_unstable_by_key(|(seq, _)| *seq);
    // Every chunk decoded comes before the point where the walk failed, if it did: a bad
    // row in one is the first failure in key order.
    let batches: Result<Vec<RecordBatch>, Failure> =
        built.into_iter().map(|(_, batch)| batch).collect();
    Some(batches.and_then(|batches| scanned.map(|()| batches).map_err(Failure::Store)))
}

/// Walks the rows, sending a chunk every `batch_rows` rows (or `chunk_bytes`) and filling
/// the chunks workers give back; stops early once a worker found a bad row, or when every
/// worker is gone.
fn scan(
    plan: &Plan,
    (batch_rows, chunk_bytes): (usize, usize),
    send: &SyncSender<Chunk>,
    recycled: &Receiver<Chunk>,
    bad: &AtomicBool,
) -> crate::Result<()> {
    let request = plan.request();
    let mut chunk = Chunk::default();
    let mut listening = true;
    plan.view().visit_sealed(
        &request.table,
        bounds(&request.bounds),
        &mut |key, stored| {
            chunk.push(key, stored);
            if chunk.ends.len() >= batch_rows || chunk.bytes.len() >= chunk_bytes {
                let seq = chunk.seq + 1;
                let next = recycled.try_recv().unwrap_or_default().reuse(seq);
                listening = send.send(std::mem::replace(&mut chunk, next)).is_ok();
            }
            listening && !bad.load(Ordering::Relaxed)
        },
    )?;
    if listening && !chunk.ends.is_empty() {
        // Fails only if every worker is gone, and then nothing waits for the chunk.
        let _ = send.send(chunk);
    }
    Ok(())
}

/// One decoding thread and what it shares.
struct Worker<'a> {
    chunks: Arc<Mutex<Receiver<Chunk>>>,
    /// Where decoded chunks go back to the walking thread, to be filled again.
    recycle: Sender<Chunk>,
    /// Set once a chunk held a bad row: the walk stops.
    bad: &'a AtomicBool,
    builders: Builders,
    schema: &'a SchemaRef,
    table: &'a str,
}

impl Worker<'_> {
    /// Decodes chunks until none are left.
    fn run(mut self) -> Vec<Built> {
        let mut built = Vec::new();
        loop {
            let next = self
                .chunks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .recv();
            let Ok(chunk) = next else {
                return built;
            };
            let batch = self.decode(&chunk);
            if batch.is_err() {
                self.bad.store(true, Ordering::Relaxed);
            }
            built.push((chunk.seq, batch));
            // The walk may be over; then the chunk is freed here.
            let _ = self.recycle.send(chunk);
        }
    }

    fn decode(&mut self, chunk: &Chunk) -> Result<RecordBatch, Failure> {
        for (key, stored) in chunk.rows() {
            let pushed = match checked_value(self.table, key, stored) {
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
            self.schema,
            self.builders.finish(),
            chunk.ends.len(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;
    use std::sync::Arc;

    use super::*;
    use crate::arrow::ExportRequest;
    use crate::codec::{encode_key, KeyRef, Op};
    use crate::store::{Store, StoreOptions};

    fn key(i: usize) -> Vec<u8> {
        encode_key(KeyRef::Str(&format!("k{i:06}")))
    }

    /// A profile-like dict; `late` adds a field no earlier row has.
    fn value(i: usize, late: bool) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, 3 + u32::from(late)).unwrap();
        rmp::encode::write_str(&mut out, "name").unwrap();
        rmp::encode::write_str(&mut out, &format!("user {i}")).unwrap();
        rmp::encode::write_str(&mut out, "n").unwrap();
        rmp::encode::write_sint(&mut out, i as i64).unwrap();
        rmp::encode::write_str(&mut out, "score").unwrap();
        rmp::encode::write_f64(&mut out, f64::from(i as u32) / 7.0).unwrap();
        if late {
            rmp::encode::write_str(&mut out, "late").unwrap();
            rmp::encode::write_bool(&mut out, true).unwrap();
        }
        out
    }

    /// A store whose table `t` holds `rows` rows, those in `late` with an extra field.
    fn store(dir: &tempfile::TempDir, rows: usize, late: &[usize]) -> Store {
        let store = Store::open(dir.path().join("s"), StoreOptions::default()).unwrap();
        let ops = (0..rows)
            .map(|i| Op {
                table: "t".into(),
                key: key(i),
                value: Some(value(i, late.contains(&i))),
            })
            .collect();
        store.commit(ops, None).unwrap();
        store
    }

    fn request(bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>), batch_rows: usize) -> ExportRequest {
        ExportRequest {
            table: "t".into(),
            bounds,
            columns: None,
            key_name: "key".into(),
            batch_rows,
        }
    }

    fn plan(store: &Store, request: ExportRequest, sample: Option<u64>) -> Plan {
        Plan::infer(Arc::new(store.snapshot_view().unwrap()), request, sample).unwrap()
    }

    fn bad_key(built: Result<Vec<RecordBatch>, Failure>) -> Vec<u8> {
        match built {
            Err(Failure::Row(key, _)) => key,
            Err(Failure::Store(err)) => panic!("a store failure: {err}"),
            Ok(_) => panic!("a row that does not fit was built"),
        }
    }

    #[test]
    fn a_parallel_build_gives_the_batches_of_a_build_on_one_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir, 1000, &[]);
        let ranges = [
            (Bound::Unbounded, Bound::Unbounded),
            (Bound::Included(key(10)), Bound::Excluded(key(901))),
            (Bound::Excluded(key(999)), Bound::Unbounded),
        ];
        for bounds in ranges {
            for batch_rows in [1, 64, 1000, 5000] {
                let plan = plan(&store, request(bounds.clone(), batch_rows), None);
                let here = plan.build_here().ok().unwrap();
                for workers in [1, 2, 3] {
                    let built = build(&plan, workers).unwrap().ok().unwrap();
                    assert_eq!(built, here, "{bounds:?}, {batch_rows} rows a batch");
                }
            }
        }
    }

    #[test]
    fn a_bad_row_fails_a_parallel_build_at_the_first_one_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        // The schema comes from the first 100 rows; rows 500 and 800 have a field it lacks.
        let store = store(&dir, 1000, &[500, 800]);
        let plan = plan(
            &store,
            request((Bound::Unbounded, Bound::Unbounded), 16),
            Some(100),
        );
        assert_eq!(bad_key(plan.build_here()), key(500));
        // Chunks are decoded in any order: the first bad row in key order must win each time.
        for _ in 0..20 {
            assert_eq!(bad_key(build(&plan, 3).unwrap()), key(500));
        }
    }
}
