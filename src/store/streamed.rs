//! A bulk load committed as one entry whose rows go into the log and the tables while the
//! caller is still encoding them: each chunk is written to the log past its end (a record
//! without its header yet, see [`crate::log::RecordWriter`]), and a thread of its own
//! applies it inside one redb write transaction, committed only once the whole entry is
//! durable in the log. On two cores the encoding (often Python's), the log writes and
//! redb's inserts then overlap instead of running one after the other, and the entry's
//! body is never held in memory whole.
//!
//! The load holds the writer lock from its first chunk to its commit, so no other entry
//! can come between its rows and its LSN: it leads its own batch, after every earlier
//! entry is visible. Until the commit nothing is part of the store, so an error or an
//! abandoned load (Ctrl-C, a row that cannot be encoded) leaves the store as it was, its
//! log zeroed again past its end.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::commit::{Batch, Flushed, Taken, WriterLock};
use super::durability::{self, Committed, Durability, SyncReplication};
use super::tables::Streamed;
use super::Store;
use crate::codec::EncodedOps;
use crate::error::{Result, StoreError};
use crate::log::RecordWriter;

/// Chunks encoded ahead of the applying thread at most: a caller that encodes faster than
/// redb inserts (the usual case) then waits, rather than holding the whole load in memory.
const CHUNKS_AHEAD: usize = 4;

/// A load whose entry is this large gives the memory it freed back before it returns.
const TRIM_AFTER_BYTES: usize = 16 << 20;

/// The applying thread's outcome: the LSN it committed, or `None` if the load was given up.
type Applied = Result<Option<u64>>;

/// A bulk load in progress (see the module docs); dropping it gives the load up.
pub struct StreamedCommit {
    store: Store,
    durability: Durability,
    replication: Option<Arc<dyn SyncReplication>>,
    /// The entry's record, written to the log as its chunks come (`None` once finished).
    record: Option<RecordWriter>,
    chunks: Option<mpsc::SyncSender<Streamed>>,
    applier: Option<JoinHandle<Applied>>,
    /// Tells the applying thread to stop at its next chunk (a load given up).
    abort: Arc<AtomicBool>,
    /// A push failed: the body may hold ops the tables never got, so it never commits.
    failed: bool,
}

impl std::fmt::Debug for StreamedCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedCommit")
            .field("store", &self.store.path())
            .field("durability", &self.durability)
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Begins a bulk load whose first ops are `first` (non-empty; their tables decide the
    /// default durability, as for [`Store::commit`]). Waits for the writer lock and for
    /// every earlier entry to become visible.
    ///
    /// # Errors
    /// As [`Store::commit`] before anything is written: invalid names or sizes, a follower,
    /// a sync write that cannot be acknowledged, a closed store; a transaction open on this
    /// thread.
    pub fn begin_streamed(
        &self,
        first: EncodedOps,
        durability: Option<Durability>,
    ) -> Result<StreamedCommit> {
        self.check_process()?;
        self.check_usable()?;
        self.check_writable()?;
        let (durability, replication) =
            self.resolve_durability(first.iter().map(|op| op.table), durability)?;
        self.check_ops(first.iter())?;
        let pipeline = &self.inner.pipeline;
        pipeline.acquire_writer(None).map_err(|r| self.refused(r))?;
        pipeline.set_streaming(true);
        // Checked again under the writer lock: a handover or a promotion elsewhere may have
        // made this store a follower while the load waited for the lock.
        let started = self
            .check_writable()
            .and_then(|()| self.drain())
            .and_then(|()| {
                self.with_open(|open| {
                    let record = open.log.begin_record().map_err(|e| self.not_written(e))?;
                    Ok((open.tables.clone(), open.overlay.clone(), record))
                })
            });
        let (tables, overlay, record) = match started {
            Ok(started) => started,
            Err(err) => {
                pipeline.set_streaming(false);
                pipeline.release_writer();
                return Err(err);
            }
        };
        let (chunks, received) = mpsc::sync_channel(CHUNKS_AHEAD);
        let abort = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&abort);
        let applier = std::thread::Builder::new()
            .name("replikv-bulk".into())
            .spawn(move || overlay.apply_streamed(&tables, &received, &stop));
        let applier = match applier {
            Ok(applier) => applier,
            Err(err) => {
                pipeline.set_streaming(false);
                pipeline.release_writer();
                return Err(bulk_error(self, err));
            }
        };
        let mut load = StreamedCommit {
            store: self.clone(),
            durability,
            replication,
            record: Some(record),
            chunks: Some(chunks),
            applier: Some(applier),
            abort,
            failed: false,
        };
        load.push(first)?;
        Ok(load)
    }
}

