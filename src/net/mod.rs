//! The process's tokio runtime and what every server and client of the core shares:
//! connection caps, write timeouts, tasks tied to their owner.

pub mod admission;
pub mod stall;

use std::sync::OnceLock;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// One tokio runtime per process, started on first use and owned by the core.
///
/// # Panics
/// If the operating system refuses to start its threads (nothing can run without them).
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("replikv-net")
            .enable_all()
            .build()
            .expect("invariant: the tokio runtime can start its threads")
    })
}

/// A task that is aborted when this handle is dropped, however its owner ends (returns,
/// fails, or is itself cancelled).
pub struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
