//! The Redis-protocol server of a cache node: the accept loop of `net/` with its caps, and
//! per connection a loop that reads what arrived, runs the whole commands in it under one
//! lock of the node, and answers them in one write (pipelines cost one round trip). A
//! client's replies wait in memory only up to [`OUTPUT_BOUND`]: past it, the node runs and
//! reads nothing more of that client's until the socket has taken them, and the rest of an
//! array reply (an `MGET`) is encoded only as what is before it is sent.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, OwnedSemaphorePermit};

use super::command::{execute, Session};
use super::node::Node;
use super::resp::{give_back, parse_from, Limits, Output, Parse, Progress, Reply};
use crate::error::NetError;
use crate::net::admission::{Admission, Ticket};
use crate::net::server::{accept_loop, bind, Incoming};
use crate::net::stall::StallWriter;
use crate::replication::handshake::peer_allowed;

/// Connections that have not given the token yet, at most (the newest displaces the
/// oldest), and connections served at once, at most (Redis's default `maxclients`).
const MAX_UNAUTHENTICATED: usize = 128;
const MAX_CLIENTS: usize = 10_000;
/// What a request may claim before its connection gave the token.
const UNAUTHENTICATED: Limits = Limits {
    max_bulk: 4 * 1024,
    max_args: 16,
    max_inline: 4 * 1024,
};
/// The most bytes one request may take while it is still coming (its arguments and their
/// headers). The parser's own bounds (a million arguments of 64 MiB each) cap what one
/// header may claim, not what a request adds up to: a client that sends one long
/// unfinished command would make the node buffer all of it. Redis closes a client at 1 GiB
/// (`client-query-buffer-limit`); a cache node's values are far smaller than that.
pub(crate) const MAX_REQUEST_BYTES: usize = 96 << 20;
/// The most bytes of unfinished requests all connections may hold at once: without it,
/// each of the clients could hold [`MAX_REQUEST_BYTES`] (a few clients sending long
/// commands they never finish held the node's memory by the GiB). The connection whose
/// read goes past it is answered an error and closed, as one past its own bound is.
const MAX_BUFFERED_BYTES: usize = 256 << 20;
/// A client that reads none of its replies for this long is dropped.
const WRITE_STALL: Duration = Duration::from_secs(30);
/// Bytes read per read call, at most: what one read queues as parsed commands stays small.
const READ_CHUNK: usize = 16 * 1024;
/// Unsent reply bytes past which a connection's commands wait for the socket to drain
/// (Redis's `client-output-buffer-limit`, as backpressure rather than a disconnect; a
/// client that takes nothing for [`WRITE_STALL`] is dropped). Without it, a few KiB of
/// pipelined `GET`s of a large value made the node hold their replies by the hundred MiB.
///
/// 4 MiB is what Linux itself may buffer for a TCP socket by default (`tcp_wmem`'s
/// maximum), so a client that does not read pins at most that again, plus one reply; and
/// a client that reads gets its pipeline in writes of megabytes, over which the lock, the
/// write call and the wake-up each batch pays are spread thin.
pub const OUTPUT_BOUND: usize = 4 << 20;

/// A node's state and the clock its TTLs run on, shared by its connections and its log
/// follower.
#[derive(Debug)]
pub struct Shared {
    node: Mutex<Node>,
    started: Instant,
    /// The wall clock when it started (ms since the Unix epoch): its clock reads from
    /// there, so that a TTL ends at a time Redis would take (it refuses one that ends past
    /// the largest signed 64-bit count of Unix milliseconds).
    started_ms: u64,
    next_client: std::sync::atomic::AtomicU64,
    /// Bytes of unfinished requests its connections hold (see [`MAX_BUFFERED_BYTES`]).
    buffered: AtomicUsize,
}

impl Shared {
    /// Wraps `node`; its clock starts now.
    #[must_use]
    pub fn new(node: Node) -> Arc<Self> {
        Arc::new(Self {
            node: Mutex::new(node),
            started: Instant::now(),
            started_ms: crate::replication::status::now_ms(),
            next_client: std::sync::atomic::AtomicU64::new(1),
            buffered: AtomicUsize::new(0),
        })
    }

    /// The node, locked.
    pub fn lock(&self) -> MutexGuard<'_, Node> {
        // Commands never panic while holding it; a poisoned lock can only come from a bug,
        // and serving on beats aborting the process.
        self.node
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Milliseconds on the node's monotonic clock: the wall clock's when it started, then
    /// counted from there whatever the wall clock does.
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.started_ms.saturating_add(elapsed)
    }
}

