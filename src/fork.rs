//! Handles inherited through `fork()`.
//!
//! A child process gets a copy of every open store: its memory (next LSN, locks, the
//! overlay) but not its threads, and the same files. Writing through that copy hands out
//! LSNs the parent also hands out and overwrites the parent's log, so a handle is bound to
//! the process that opened it. `pthread_atfork` bumps a process generation in every child;
//! a handle compares the generation it was opened in with the current one, which costs one
//! relaxed atomic load (no `getpid` system call per operation).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

static GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn in_child() {
    // Async-signal-safe: one atomic add, no allocation, no lock.
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

#[allow(unsafe_code)]
fn register() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: `in_child` is an `extern "C"` function that only touches an atomic, which
        // is what a handler that runs in the child right after fork() may do.
        let failed = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
        // pthread_atfork only fails for lack of memory; without the handler inherited
        // handles go undetected, which is the behaviour before this module existed.
        if failed != 0 {
            tracing::warn!("pthread_atfork failed: handles used after fork() are not detected");
        }
    });
}

/// The process that opened a handle, for refusing its use in a forked child.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    generation: u64,
    pid: u32,
}

impl Owner {
    /// The current process.
    #[must_use]
    pub fn current() -> Self {
        register();
        Self {
            generation: GENERATION.load(Ordering::Relaxed),
            pid: std::process::id(),
        }
    }

    /// Whether the handle is being used in a child forked after it was opened.
    #[must_use]
    pub fn inherited(&self) -> bool {
        GENERATION.load(Ordering::Relaxed) != self.generation
    }

    /// The pid of the process that opened the handle.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid
    }
}