impl StreamedCommit {
    /// Adds `ops` to the entry; they are applied (uncommitted) while the caller goes on.
    /// Waits while the applying thread is [`CHUNKS_AHEAD`] chunks behind.
    ///
    /// # Errors
    /// Invalid names or sizes, an entry past `max_transaction_bytes`, or a failure of the
    /// applying thread: the load is then given up (drop it).
    pub fn push(&mut self, ops: EncodedOps) -> Result<()> {
        let sent = self
            .store
            .check_ops(ops.iter())
            .and_then(|()| self.send(ops));
        self.failed |= sent.is_err();
        sent
    }

    fn send(&mut self, ops: EncodedOps) -> Result<()> {
        if self.failed {
            return Err(bulk_error(
                &self.store,
                io::Error::other("an earlier push failed"),
            ));
        }
        // A store closed meanwhile (by another thread) refuses the load now, not after
        // every row is encoded: its close waits for this load to end.
        if self.store.inner.pipeline.is_closed() {
            return Err(self.store.closed_error(self.store.inner.pipeline.failure()));
        }
        let record = self
            .record
            .as_mut()
            .expect("invariant: a load is pushed to before its commit");
        self.store
            .check_body(record.body_len() + ops.as_bytes().len())?;
        self.store
            .with_open(|open| open.log.write_ops(record, &ops))
            .map_err(|e| self.store.not_written(e))?;
        let sent = self
            .chunks
            .as_ref()
            .is_some_and(|chunks| chunks.send(Streamed::Ops(ops)).is_ok());
        if sent {
            Ok(())
        } else {
            // The applying thread stopped: it says why.
            Err(self.stop_applier())
        }
    }

    /// Waits for the applying thread after telling it to stop (or after it stopped); its
    /// error, or one saying it gave up.
    fn stop_applier(&mut self) -> crate::Error {
        self.chunks = None;
        match self.applier.take().map(JoinHandle::join) {
            Some(Ok(Err(err))) => err,
            Some(Err(_)) => bulk_error(
                &self.store,
                io::Error::other("its applying thread panicked"),
            ),
            _ => bulk_error(&self.store, io::Error::other("its applying thread stopped")),
        }
    }

    /// Commits the entry: finishes its log record (its header, then the fdatasync) while
    /// the last chunks are applied, then commits the tables; returns once it is visible, like
    /// [`Store::commit_pending`].
    ///
    /// # Errors
    /// As [`Store::commit`]. A failure after the log append closes the store (the entry is
    /// durable: reopening replays it).
    pub fn commit(mut self) -> Result<Committed> {
        let store = self.store.clone();
        store.check_process()?;
        if self.failed {
            return Err(bulk_error(
                &store,
                io::Error::other("a push failed: nothing is written"),
            ));
        }
        // Before the entry is durable: an applying thread that already stopped (it failed)
        // is reported with nothing written, rather than after the log append.
        if self.applier.as_ref().is_none_or(JoinHandle::is_finished) {
            return Err(self.stop_applier());
        }
        // Under the writer lock, as a transaction's commit checks it.
        store.check_writable()?;
        let bytes = self.record.as_ref().map_or(0, RecordWriter::len);
        let replication = self.replication.clone();
        let taken = store
            .inner
            .pipeline
            .enqueue(None, Vec::new(), WriterLock::Keep, false, |lsn| {
                if let Some(replication) = &replication {
                    replication.will_wait(lsn);
                }
            })
            .map_err(|r| store.refused(r))?;
        let lsn = taken.lsn;
        let durability = self.durability;
        let load = RefCell::new(&mut self);
        let leader = (
            |_: &Batch| {
                load.borrow_mut()
                    .flush(taken, bytes)
                    .map(|()| Flushed::Durable)
            },
            || store.sync_log(),
        );
        store
            .inner
            .pipeline
            .wait_visible(lsn, &leader)
            .map_err(|r| store.refused(r))?;
        if bytes >= TRIM_AFTER_BYTES {
            // The load's chunks were allocated on this thread (and freed by the applying
            // one): given back here, inside the call that took them, rather than by the
            // checkpointer's next trim, which would hold this thread's malloc arena while
            // its next put allocates (10-15 ms after a load of 1M rows).
            super::trim::release_free_memory();
        }
        Ok(durability::committed(lsn, durability, replication))
    }

