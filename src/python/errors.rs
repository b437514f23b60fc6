//! The one mapping from core errors to the Python exception hierarchy of DESIGN §4, and the
//! one chokepoint that runs core calls (optionally without the GIL) and turns panics into
//! `ReplikvError` instead of letting `PanicException` escape `except Exception`.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::error::{
    CacheError, CodecError, Error, LogError, NetError, ReplicationError, StoreError,
};

/// Instantiates `replikv.exceptions.<name>(*args)` as a `PyErr` (`name` is a class, or a
/// function of that module that returns the instance).
pub(crate) fn raise<'py, A: pyo3::call::PyCallArgs<'py>>(
    py: Python<'py>,
    name: &str,
    args: A,
) -> PyErr {
    let built = py
        .import("replikv.exceptions")
        .and_then(|module| module.getattr(name))
        .and_then(|class| class.call1(args));
    match built {
        Ok(instance) => PyErr::from_value(instance),
        Err(err) => err,
    }
}

fn os_error(py: Python<'_>, source: &io::Error, message: String, path: Option<String>) -> PyErr {
    if let Some(errno) = source.raw_os_error() {
        // The class follows the errno as Python's own `OSError(errno, ...)` maps it.
        return raise(py, "_os_error", (errno, message, path));
    }
    let class = match source.kind() {
        io::ErrorKind::NotFound => "StoreNotFoundError",
        io::ErrorKind::PermissionDenied => "StorePermissionError",
        _ => "ReplikvOSError",
    };
    // No errno to give ("[Errno 0]" would be one): the message alone, which names the
    // path (an OSError with a filename but no errno shows as "[Errno None] None: ...").
    raise(py, class, (message,))
}

/// A network failure as an `OSError` subclass carrying the operating system's errno.
fn net_error(py: Python<'_>, err: &NetError, message: String) -> PyErr {
    match err.io_source() {
        Some(source) if source.kind() != io::ErrorKind::TimedOut => match source.raw_os_error() {
            Some(errno) => raise(py, "NetworkError", (errno, message)),
            None => raise(py, "NetworkError", (message,)),
        },
        _ => raise(py, "NetworkTimeout", (libc::ETIMEDOUT, message)),
    }
}

