//! Why the pipeline stops taking commits, and why a commit did not become visible.

use std::io;

/// Why the pipeline stopped taking commits.
#[derive(Debug, Clone)]
pub(crate) enum Closed {
    Requested,
    Failed(Failure),
}

/// The failure that closed the pipeline.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// What failed, and why.
    pub cause: String,
    /// The operating system's error behind it, if one was: its kind and errno.
    pub os: Option<(io::ErrorKind, Option<i32>)>,
    /// What damage it found in the tables, if that is what failed (the writers it failed
    /// get a corruption error).
    pub corrupt: Option<String>,
}

impl Failure {
    pub(super) fn of(err: &crate::Error) -> Self {
        Self {
            // A store that closed itself already (its checkpointer failed) names that cause:
            // the store's error says it is closed once.
            cause: match err {
                crate::Error::Store(crate::error::StoreError::Closed {
                    cause: Some(cause),
                    ..
                }) => cause.clone(),
                _ => err.to_string(),
            },
            os: err.io_source().map(|io| (io.kind(), io.raw_os_error())),
            corrupt: match err {
                crate::Error::Store(crate::error::StoreError::Corrupt { reason }) => {
                    Some(reason.clone())
                }
                _ => None,
            },
        }
    }

    /// The operating system's error again (an `io::Error` cannot be cloned): the same
    /// errno, else the same kind.
    pub fn os_error(&self) -> Option<io::Error> {
        self.os.map(|(kind, errno)| match errno {
            Some(errno) => io::Error::from_raw_os_error(errno),
            None => io::Error::new(kind, self.cause.clone()),
        })
    }
}

impl Closed {
    pub(super) fn cause(&self) -> Option<String> {
        match self {
            Closed::Requested => None,
            Closed::Failed(failure) => Some(failure.cause.clone()),
        }
    }
}

/// Why a commit did not become visible.
pub(crate) enum Refused {
    Closed(Option<String>),
    /// A flush or sync failed while the commit waited, and the pipeline closed; the commit
    /// may or may not have reached the log durably.
    Failed(Failure),
    WouldDeadlock,
    /// A replicated entry whose LSN is not the next one.
    OutOfOrder {
        expected: u64,
        got: u64,
    },
    /// The writer lock was still held when the caller's patience ran out.
    Busy,
    /// User writes are paused, for this reason.
    Paused(String),
    /// The log had no room for the write (or for one before it in its batch): nothing of it
    /// was written, and the store stays open.
    NotWritten(Failure),
}