/// A listening node. It serves on a thread of its own with a single-threaded runtime, as
/// Redis does: the node's state is then never contended between connections (only the
/// log consumer, on the shared runtime, takes its lock too), and a busy node does not
/// slow replication on the shared runtime.
pub struct Server {
    address: SocketAddr,
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Listens on `listen` (`host:port`, port 0 picks one) and serves `shared`.
    ///
    /// # Errors
    /// [`NetError::Listen`]: the address is in use, not local, or not permitted; or the
    /// node's thread cannot start.
    pub fn start(listen: &str, shared: Arc<Shared>) -> Result<Self, NetError> {
        let failed = |source| NetError::Listen {
            address: listen.to_owned(),
            source,
        };
        let serving = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(failed)?;
        let (listener, address) = serving.block_on(bind(listen))?;
        let (shutdown, stop) = watch::channel(false);
        let admission = Admission::new(MAX_UNAUTHENTICATED, MAX_CLIENTS);
        let accepting = accept_loop(listener, admission, stop, move |incoming| {
            let shared = Arc::clone(&shared);
            async move {
                let peer = incoming.peer;
                if let Err(err) = serve(&shared, incoming).await {
                    tracing::debug!(%peer, error = %err, "a cache client's connection ended");
                }
            }
        });
        let thread = std::thread::Builder::new()
            .name(format!("replikv-cache-{}", address.port()))
            .spawn(move || serving.block_on(accepting))
            .map_err(failed)?;
        Ok(Self {
            address,
            shutdown,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the real port if 0 was asked).
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops listening, closes every connection and waits until the port is free.
    pub fn stop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(thread) = self.thread.take() {
            // The accept loop returns once every connection task ended; a panic there
            // has nothing left to clean up.
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Counts the connection as open, and its unsent replies and unfinished requests as
/// buffered, while alive.
struct Open<'a> {
    shared: &'a Shared,
    unsent: u64,
    buffered: usize,
}

impl<'a> Open<'a> {
    fn new(shared: &'a Shared) -> Self {
        let mut node = shared.lock();
        node.clients.0 += 1;
        node.clients.1 += 1;
        Self {
            shared,
            unsent: 0,
            buffered: 0,
        }
    }

    /// The connection now holds `buffered` bytes of requests not read whole; `false` if
    /// that grew the node's total past [`MAX_BUFFERED_BYTES`].
    fn buffered(&mut self, buffered: usize) -> bool {
        let total = &self.shared.buffered;
        let within = if buffered > self.buffered {
            let grown = buffered - self.buffered;
            total.fetch_add(grown, Ordering::AcqRel) + grown <= MAX_BUFFERED_BYTES
        } else {
            total.fetch_sub(self.buffered - buffered, Ordering::AcqRel);
            true
        };
        self.buffered = buffered;
        within
    }

    /// The connection now has `unsent` reply bytes waiting.
    fn unsent(&mut self, unsent: usize) {
        let unsent = unsent as u64;
        if unsent == self.unsent {
            return;
        }
        let mut node = self.shared.lock();
        node.unsent.0 = node.unsent.0 - self.unsent + unsent;
        node.unsent.1 = node.unsent.1.max(unsent);
        self.unsent = unsent;
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.buffered(0);
        let mut node = self.shared.lock();
        node.clients.0 -= 1;
        node.unsent.0 -= self.unsent;
    }
}

/// A request read and not yet run: its arguments, or the error a malformed one is answered.
type Request = Result<Vec<Vec<u8>>, String>;

/// Where a connection stands in the caps: waiting for the token, or served.
enum Place {
    Waiting(Ticket),
    Served { _permit: OwnedSemaphorePermit },
}

async fn serve(shared: &Shared, incoming: Incoming) -> std::io::Result<()> {
    let Incoming {
        stream,
        peer,
        ticket,
        mut shutdown,
    } = incoming;
    let (mut reader, writer) = stream.into_split();
    let mut writer = StallWriter::new(writer, WRITE_STALL);
    let mut open = Open::new(shared);
    let token_configured = shared.lock().options.token.is_some();
    if !peer_allowed(token_configured, peer.ip()) {
        let refusal =
            "-DENIED no token is configured, so only clients on this machine may connect\r\n";
        return writer.write_all(refusal.as_bytes()).await;
    }
    let id = shared
        .next_client
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut session = Session::new(id, &shared.lock());
    let mut place = Place::Waiting(ticket);
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    // The most `input` held since its allocation was made: given back once it is read.
    let mut input_peak = 0;
    let mut requests = VecDeque::new();
    // How far the request at the front of `input` was read while incomplete.
    let mut progress = Progress::default();
    let mut broken = false;
    let mut output = Output::new(OUTPUT_BOUND);
    loop {
        place = match place {
            Place::Waiting(ticket) if session.authenticated => {
                let Some(permit) = ticket.authenticated() else {
                    let full = "-ERR max number of clients reached\r\n";
                    return writer.write_all(full.as_bytes()).await;
                };
                Place::Served { _permit: permit }
            }
            other => other,
        };
        // Nothing more is read while commands read before wait: those are what the bound
        // held back, and reading on would queue without limit.
        if requests.is_empty() {
            // What is buffered goes first: before the token is given, requests are taken
            // one at a time, so the one after an `AUTH` is parsed with the limits that
            // `AUTH` earned.
            broken = read_requests(&mut input, &mut progress, &session, &mut requests);
        }
        if requests.is_empty() {
            input.reserve(READ_CHUNK);
            let mut room = (&mut input).limit(READ_CHUNK);
            let read = match &mut place {
                Place::Waiting(ticket) => tokio::select! {
                    read = reader.read_buf(&mut room) => read?,
                    () = ticket.displaced() => return Ok(()),
                    _ = shutdown.changed() => return Ok(()),
                },
                Place::Served { .. } => tokio::select! {
                    read = reader.read_buf(&mut room) => read?,
                    _ = shutdown.changed() => return Ok(()),
                },
            };
            if read == 0 {
                return Ok(());
            }
            input_peak = input_peak.max(input.len());
            broken = read_requests(&mut input, &mut progress, &session, &mut requests);
            if !broken && input.len() > MAX_REQUEST_BYTES {
                let limit = MAX_REQUEST_BYTES >> 20;
                requests.push_back(Err(format!(
                    "ERR Protocol error: a request of more than {limit} MiB"
                )));
                broken = true;
            }
            if !broken && !open.buffered(input.len() + session.queued_bytes()) {
                let limit = MAX_BUFFERED_BYTES >> 20;
                requests.push_back(Err(format!(
                    "ERR the node holds {limit} MiB of unfinished requests from its clients: \
                     send this one again later"
                )));
                broken = true;
            }
        }
        give_back(&mut input, &mut input_peak);
        let quit = answer(shared, &mut session, &mut requests, &mut output);
        // Commands queued since MULTI are requests not run yet: they count as those still
        // arriving do, against the node's bound on all of them.
        if !broken && !open.buffered(input.len() + session.queued_bytes()) {
            let limit = MAX_BUFFERED_BYTES >> 20;
            requests.push_back(Err(format!(
                "ERR the node holds {limit} MiB of unfinished requests from its clients: send \
                 this transaction again later"
            )));
            broken = true;
        }
        if output.has_remaining() {
            open.unsent(output.remaining());
            let written = writer.write_all_buf(&mut output).await;
            open.unsent(output.remaining());
            written?;
        }
        if quit || (broken && requests.is_empty()) {
            return Ok(());
        }
        if requests.is_empty() {
            output.shrink_if_idle();
        }
    }
}

/// Parses the whole requests in `input` (consuming them) onto `requests`: every one once
/// `session` is authenticated, else the first only; `progress` is how far the one at its
/// front was read before. Returns whether it met a malformed multibulk request, after which
/// nothing more may be read.
fn read_requests(
    input: &mut BytesMut,
    progress: &mut Progress,
    session: &Session,
    requests: &mut VecDeque<Request>,
) -> bool {
    // Before the token is given a request may be small only (AUTH, HELLO, PING): a
    // stranger cannot make the node buffer a large bulk string.
    let (limits, most) = if session.authenticated {
        (Limits::default(), usize::MAX)
    } else {
        (UNAUTHENTICATED, 1)
    };
    let mut used = 0;
    let mut broken = false;
    let queued = requests.len();
    while !broken && requests.len() - queued < most {
        // Only the request at the front of what is left can be incomplete, so `progress`
        // (reset by any other outcome) always describes that one. Its limits cannot change
        // while it is incomplete: the token is given only by a request before it.
        match parse_from(&input[used..], &limits, progress) {
            Parse::Command { args, used: took } => {
                used += took;
                if !args.is_empty() {
                    requests.push_back(Ok(args));
                }
            }
            Parse::Incomplete => break,
            Parse::Invalid { error, skip } => {
                // After a malformed multibulk request, the bytes that follow may be the
                // data it announced, and after a malformed inline line (unbalanced
                // quotes, or too long to be read to its end) the rest of what the client
                // meant: neither may run as commands. Like Redis, answer and close.
                broken = true;
                used += skip;
                requests.push_back(Err(error));
            }
        }
    }
    input.advance(used);
    broken
}

/// Runs `requests` in order under one lock of the node, appending the replies to `output`,
/// until none is left or `output` holds [`OUTPUT_BOUND`] bytes; returns whether the client
/// quit.
fn answer(
    shared: &Shared,
    session: &mut Session,
    requests: &mut VecDeque<Request>,
    output: &mut Output,
) -> bool {
    if requests.is_empty() {
        return false;
    }
    let now_ms = shared.now_ms();
    let mut node = shared.lock();
    // An array reply whose items wait unencoded (an `MGET` past the bound) fills the
    // output: what runs next must wait until it is sent.
    while output.remaining() < OUTPUT_BOUND && !output.deferring() {
        let Some(request) = requests.pop_front() else {
            break;
        };
        match request {
            Ok(args) => {
                let outcome = execute(&mut node, session, args, now_ms);
                output.push(outcome.reply, session.protocol);
                if outcome.close {
                    return true;
                }
            }
            Err(error) => {
                node.count_request(true);
                output.push(Reply::Error(error), session.protocol);
            }
        }
    }
    false
}
