//! A pass over an export's rows on threads of its own: building its batches ahead, or
//! finding its shape. One thread walks the snapshot (a redb iterator belongs to one thread)
//! and copies its rows, as stored, into chunks of one batch's rows; workers check each
//! row's CRC and do the pass's [`Job`] on the chunks (decode them into record batches, or
//! note their fields' kinds). Any idle worker takes the next chunk, and the reader gets
//! the results back in key order. The walk runs at most [`WINDOW`] chunks ahead of the
//! reader per worker, so a stream of a table larger than memory stays bounded. Walking and
//! copying is about a fifth of an export's time, so two cores build a large export in a
//! little over half the time of one. Dropping the pass stops every thread: each one's next
//! send or receive fails.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use super::export::{bounds, ExportRequest, Failure, BATCH_DATA_BYTES};
use crate::error::StoreError;
use crate::store::SnapshotView;

/// What a worker makes of each chunk of rows, in its turn.
pub(super) trait Job: Send + 'static {
    /// The result of one chunk.
    type Out: Send + 'static;
    /// The chunk's result; a bad row in it (the first) fails it.
    fn run(&mut self, chunk: &Chunk) -> Result<Self::Out, Failure>;
}

/// Rows copied out of the snapshot as stored: one batch's worth.
#[derive(Default)]
pub(super) struct Chunk {
    bytes: Vec<u8>,
    /// Where each row's key and stored value end in `bytes`.
    ends: Vec<(usize, usize)>,
}

impl Chunk {
    /// Empties the chunk for another batch (its memory is kept: fresh memory costs a
    /// page fault per page on first use, which was the walking thread's largest cost).
    fn reuse(mut self) -> Self {
        self.bytes.clear();
        self.ends.clear();
        self
    }

    fn push(&mut self, key: &[u8], value: &[u8]) {
        self.bytes.extend_from_slice(key);
        let key_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.ends.push((key_end, self.bytes.len()));
    }

    /// Rows in the chunk.
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Each row's key and stored value (its CRC still on it), in key order.
    pub(super) fn rows(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(key_end, end)| {
            let row = (&self.bytes[start..key_end], &self.bytes[key_end..end]);
            start = end;
            row
        })
    }
}

/// What the walking thread gives a worker.
enum Work {
    Rows(Chunk),
    /// The walk failed here.
    Failed(crate::Error),
    /// No rows follow.
    End,
}

/// What a worker gives back, in its turn.
enum Built<T> {
    Chunk(Result<T, Failure>),
    End,
}

/// Chunks the walk may run ahead of the reader, per worker.
const WINDOW: usize = 2;
/// Threads that work on one pass at most: past this, walking the rows on one thread is
/// what limits it.
pub(super) const MAX_WORKERS: usize = 4;

/// Threads for a pass over an export's rows (up to [`MAX_WORKERS`]); `None` on one core.
pub(super) fn workers() -> Option<usize> {
    let cores = thread::available_parallelism().map_or(1, NonZeroUsize::get);
    (cores > 1).then_some(cores.min(MAX_WORKERS))
}

/// The results of a pass over an export's rows, one per chunk, done ahead by a walking
/// thread and workers.
pub(super) struct Parallel<T> {
    /// Results as the workers finish them, with their place in key order.
    built: Receiver<(usize, Built<T>)>,
    /// Results that came before their turn.
    early: BTreeMap<usize, Built<T>>,
    /// Gives the walk room for one more chunk.
    room: SyncSender<()>,
    next: usize,
    done: bool,
}

