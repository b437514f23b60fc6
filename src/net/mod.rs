//! The process's tokio runtime and what every server and client of the core shares:
//! connection caps, write timeouts, tasks tied to their owner.

pub mod admission;
pub mod client;
pub mod heard;
pub mod rated;
pub mod server;
pub mod stall;

use std::sync::atomic::{AtomicPtr, Ordering};

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::fork::Owner;

/// A runtime and the process it was started in.
struct Started {
    owner: Owner,
    runtime: Runtime,
}

/// The runtime in use. Published runtimes are leaked, never freed (an inherited one cannot
/// even be shut down: its threads are gone), so a pointer once stored stays valid. A lock
/// would not do: a mutex held by another thread at `fork()` stays locked forever in the child.
static CURRENT: AtomicPtr<Started> = AtomicPtr::new(std::ptr::null_mut());

#[allow(unsafe_code)]
fn published(ptr: *mut Started) -> Option<&'static Started> {
    // SAFETY: only pointers from `Box::into_raw` are stored in CURRENT, and they are never
    // freed once stored.
    unsafe { ptr.as_ref() }
}

#[allow(unsafe_code)]
fn discard_unpublished(ptr: *mut Started) {
    // SAFETY: `ptr` came from `Box::into_raw` and lost the race to be stored, so nothing
    // else refers to it.
    let started = unsafe { Box::from_raw(ptr) };
    started.runtime.shutdown_background();
}

/// One tokio runtime per process, started on first use and owned by the core. A child
/// forked after it started gets its own: the parent's worker threads do not exist there.
///
/// # Panics
/// If the operating system refuses to start its threads (nothing can run without them).
pub fn runtime() -> &'static Runtime {
    loop {
        let seen = CURRENT.load(Ordering::Acquire);
        if let Some(started) = published(seen).filter(|s| !s.owner.inherited()) {
            return &started.runtime;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers())
            .thread_name("replikv-net")
            .enable_all()
            .build()
            .expect("invariant: the tokio runtime can start its threads");
        let fresh = Box::into_raw(Box::new(Started {
            owner: Owner::current(),
            runtime,
        }));
        if CURRENT
            .compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Another thread started one first: the loop returns that one.
            discard_unpublished(fresh);
        }
    }
}

/// Worker threads of the runtime: one on a machine of two cores or fewer, two above. The
/// network's work is wake-ups more than computing; on two cores each wake-up of a second
/// worker preempted a writer (and the first worker handed it tasks to steal), and async
/// writers beside a sync writer lost a tenth of their rate to it (`benches/bench_sync.py`).
fn workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if cores <= 2 {
        1
    } else {
        2
    }
}

/// A task that is aborted when this handle is dropped, however its owner ends (returns,
/// fails, or is itself cancelled).
pub struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