/// Maps a core error to its Python exception.
pub(crate) fn to_py(py: Python<'_>, err: Error) -> PyErr {
    let message = err.to_string();
    match err {
        Error::Store(StoreError::Closed { .. }) => raise(py, "StoreClosed", (message,)),
        // A read that ran on while its store was closed (an export's stream, a scan).
        Error::Store(StoreError::Engine(redb::Error::DatabaseClosed)) => raise(
            py,
            "StoreClosed",
            ("the store was closed while this read was running",),
        ),
        Error::Store(StoreError::Locked {
            path,
            owner,
            command,
            ..
        }) => {
            let err = raise(
                py,
                "StoreLockedError",
                (libc::EWOULDBLOCK, message, path.display().to_string()),
            );
            // An exception that refuses the attributes is still raised as it is.
            drop(err.value(py).setattr("pid", owner));
            drop(err.value(py).setattr("command", command));
            err
        }
        Error::Store(StoreError::OptionsDiffer {
            option,
            open,
            asked,
            ..
        }) => raise(py, "StoreOptionsError", (message, option, open, asked)),
        Error::Store(StoreError::ReadOnly { .. }) => raise(py, "ReadOnlyError", (message,)),
        Error::Store(StoreError::Inherited { .. }) => raise(py, "InheritedHandleError", (message,)),
        Error::Store(StoreError::OutOfOrder { .. } | StoreError::AlreadyServed { .. }) => {
            raise(py, "ReplicationError", (message,))
        }
        Error::Store(StoreError::TooLarge { .. }) => raise(py, "ValueTooLarge", (message,)),
        Error::Store(StoreError::WouldDeadlock(_)) => PyRuntimeError::new_err(message),
        Error::Store(StoreError::Corrupt { .. } | StoreError::DamagedRow { .. })
        | Error::Log(LogError::Corrupt { .. })
        | Error::Codec(CodecError::Malformed { .. }) => raise(py, "CorruptionError", (message,)),
        Error::Store(
            StoreError::Io { path, source, .. }
            | StoreError::Failed { path, source, .. }
            | StoreError::NotWritten { path, source, .. },
        ) => os_error(py, &source, message, Some(path.display().to_string())),
        Error::Store(StoreError::NotAStore { path, .. }) => raise(
            py,
            "NotAStoreError",
            (libc::EEXIST, message, path.display().to_string()),
        ),
        Error::Log(LogError::Io { source, .. } | LogError::NotWritten { source, .. })
        | Error::Store(StoreError::Engine(redb::Error::Io(source))) => {
            os_error(py, &source, message, None)
        }
        Error::Log(LogError::Truncated { .. } | LogError::Replaced { .. }) => {
            raise(py, "LogTruncated", (message,))
        }
        Error::Store(
            StoreError::InvalidTable { .. }
            | StoreError::InvalidOption { .. }
            | StoreError::Unexportable { .. },
        )
        | Error::Replication(ReplicationError::Net(NetError::Address { .. }))
        | Error::Net(NetError::Address { .. })
        | Error::Cache(CacheError::Invalid(_)) => PyValueError::new_err(message),
        Error::Replication(ReplicationError::Net(err)) | Error::Net(err) => {
            net_error(py, &err, message)
        }
        Error::Replication(ReplicationError::Diverged { fork_lsn, .. }) => {
            raise(py, "DivergedError", (message, fork_lsn))
        }
        Error::Replication(ReplicationError::Fenced { epoch, .. }) => {
            raise(py, "FencedError", (message, epoch))
        }
        Error::Replication(ReplicationError::Deposed {
            epoch,
            lsn,
            acked_by,
        }) => raise(py, "FencedError", (message, epoch, lsn, acked_by)),
        Error::Replication(ReplicationError::Timeout { lsn, acked_by }) => {
            raise(py, "ReplicationTimeout", (message, lsn, acked_by))
        }
        Error::Replication(ReplicationError::Stopped { lsn, acked_by }) => {
            raise(py, "ReplicationError", (message, lsn, acked_by))
        }
        Error::Replication(err) => {
            let class = match err {
                ReplicationError::Auth(_) => "AuthError",
                ReplicationError::Protocol(_) | ReplicationError::Version { .. } => "ProtocolError",
                ReplicationError::Paused { .. } => "WritesPausedError",
                _ => "ReplicationError",
            };
            raise(py, class, (message,))
        }
        Error::Cache(_) => raise(py, "CacheError", (message,)),
        _ => raise(py, "ReplikvError", (message,)),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Refuses a handle used in a process forked after it was opened (see `crate::fork`), or
/// used after its own `close()`.
pub(crate) fn owned(py: Python<'_>, store: &crate::store::Store) -> PyResult<()> {
    run(py, || store.check_usable())
}

/// Refuses a handle inherited across `fork` but not a closed one: for `close()`, which must
/// stay harmless on a handle whose store was closed first.
pub(crate) fn not_inherited(py: Python<'_>, store: &crate::store::Store) -> PyResult<()> {
    run(py, || store.check_process())
}

/// Runs a core call with the GIL held, mapping its error and catching panics.
pub(crate) fn run<T>(py: Python<'_>, f: impl FnOnce() -> crate::Result<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(to_py(py, err)),
        Err(payload) => Err(raise(
            py,
            "ReplikvError",
            (format!(
                "internal error (a bug in replikv): {}",
                panic_message(&*payload)
            ),),
        )),
    }
}

/// Like [`run_detached`], for long work that setting `stop` ends early: it runs on a thread
/// of its own while this one waits with the GIL released and looks for signals every
/// 50 ms. On one (Ctrl-C) it sets `stop`, waits for the work to end, and raises the
/// signal's exception.
pub(crate) fn run_stoppable<T: Send>(
    py: Python<'_>,
    stop: &AtomicBool,
    f: impl FnOnce() -> crate::Result<T> + Send,
) -> PyResult<T> {
    let waiter = std::thread::current();
    // Set before the waiter is woken: its thread may not have ended yet when it looks.
    let done = AtomicBool::new(false);
    let work = || {
        let outcome = catch_unwind(AssertUnwindSafe(f));
        done.store(true, Ordering::Release);
        waiter.unpark();
        outcome
    };
    std::thread::scope(|scope| {
        let worker = match std::thread::Builder::new()
            .name("replikv-export".into())
            .spawn_scoped(scope, work)
        {
            Ok(worker) => worker,
            Err(err) => {
                return Err(pyo3::exceptions::PyOSError::new_err(format!(
                    "cannot start a thread for this work: {err}"
                )))
            }
        };
        let mut interrupted = None;
        while interrupted.is_none() && !done.load(Ordering::Acquire) {
            py.detach(|| std::thread::park_timeout(Duration::from_millis(50)));
            if done.load(Ordering::Acquire) {
                break;
            }
            if let Err(signal) = py.check_signals() {
                stop.store(true, Ordering::Relaxed);
                interrupted = Some(signal);
            }
        }
        let outcome = py.detach(|| worker.join());
        match (interrupted, outcome) {
            (Some(signal), _) => Err(signal),
            (None, Ok(outcome)) => run(py, || match outcome {
                Ok(result) => result,
                Err(payload) => std::panic::resume_unwind(payload),
            }),
            (None, Err(payload)) => run(py, || std::panic::resume_unwind(payload)),
        }
    })
}

/// Like [`run`], with the GIL released: for waits (fsync, locks) and bulk work only.
pub(crate) fn run_detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> crate::Result<T> + Send,
) -> PyResult<T> {
    let outcome = py.detach(|| catch_unwind(AssertUnwindSafe(f)));
    run(py, || match outcome {
        Ok(result) => result,
        Err(payload) => std::panic::resume_unwind(payload),
    })
}