impl<T: Send + 'static> Parallel<T> {
    /// Starts the threads for the rows `request` asks for in `view`, with up to `workers`
    /// doing a `job()` each; `None` if not one worker could be started.
    pub(super) fn start<J: Job<Out = T>>(
        view: &Arc<SnapshotView>,
        request: &ExportRequest,
        workers: usize,
        mut job: impl FnMut() -> J,
    ) -> Option<Self> {
        let batch_rows = request.rows_per_batch();
        // Chunks wait while the workers decode: with smaller chunks for more workers, the
        // rows in flight stay a few batches' worth.
        let chunk_bytes = BATCH_DATA_BYTES / workers.max(1);
        let window = WINDOW * workers;
        let (give, take) = sync_channel::<(usize, Work)>(workers);
        // Owned by the workers alone: once they are all gone (a panic), the walk's sends
        // fail and it stops.
        let take = Arc::new(Mutex::new(take));
        let (hand_back, built) = sync_channel::<(usize, Built<T>)>(window);
        let (recycle, recycled) = channel::<Chunk>();
        let mut started = 0;
        for _ in 0..workers {
            let worker = Worker {
                work: Arc::clone(&take),
                built: hand_back.clone(),
                recycle: recycle.clone(),
                job: job(),
            };
            let spawned = thread::Builder::new()
                .name("replikv-export".to_owned())
                .spawn(move || worker.run());
            if spawned.is_err() {
                break; // as many as the system gives
            }
            started += 1;
        }
        if started == 0 {
            return None;
        }
        let (room, rooms) = sync_channel::<()>(window);
        for _ in 0..window {
            room.send(())
                .expect("invariant: the channel has room for the window");
        }
        let walk = Walk {
            view: Arc::clone(view),
            table: request.table.as_str().into(),
            bounds: request.bounds.clone(),
            limits: (batch_rows, chunk_bytes),
            work: give,
            rooms,
            recycled,
        };
        // Without a walking thread the workers' queue closes at once: the stream fails.
        let _ = thread::Builder::new()
            .name("replikv-export-walk".to_owned())
            .spawn(move || walk.run());
        Some(Self {
            built,
            early: BTreeMap::new(),
            room,
            next: 0,
            done: false,
        })
    }

    /// The next chunk's result, in key order; `None` after the last.
    pub(super) fn next(&mut self) -> Result<Option<T>, Failure> {
        if self.done {
            return Ok(None);
        }
        let built = loop {
            if let Some(built) = self.early.remove(&self.next) {
                break Some(built);
            }
            match self.built.recv() {
                Ok((n, built)) => {
                    self.early.insert(n, built);
                }
                Err(_) => break None,
            }
        };
        self.next += 1;
        // The walk may have ended: then nobody needs the room.
        let _ = self.room.try_send(());
        match built {
            Some(Built::Chunk(Ok(out))) => Ok(Some(out)),
            Some(Built::Chunk(Err(failure))) => {
                self.done = true;
                Err(failure)
            }
            Some(Built::End) => {
                self.done = true;
                Ok(None)
            }
            None => {
                self.done = true;
                Err(Failure::Store(
                    StoreError::Internal("an export thread stopped before the end").into(),
                ))
            }
        }
    }
}

/// The walking thread.
struct Walk {
    view: Arc<SnapshotView>,
    table: Arc<str>,
    bounds: (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>),
    /// A chunk ends at this many rows or bytes.
    limits: (usize, usize),
    /// The workers' queue.
    work: SyncSender<(usize, Work)>,
    /// One per chunk the walk may still send ahead of the reader.
    rooms: Receiver<()>,
    /// Chunks the workers are done with.
    recycled: Receiver<Chunk>,
}

impl Walk {
    /// Walks the rows and hands out the chunks, then says where the rows end (or where
    /// the walk failed). Stops early once the stream is dropped (a send or a wait for
    /// room fails).
    fn run(self) {
        let (batch_rows, chunk_bytes) = self.limits;
        let mut chunk = Chunk::default();
        let mut sent = 0usize;
        let mut listening = true;
        let walked =
            self.view
                .visit_sealed(&self.table, bounds(&self.bounds), &mut |key, stored| {
                    chunk.push(key, stored);
                    if chunk.ends.len() >= batch_rows || chunk.bytes.len() >= chunk_bytes {
                        let next = self.recycled.try_recv().unwrap_or_default().reuse();
                        let full = std::mem::replace(&mut chunk, next);
                        listening = self.give(sent, Work::Rows(full));
                        sent += 1;
                    }
                    listening
                });
        if !listening {
            return;
        }
        if let Err(err) = walked {
            self.give(sent, Work::Failed(err));
            return;
        }
        if !chunk.ends.is_empty() {
            if !self.give(sent, Work::Rows(chunk)) {
                return;
            }
            sent += 1;
        }
        self.give(sent, Work::End);
    }

    /// Gives chunk `n` to the workers once the window has room; `false` once the stream
    /// or every worker is gone.
    fn give(&self, n: usize, work: Work) -> bool {
        self.rooms.recv().is_ok() && self.work.send((n, work)).is_ok()
    }
}

/// One working thread.
struct Worker<J: Job> {
    work: Arc<Mutex<Receiver<(usize, Work)>>>,
    built: SyncSender<(usize, Built<J::Out>)>,
    /// Where chunks go back to the walking thread once done, to be filled again.
    recycle: Sender<Chunk>,
    job: J,
}

