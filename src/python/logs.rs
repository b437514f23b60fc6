//! The core's `tracing` events, handed to Python's `logging` (logger `replikv.<module>`),
//! so that a primary dropping a stalled replica or learning it is deposed says so where a
//! script, a notebook or `replikv primary` shows what happens.
//!
//! An event is formatted where it happens (a tokio worker, a writer, the checkpointer) and
//! queued; one thread of ours takes the GIL and logs it. No thread of the core ever waits
//! for the GIL to log: when the queue is full, records are dropped and counted, and the
//! next record that gets through says how many were lost. Events at `DEBUG` and below
//! stay in the core.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// Records waiting for the logging thread, at most.
const QUEUE: usize = 4096;

/// One event, ready for `logging.getLogger(logger).log(level, message)`.
struct Entry {
    logger: String,
    level: u8,
    message: String,
}

/// Where events go: the queue of the logging thread. A forked child has no such thread:
/// its events fill the queue, then are dropped (nothing ever waits on a lock that the
/// fork may have copied held).
struct Forwarder {
    queue: SyncSender<Entry>,
    dropped: AtomicU64,
    /// Set at interpreter exit: the thread attaches no more.
    stopped: AtomicBool,
    /// Set while the thread attaches to the interpreter or logs: exit waits for it to end,
    /// since a thread that waits for the GIL once the interpreter finalizes is ended
    /// there by CPython, which aborts the process.
    busy: AtomicBool,
    /// The process whose thread it is (a forked child has none).
    pid: u32,
}

/// How long exit waits for a record being logged.
const EXIT_PATIENCE: Duration = Duration::from_secs(2);

static FORWARDER: OnceLock<Forwarder> = OnceLock::new();

impl Forwarder {
    fn send(&self, entry: Entry) {
        if let Err(TrySendError::Full(_)) = self.queue.try_send(entry) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The subscriber: no spans (the core opens none), events at `INFO` and above.
struct ToPython;

impl Subscriber for ToPython {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && *metadata.level() <= Level::INFO
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &SpanRecord<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let Some(forwarder) = FORWARDER.get() else {
            return;
        };
        let metadata = event.metadata();
        let mut text = Text::default();
        event.record(&mut text);
        forwarder.send(Entry {
            logger: logger_name(metadata.target()),
            level: python_level(*metadata.level()),
            message: text.finish(),
        });
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// `replikv::replication::primary::stream` logs as `replikv.replication.primary.stream`.
fn logger_name(target: &str) -> String {
    target.replace("::", ".")
}

fn python_level(level: Level) -> u8 {
    match level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// An event's message followed by its other fields: `dropping the link (replica=r1)`.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Text {
    fn finish(self) -> String {
        if self.fields.is_empty() {
            self.message
        } else {
            format!("{} ({})", self.message, self.fields)
        }
    }
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
            return;
        }
        if !self.fields.is_empty() {
            self.fields.push_str(", ");
        }
        let _ = write!(self.fields, "{}={value:?}", field.name());
    }
}

/// Starts handing the core's events to Python's `logging` (once per process; called on
/// import).
#[pyfunction]
#[pyo3(name = "_forward_logs")]
pub fn forward_logs() -> PyResult<()> {
    if FORWARDER.get().is_some() {
        return Ok(());
    }
    let (queue, receiver) = sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("replikv-logging".into())
        .spawn(move || forward(&receiver))
        .map_err(|e| {
            pyo3::exceptions::PyOSError::new_err(format!("cannot start replikv's logging: {e}"))
        })?;
    let forwarder = Forwarder {
        queue,
        dropped: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
        busy: AtomicBool::new(false),
        pid: std::process::id(),
    };
    // Lost to a concurrent call: this thread's queue is dropped, and the thread ends.
    if FORWARDER.set(forwarder).is_ok() {
        // Fails only if another subscriber was installed first: then events go there.
        let _ = tracing::subscriber::set_global_default(ToPython);
    }
    Ok(())
}

/// Stops logging the core's events (at interpreter exit, before Python can no longer be
/// called), once a record being logged is done.
#[pyfunction]
#[pyo3(name = "_stop_logs")]
pub fn stop_logs(py: Python<'_>) {
    let Some(forwarder) = FORWARDER.get() else {
        return;
    };
    // Sequentially consistent with the thread's own pair: either it sees `stopped` before
    // it attaches, or this sees it busy and waits (without the GIL, which it may need).
    forwarder.stopped.store(true, Ordering::SeqCst);
    if forwarder.pid != std::process::id() {
        return; // a forked child: the thread is not here
    }
    py.detach(|| {
        let deadline = Instant::now() + EXIT_PATIENCE;
        while forwarder.busy.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

fn forward(receiver: &Receiver<Entry>) {
    while let Ok(entry) = receiver.recv() {
        // Records come only through the forwarder, so it is set by now.
        let Some(forwarder) = FORWARDER.get() else {
            return;
        };
        forwarder.busy.store(true, Ordering::SeqCst);
        if forwarder.stopped.load(Ordering::SeqCst) {
            forwarder.busy.store(false, Ordering::SeqCst);
            return;
        }
        let dropped = forwarder.dropped.swap(0, Ordering::Relaxed);
        // None: the interpreter is shutting down, nothing can be logged any more.
        let attached = Python::try_attach(|py| {
            if dropped > 0 {
                let note = format!(
                    "{dropped} log records were dropped: they came faster than Python logged them"
                );
                let _ = log(py, "replikv", 30, &note);
            }
            // Logging must never fail a write: a handler's error is Python's to report.
            let _ = log(py, &entry.logger, entry.level, &entry.message);
        });
        forwarder.busy.store(false, Ordering::SeqCst);
        if attached.is_none() {
            return;
        }
    }
}

fn log(py: Python<'_>, logger: &str, level: u8, message: &str) -> PyResult<()> {
    let logger = py.import("logging")?.call_method1("getLogger", (logger,))?;
    if logger.call_method1("isEnabledFor", (level,))?.is_truthy()? {
        logger.call_method1("log", (level, "%s", message))?;
    }
    Ok(())
}
