//! The process's tokio runtime, shared by every server and client of the core.

use std::sync::OnceLock;

use tokio::runtime::Runtime;

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
