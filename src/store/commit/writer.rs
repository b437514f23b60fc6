//! The writer lock a transaction holds, and the pauses of user writes (a switchover's, a
//! streamed load's).

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::time::Instant;

use super::{Pipeline, Refused, State};

impl Pipeline {
    /// Waits until no transaction holds the writer lock (refusing if this thread holds it),
    /// or until `deadline` ([`Refused::Busy`]).
    pub(super) fn wait_writer_free<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> Result<MutexGuard<'a, State>, Refused> {
        let me = std::thread::current().id();
        loop {
            if let Some(closed) = &state.closed {
                return Err(Refused::Closed(closed.cause()));
            }
            match state.writer {
                None => return Ok(state),
                Some(owner) if owner == me => return Err(Refused::WouldDeadlock),
                Some(_) => {
                    state = match deadline {
                        None => self
                            .writer_free
                            .wait(state)
                            .unwrap_or_else(std::sync::PoisonError::into_inner),
                        Some(deadline) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                return Err(Refused::Busy);
                            }
                            self.writer_free
                                .wait_timeout(state, left)
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .0
                        }
                    };
                }
            }
        }
    }

    /// Takes the writer lock for a transaction on this thread, waiting until `deadline`.
    pub(crate) fn acquire_writer(&self, deadline: Option<Instant>) -> Result<(), Refused> {
        let mut state = self.wait_writer_free(self.lock(), deadline)?;
        state.writer = Some(std::thread::current().id());
        self.writer_held.store(true, Ordering::Release);
        Ok(())
    }

    /// Waits until no transaction holds the writer lock, or `deadline` passes (`Busy`).
    pub(crate) fn writer_free_by(&self, deadline: Instant) -> Result<(), Refused> {
        self.wait_writer_free(self.lock(), Some(deadline)).map(drop)
    }

    /// Releases the writer lock (transaction aborted or read-only).
    pub(crate) fn release_writer(&self) {
        self.lock().writer = None;
        self.writer_held.store(false, Ordering::Release);
        self.writer_free.notify_all();
    }

    /// Whether a transaction may hold the writer lock, without taking any lock: a `false`
    /// lets a blind write skip the interruptible wait.
    pub(crate) fn writer_maybe_held(&self) -> bool {
        self.writer_held.load(Ordering::Acquire)
    }

    /// Marks whether a streamed bulk load holds the writer lock (see
    /// [`Pipeline::streaming_here`]).
    pub(crate) fn set_streaming(&self, streaming: bool) {
        self.streaming.store(streaming, Ordering::Release);
    }

    /// Whether a streamed bulk load holds the writer lock on this thread: closing the store
    /// here would wait for the load's own applying thread, which waits for this one.
    pub(crate) fn streaming_here(&self) -> bool {
        self.streaming.load(Ordering::Acquire)
            && self.lock().writer == Some(std::thread::current().id())
    }

    /// Refuses user writes from now on with `reason` (replicated entries still go in);
    /// returns the last LSN taken, which becomes visible as usual.
    pub(crate) fn pause(&self, reason: String) -> u64 {
        let mut state = self.lock();
        state.paused = Some(reason);
        self.paused.store(true, Ordering::Release);
        state.next_lsn - 1
    }

    /// Takes user writes again.
    pub(crate) fn resume(&self) {
        self.lock().paused = None;
        self.paused.store(false, Ordering::Release);
    }

    /// Why user writes are paused, if they are (cheap when they are not). A write that
    /// passes this check is still refused where its LSN would be taken.
    pub(crate) fn paused(&self) -> Option<String> {
        if !self.paused.load(Ordering::Acquire) {
            return None;
        }
        self.lock().paused.clone()
    }
}