    /// The batch's leader work (the batch is this entry alone, `bytes` long): the end of
    /// the log append, then the tables' commit, then the watchers.
    fn flush(&mut self, taken: Taken, bytes: usize) -> Result<()> {
        let store = self.store.clone();
        let lsn = taken.lsn;
        store.with_open(|open| {
            if let Some(cause) = open.checkpointer.failure() {
                return Err(store.closed_error(Some(cause)));
            }
            let record = self
                .record
                .take()
                .expect("invariant: a load's record is finished once");
            open.log
                .finish_record(record, lsn, taken.epoch, taken.timestamp_ms)?;
            let committed = self
                .chunks
                .take()
                .is_some_and(|chunks| chunks.send(Streamed::Commit(lsn)).is_ok());
            let applied = match self.applier.take().map(JoinHandle::join) {
                Some(Ok(applied)) if committed => applied?,
                _ => None,
            };
            if applied != Some(lsn) {
                return Err(bulk_error(
                    &store,
                    io::Error::other("its applying thread stopped before the commit"),
                ));
            }
            open.checkpointer
                .note(1, bytes as u64, open.overlay.is_full());
            // The watchers (rarely any) read the entry back rather than every load keeping
            // its ops until the commit.
            store.inner.watchers.tell_read(lsn, || {
                let mut position = crate::log::LogPosition::after(lsn - 1);
                let mut entries = open.log.read(&mut position, lsn, 1, usize::MAX)?;
                Ok(entries.pop().map(|entry| entry.ops).unwrap_or_default())
            })
        })
    }
}

fn bulk_error(store: &Store, source: io::Error) -> crate::Error {
    StoreError::Io {
        context: "bulk load into",
        path: store.path().to_path_buf(),
        source,
    }
    .into()
}

impl Drop for StreamedCommit {
    fn drop(&mut self) {
        // In a forked child the applying thread and the writer lock are the parent's.
        if self.store.check_process().is_err() {
            std::mem::forget(self.applier.take());
            return;
        }
        // Given up (or committed: then both are gone already). The applying thread drops
        // its transaction at its next chunk, or once the channel closes.
        self.abort.store(true, Ordering::Release);
        self.chunks = None;
        if let Some(record) = self.record.take() {
            // Only while the store is open here, which holds off its close: once closed,
            // another process may append to its log, and recovery cuts the record, still
            // marked unfinished.
            let mut failed = None;
            let _ = self.store.with_open(|_| {
                failed = record.abandon().err();
                Ok(())
            });
            if let Some(source) = failed {
                let err = bulk_error(&self.store, source);
                let pipeline = &self.store.inner.pipeline;
                pipeline.fail_outside(&err, "clearing a given-up bulk load from the log");
            }
        }
        if let Some(applier) = self.applier.take() {
            let _ = applier.join();
        }
        let pipeline = &self.store.inner.pipeline;
        pipeline.set_streaming(false);
        pipeline.release_writer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_key, KeyRef, Op};
    use crate::store::StoreOptions;

    fn ops(table: &str, from: usize, count: usize) -> Vec<Op> {
        (from..from + count)
            .map(|i| Op {
                table: table.to_owned(),
                key: encode_key(KeyRef::Str(&format!("k{i:08}"))),
                value: Some(format!("value {i}").into_bytes()),
            })
            .collect()
    }

    fn encoded(ops: &[Op]) -> EncodedOps {
        let mut encoded = EncodedOps::default();
        encoded.extend(ops);
        encoded
    }

    fn value(store: &Store, table: &str, i: usize) -> Option<Vec<u8>> {
        let key = encode_key(KeyRef::Str(&format!("k{i:08}")));
        store
            .get_with(table, &key, |v| v.map(<[u8]>::to_vec))
            .unwrap()
    }

    fn streamed(store: &Store, chunks: Vec<Vec<Op>>) -> Result<Committed> {
        let mut chunks = chunks.into_iter();
        let mut load = store.begin_streamed(encoded(&chunks.next().unwrap()), None)?;
        for chunk in chunks {
            load.push(encoded(&chunk))?;
        }
        load.commit()
    }