impl<J: Job> Worker<J> {
    /// Does its job on chunks until the rows end or the pass is gone.
    fn run(mut self) {
        loop {
            let next = self
                .work
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .recv();
            let Ok((n, work)) = next else {
                return;
            };
            let built = match work {
                Work::Rows(chunk) => {
                    let out = self.job.run(&chunk);
                    // The walk may be over; then the chunk is freed here.
                    let _ = self.recycle.send(chunk);
                    Built::Chunk(out)
                }
                Work::Failed(err) => Built::Chunk(Err(Failure::Store(err))),
                Work::End => Built::End,
            };
            if self.built.send((n, built)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;
    use std::sync::Arc;

    use arrow_array::RecordBatch;

    use super::super::export::Plan;
    use super::super::export::Stop;
    use super::super::infer::{shape_here, shape_on_threads};
    use super::super::jobs::Decode;
    use super::super::test_key as key;
    use super::*;
    use crate::codec::Op;
    use crate::store::{Store, StoreOptions};

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
            stop: Stop::default(),
        }
    }

    /// A plan and what it was made from.
    struct Planned {
        view: Arc<SnapshotView>,
        request: ExportRequest,
        plan: Plan,
    }

    fn plan(store: &Store, request: ExportRequest, sample: Option<u64>) -> Planned {
        let view = Arc::new(store.snapshot_view().unwrap());
        let plan = Plan::infer(Arc::clone(&view), request.clone(), sample).unwrap();
        Planned {
            view,
            request,
            plan,
        }
    }

    fn bad_key(built: Result<Vec<RecordBatch>, Failure>) -> Vec<u8> {
        match built {
            Err(Failure::Row(key, _)) => key,
            Err(Failure::Store(err)) => panic!("a store failure: {err}"),
            Ok(_) => panic!("a row that does not fit was built"),
        }
    }

    /// Every batch of `plan`, built by `workers` threads.
    fn on_threads(planned: &Planned, workers: usize) -> Result<Vec<RecordBatch>, Failure> {
        let Planned {
            view,
            request,
            plan,
        } = planned;
        let mut threads = Parallel::start(view, request, workers, || Decode::new(plan)).unwrap();
        let mut batches = Vec::new();
        while let Some(batch) = threads.next()? {
            batches.push(batch);
        }
        Ok(batches)
    }

    #[test]
    fn batches_built_on_threads_are_those_built_on_one_thread() {
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
                let here = plan.plan.stream_here().build_all().ok().unwrap();
                for workers in [1, 2, 3] {
                    let built = on_threads(&plan, workers).ok().unwrap();
                    assert_eq!(built, here, "{bounds:?}, {batch_rows} rows a batch");
                }
            }
        }
    }

    #[test]
    fn a_bad_row_ends_the_batches_at_the_first_one_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        // The schema comes from the first 100 rows; rows 500 and 800 have a field it lacks.
        let store = store(&dir, 1000, &[500, 800]);
        let plan = plan(
            &store,
            request((Bound::Unbounded, Bound::Unbounded), 16),
            Some(100),
        );
        assert_eq!(bad_key(plan.plan.stream_here().build_all()), key(500));
        // Chunks are decoded in any order: the first bad row in key order must win each time.
        for _ in 0..20 {
            assert_eq!(bad_key(on_threads(&plan, 3)), key(500));
        }
    }

    #[test]
    fn a_stream_dropped_early_stops_its_threads_and_lets_go_of_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        // Far more rows than the threads read ahead: the walk cannot have ended on its own
        // when the first batch arrives (with 1,000 it sometimes had, on a busy machine).
        let store = store(&dir, 100_000, &[]);
        let plan = plan(
            &store,
            request((Bound::Unbounded, Bound::Unbounded), 8),
            None,
        );
        // This test and the plan hold the snapshot, once the threads that inferred the
        // plan's schema (over the whole scan) have let go of it: their walk drops its hold
        // as it returns, after the stream it fed has ended, and on a busy machine it may
        // not have returned yet.
        let idle = 2;
        let let_go = |what: &str| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while Arc::strong_count(&plan.view) > idle {
                assert!(std::time::Instant::now() < deadline, "{what}");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        let_go("the inference still runs");
        let mut threads =
            Parallel::start(&plan.view, &plan.request, 2, || Decode::new(&plan.plan)).unwrap();
        assert_eq!(threads.next().ok().unwrap().unwrap().num_rows(), 8);
        assert!(
            Arc::strong_count(&plan.view) > idle,
            "the walk holds the snapshot"
        );
        drop(threads);
        let_go("the walk still runs");
    }

    #[test]
    fn a_stopped_export_ends_at_its_next_batch_and_its_inference_at_its_next_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir, 5000, &[]);
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stoppable = ExportRequest {
            stop: Stop::when(Arc::clone(&flag)),
            ..request((Bound::Unbounded, Bound::Unbounded), 100)
        };
        let planned = plan(&store, stoppable.clone(), None);
        let mut stream = planned.plan.stream();
        assert_eq!(stream.next().unwrap().unwrap().num_rows(), 100);
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
        let stopped = stream.next().unwrap().unwrap_err().to_string();
        assert!(stopped.contains("was stopped"), "{stopped}");
        assert!(
            stream.next().is_none(),
            "the stream ends at its first error"
        );
        let stopped = |shape: Result<_, crate::Error>| {
            matches!(shape, Err(crate::Error::Store(StoreError::Stopped(_))))
        };
        assert!(stopped(shape_here(&planned.view, &stoppable, None)));
        let on_threads = shape_on_threads(&planned.view, &stoppable, 2).unwrap();
        assert!(stopped(on_threads));
        assert!(matches!(
            Plan::collect(&store, stoppable),
            Err(crate::Error::Store(StoreError::Stopped(_)))
        ));
    }
}
