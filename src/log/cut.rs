//! Cutting dropped segments down before they go, on one thread per log.
//!
//! On a file system mounted with `discard`, removing a file discards its blocks, and a log
//! sync meanwhile waits for that: about 1 ms per MiB on the disks measured. So a dropped
//! segment is renamed out of the log (see [`super::Log::remove_segment`]) and cut down
//! [`SHRINK_STEP`] at a time with [`SHRINK_PAUSE`] between cuts: a put waits a quarter of
//! a millisecond at most, now and then, and a 64 MiB segment goes in a little over a
//! second (in 2 MiB steps 2 ms apart, every put for the 200 ms it took to cut a bulk
//! load's 100 MB segment waited 2 ms, ten times the median).
//!
//! That is about 60 MB/s. A load that drops segments faster would keep the disk above the
//! store's retention cap for as long as it runs (a thread per drop, each waiting for its
//! turn, used to pile up meanwhile): once more than four of the log's largest segments
//! wait (at most [`HURRY_BACKLOG`]), the cutter goes at the disk's speed until it is back
//! under. Segments are at most a quarter of a size cap, so a log with a small cap stays
//! within about twice its cap on disk however fast it is written. A log being dropped (a store closing)
//! removes what is left at once; whatever a crash leaves is removed at the next open.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::fs::LogFs;
use super::Segment;

/// A dropped segment's file is cut by this much at a time...
pub(super) const SHRINK_STEP: u64 = 256 << 10;
/// ...with this pause between cuts...
const SHRINK_PAUSE: Duration = Duration::from_millis(4);
/// ...while no more than four of the largest segments, and never more than this, wait.
const HURRY_BACKLOG: u64 = 256 << 20;

#[derive(Default)]
struct Queue {
    /// Renamed segments and their new names, oldest first.
    segments: VecDeque<(Segment, String)>,
    /// Bytes left to cut, the segment being cut included.
    backlog: u64,
    /// A thread is cutting.
    running: bool,
    /// The log is going: cut nothing more, remove at once.
    hurry: bool,
}

/// The log's cutter: a queue of renamed segments and the thread that empties it.
pub(super) struct Cutter {
    fs: Arc<dyn LogFs>,
    /// Bytes waiting beyond which the cut hurries.
    pub(super) hurry_backlog: u64,
    queue: Mutex<Queue>,
    /// The thread that runs, and any that ended without being joined yet.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Cutter {
    /// A cutter for a log whose segments grow to `largest_segment` bytes.
    pub(super) fn new(fs: Arc<dyn LogFs>, largest_segment: u64) -> Arc<Self> {
        Arc::new(Self {
            fs,
            hurry_backlog: largest_segment.saturating_mul(4).min(HURRY_BACKLOG),
            queue: Mutex::default(),
            threads: Mutex::default(),
        })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues renamed `segments` (with their sizes) to be cut down and removed, starting
    /// the thread if none runs.
    ///
    /// # Errors
    /// The thread cannot start: the segments stay queued for the next one (or for the next
    /// open, which removes them).
    pub(super) fn cut(
        self: &Arc<Self>,
        segments: Vec<(Segment, String, u64)>,
    ) -> std::io::Result<()> {
        let mut queue = self.queue();
        for (segment, name, size) in segments {
            queue.backlog += size;
            queue.segments.push_back((segment, name));
        }
        if queue.running || queue.segments.is_empty() {
            return Ok(());
        }
        let cutter = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("replikv-log-cut".into())
            .spawn(move || cutter.run())?;
        queue.running = true;
        drop(queue);
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        threads.retain(|thread| !thread.is_finished());
        threads.push(thread);
        Ok(())
    }

    /// Removes what is left at once and waits for the thread: the log is going.
    pub(super) fn finish(&self) {
        self.queue().hurry = true;
        self.join();
    }

    /// Removes what is queued at once and waits until it is gone; the log goes on, and
    /// what is dropped afterwards is cut gently again. For a caller that waits for the
    /// space anyway (a compaction); the log serializes callers.
    pub(super) fn rush(&self) {
        self.queue().hurry = true;
        loop {
            self.join();
            let mut queue = self.queue();
            if queue.running {
                // Started, its handle not listed yet: wait for it to be.
                drop(queue);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            if queue.segments.is_empty() {
                break;
            }
            // Queued while no thread could start: cut here.
            queue.running = true;
            drop(queue);
            self.run();
        }
        self.queue().hurry = false;
    }

    fn join(&self) {
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for thread in threads {
            let _ = thread.join();
        }
    }

    fn run(&self) {
        let _panic = OnPanic(self);
        loop {
            let next = {
                let mut queue = self.queue();
                let next = queue.segments.pop_front();
                if next.is_none() {
                    // In the same critical section as the check: a segment queued after it
                    // starts another thread.
                    queue.running = false;
                    queue.backlog = 0;
                }
                next
            };
            let Some((segment, name)) = next else { return };
            if let Err(err) = self.cut_down(segment, &name) {
                tracing::warn!(file = %name, error = %err, "could not remove a dropped log segment; the next open does");
            }
        }
    }

    /// Cuts one segment down a step at a time, then removes it. A failure leaves the file
    /// to the next open, which removes what is left under its name.
    fn cut_down(&self, segment: Segment, name: &str) -> std::io::Result<()> {
        let size = segment.file.size()?;
        let mut len = size;
        let result = (|| {
            while len > SHRINK_STEP {
                let hurry = {
                    let queue = self.queue();
                    if queue.hurry {
                        break;
                    }
                    queue.backlog > self.hurry_backlog
                };
                len -= SHRINK_STEP;
                segment.file.set_len(len)?;
                self.cut_by(SHRINK_STEP);
                if !hurry {
                    std::thread::sleep(SHRINK_PAUSE);
                }
            }
            drop(segment);
            self.fs.remove(name)
        })();
        self.cut_by(len);
        result
    }

    fn cut_by(&self, bytes: u64) {
        let mut queue = self.queue();
        queue.backlog = queue.backlog.saturating_sub(bytes);
    }

    /// Bytes left to cut, and how many threads cut.
    #[cfg(test)]
    pub(super) fn progress(&self) -> (u64, usize) {
        let threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        let running = threads.iter().filter(|t| !t.is_finished()).count();
        (self.queue().backlog, running)
    }
}

/// Marks the cutter idle if its thread panics: the next drop starts another, which cuts
/// what is left in the queue (a file the panic left is removed at the next open).
struct OnPanic<'a>(&'a Cutter);

impl Drop for OnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.queue().running = false;
        }
    }
}
