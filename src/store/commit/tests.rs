//! The commit pipeline's leading and syncing, without a store.

use super::*;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

/// The sync of a pipeline whose flushes are all durable: never called.
fn no_sync() -> crate::Result<()> {
    unreachable!("every flush was durable")
}

/// A streamed load's entry is led by its own thread only: another thread waiting for
/// it (a close draining the pipeline, a switchover pausing writes) waits, and never
/// flushes it with a flush that would not commit its rows.
#[test]
fn an_entry_enqueued_keeping_the_writer_is_led_by_its_own_thread_only() {
    let pipeline = Arc::new(Pipeline::new(1, 1, 0));
    pipeline.acquire_writer(None).ok().unwrap();
    let lsn = pipeline
        .enqueue(
            Some((b"body", 0)),
            Vec::new(),
            WriterLock::Keep,
            false,
            |_| {},
        )
        .ok()
        .unwrap()
        .lsn;
    let others = Arc::new(AtomicUsize::new(0));
    let waiter = {
        let (pipeline, others) = (Arc::clone(&pipeline), Arc::clone(&others));
        std::thread::spawn(move || {
            let flush = |_: &Batch| -> crate::Result<Flushed> {
                others.fetch_add(1, Ordering::SeqCst);
                Ok(Flushed::Durable)
            };
            pipeline.wait_visible(lsn, &(flush, no_sync)).is_ok()
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        pipeline.visible_lsn(),
        0,
        "nobody else led the reserved entry"
    );
    let led = AtomicUsize::new(0);
    let flush = |batch: &Batch| -> crate::Result<Flushed> {
        assert_eq!(batch.entries.len(), 1);
        led.fetch_add(1, Ordering::SeqCst);
        Ok(Flushed::Durable)
    };
    assert!(pipeline.wait_visible(lsn, &(flush, no_sync)).is_ok());
    assert!(
        waiter.join().unwrap(),
        "the waiter returns once it is visible"
    );
    assert_eq!(
        (led.load(Ordering::SeqCst), others.load(Ordering::SeqCst)),
        (1, 0)
    );
    pipeline.release_writer();
}

/// A follower's batch is readable once flushed and visible once a sync ends: waiters
/// for it share one sync, and the listeners hear of it from that sync.
#[test]
fn a_written_batch_is_readable_at_once_and_visible_after_one_shared_sync() {
    let pipeline = Arc::new(Pipeline::new(1, 1, 0));
    let heard = Arc::new(AtomicUsize::new(0));
    {
        let heard = Arc::clone(&heard);
        pipeline.subscribe(Arc::new(move |lsn| {
            heard.fetch_max(usize::try_from(lsn).unwrap(), Ordering::SeqCst);
        }));
    }
    for _ in 0..3 {
        pipeline
            .enqueue_replicated(b"x", pipeline.last_assigned() + 1, 1, 0, Vec::new())
            .ok()
            .unwrap();
    }
    let syncs = Arc::new(AtomicUsize::new(0));
    let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
    let gate = Mutex::new(gate_rx);
    let written = |_: &Batch| -> crate::Result<Flushed> { Ok(Flushed::Written) };
    let sync = || -> crate::Result<()> {
        syncs.fetch_add(1, Ordering::SeqCst);
        // Held until the test lets it end, so that a second waiter finds it running.
        gate.lock().unwrap().recv().unwrap();
        Ok(())
    };
    pipeline
        .wait(3, Until::Readable, &(written, sync))
        .ok()
        .unwrap();
    assert_eq!((pipeline.readable_lsn(), pipeline.visible_lsn()), (3, 0));
    assert_eq!(heard.load(Ordering::SeqCst), 0, "nothing is visible yet");
    std::thread::scope(|scope| {
        let waiters: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| pipeline.wait_visible(3, &(written, sync)).is_ok()))
            .collect();
        while !pipeline.lock().syncing {
            std::thread::yield_now();
        }
        gate_tx.send(()).unwrap();
        for waiter in waiters {
            assert!(waiter.join().unwrap());
        }
    });
    assert_eq!(
        syncs.load(Ordering::SeqCst),
        1,
        "one sync served both waiters"
    );
    assert_eq!(pipeline.visible_lsn(), 3);
    assert_eq!(heard.load(Ordering::SeqCst), 3);
}

/// A clock set back between two runs (or a promoted replica's, behind its old primary's)
/// does not make an entry older than the log's last: the feed's times never go back.
#[test]
fn an_entry_is_never_older_than_the_last_one_the_log_held_at_open() {
    let ahead = now_ms() + 3_600_000;
    let pipeline = Pipeline::new(8, 1, ahead);
    let taken = pipeline
        .enqueue(
            Some((b"body", 0)),
            Vec::new(),
            WriterLock::NotHeld,
            false,
            |_| {},
        )
        .ok()
        .unwrap();
    assert_eq!((taken.lsn, taken.timestamp_ms), (8, ahead));
}