    #[test]
    fn a_streamed_load_is_one_entry_equal_to_a_plain_commit() {
        let dir = tempfile::tempdir().unwrap();
        let plain = Store::open(dir.path().join("plain"), StoreOptions::default()).unwrap();
        let store = Store::open(dir.path().join("streamed"), StoreOptions::default()).unwrap();
        for s in [&plain, &store] {
            s.commit(ops("t", 0, 10), None).unwrap();
            s.commit(ops("other", 0, 3), None).unwrap();
        }
        // Overwrites some rows, adds others, and deletes one, in chunks of uneven sizes.
        let mut all = ops("t", 5, 9000);
        all.push(Op {
            table: "other".into(),
            key: encode_key(KeyRef::Str("k00000001")),
            value: None,
        });
        plain.commit(all.clone(), None).unwrap();
        let chunks = vec![
            all[..4096].to_vec(),
            all[4096..4100].to_vec(),
            all[4100..].to_vec(),
        ];
        let committed = streamed(&store, chunks).unwrap();
        assert_eq!(committed.lsn(), 3);
        assert_eq!(store.last_lsn(), 3);
        assert_eq!(store.checksum().unwrap(), plain.checksum().unwrap());
        assert_eq!(value(&store, "t", 9004), Some(b"value 9004".to_vec()));
        assert_eq!(value(&store, "other", 1), None);
        let mut position = crate::log::LogPosition::after(2);
        let entries = store.read_log(&mut position, 10, usize::MAX).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].ops, all, "the log holds every op, in order");
        // The tables and a replay of the log agree after a reopen.
        let sums = store.checksum().unwrap();
        store.close().unwrap();
        let reopened = Store::open(dir.path().join("streamed"), StoreOptions::default()).unwrap();
        assert_eq!(reopened.checksum().unwrap(), sums);
        assert_eq!(value(&reopened, "t", 9004), Some(b"value 9004".to_vec()));
    }

    #[test]
    fn watchers_are_told_every_op_of_a_streamed_load_and_nothing_of_one_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&told);
        let _watching = store.watch_writes(Arc::new(move |watched| {
            if let crate::store::Watched::Written { lsn, ops } = watched {
                sink.lock().unwrap().push((lsn, ops.to_vec()));
            }
        }));
        drop(
            store
                .begin_streamed(encoded(&ops("t", 0, 10)), None)
                .unwrap(),
        );
        let all = ops("t", 0, 9000);
        let chunks = vec![all[..4096].to_vec(), all[4096..].to_vec()];
        assert_eq!(streamed(&store, chunks).unwrap().lsn(), 1);
        assert_eq!(*told.lock().unwrap(), vec![(1, all)]);
    }

    #[test]
    fn a_load_given_up_writes_nothing_and_frees_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store.commit(ops("t", 0, 1), None).unwrap();
        let before = store.checksum().unwrap();
        let mut load = store
            .begin_streamed(encoded(&ops("t", 100, 5000)), None)
            .unwrap();
        load.push(encoded(&ops("t", 5100, 5000))).unwrap();
        // Not yet committed: readers see nothing of it.
        assert_eq!(value(&store, "t", 100), None);
        drop(load);
        assert_eq!(store.last_lsn(), 1);
        assert_eq!(store.checksum().unwrap(), before);
        assert_eq!(value(&store, "t", 100), None);
        // The writer lock is free, and the redb transaction was aborted.
        store.commit(ops("t", 1, 5000), None).unwrap();
        assert_eq!(value(&store, "t", 4000), Some(b"value 4000".to_vec()));
        assert_eq!(store.last_lsn(), 2);
    }

    #[test]
    fn a_load_past_the_transaction_limit_is_refused_with_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            max_transaction_bytes: 200_000,
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), options).unwrap();
        let mut load = store
            .begin_streamed(encoded(&ops("t", 0, 4096)), None)
            .unwrap();
        let err = load.push(encoded(&ops("t", 4096, 4096))).unwrap_err();
        assert!(err.to_string().contains("transaction"), "{err}");
        drop(load);
        assert_eq!(store.last_lsn(), 0);
        assert_eq!(value(&store, "t", 1), None);
    }

    #[test]
    fn other_writers_wait_for_a_load_and_come_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let load = store
            .begin_streamed(encoded(&ops("t", 0, 5000)), None)
            .unwrap();
        let other = store.clone();
        let writer = std::thread::spawn(move || other.commit(ops("t", 0, 1), None).unwrap().lsn);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(store.last_lsn(), 0, "the other write waits for the load");
        assert_eq!(load.commit().unwrap().lsn(), 1);
        assert_eq!(writer.join().unwrap(), 2);
        assert_eq!(value(&store, "t", 0), Some(b"value 0".to_vec()));
    }

    #[test]
    fn closing_from_the_loading_thread_is_refused_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let load = store
            .begin_streamed(encoded(&ops("t", 0, 5000)), None)
            .unwrap();
        let err = store.close().unwrap_err();
        assert!(err.to_string().contains("inside a bulk write"), "{err}");
        load.commit().unwrap();
        store.close().unwrap();
    }
}
