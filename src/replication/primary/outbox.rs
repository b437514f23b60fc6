//! A link's socket, shared between its streaming task and the thread that makes a sync
//! writer's entry visible, so that the entry can leave from that thread.
//!
//! Handing the entry to the network thread cost a sync write two thread wake-ups: the
//! writer woke the network thread, which preempted it, and the replica's thread, woken by
//! the send while both ran, had to start on the other, idle core. On a two-core VM that
//! cost a sync write about 50 µs of its 355 µs (`cargo bench --no-default-features --bench
//! sync`). Sent from the thread that then sleeps until the ack, the entry wakes nobody on
//! this side, and the replica's thread can run on the core being freed.
//!
//! Whoever writes holds the socket's turn: the task for as long as it decides what to
//! send and sends it (possibly across awaits), a thread only for one non-blocking write.
//! What a thread could not write without blocking is kept, and the task sends it before
//! anything else, so frames never interleave or reorder. A task that gives up its turn
//! mid-frame (an error, the link stopping) closes the socket to threads.

use std::io::Write;
use std::os::fd::AsFd;
use std::sync::{Mutex, MutexGuard};

use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use super::Writer;
use crate::error::{NetError, ReplicationError};

/// Who may write to the socket now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Nobody,
    /// A thread, for one non-blocking write.
    Thread,
    /// The streaming task.
    Task,
    /// The task gave up its turn without finishing (an error, or the link stopped): what
    /// was written may end mid-frame, and nothing more may follow.
    Closed,
}

#[derive(Debug)]
struct State {
    holder: Holder,
    /// Bytes a thread could not write without blocking: they go before anything else.
    unsent: Vec<u8>,
}

/// A link's socket as threads outside the runtime write to it.
#[derive(Debug)]
pub(super) struct Outbox {
    /// The same socket as the task's (a duplicate descriptor, non-blocking as the task's).
    socket: std::net::TcpStream,
    state: Mutex<State>,
    /// Wakes the task when bytes were left unsent.
    unsent_left: Notify,
    /// Wakes the task waiting for its turn when a thread gives the socket back.
    freed: Notify,
}

/// A thread's hold on the socket for one non-blocking write; given back when dropped.
pub(super) struct Claim<'a> {
    outbox: &'a Outbox,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.outbox.lock().holder = Holder::Nobody;
        self.outbox.freed.notify_waiters();
    }
}

impl Claim<'_> {
    /// Writes `bytes` without blocking and gives the socket back. What the socket does not
    /// take is kept for the task, which is woken to send it: returns whether everything
    /// went.
    pub fn send(self, bytes: &[u8]) -> bool {
        // A broken connection (or a full socket) writes nothing: the task finds out, or
        // sends the bytes once the socket takes them.
        let written = (&self.outbox.socket).write(bytes).unwrap_or_default();
        if written == bytes.len() {
            return true;
        }
        // Kept before the claim is given back: no thread may write ahead of them.
        self.outbox
            .lock()
            .unsent
            .extend_from_slice(&bytes[written..]);
        self.outbox.unsent_left.notify_one();
        false
    }
}

/// The task's turn at the socket, until [`Turn::end`]. A turn dropped without ending (an
/// error or a cancellation, maybe mid-frame) closes the socket to threads for good.
pub(super) struct Turn<'a> {
    outbox: &'a Outbox,
    ended: bool,
}

impl Turn<'_> {
    /// Gives the socket back after whole frames.
    pub fn end(mut self) {
        self.ended = true;
        self.outbox.lock().holder = Holder::Nobody;
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.outbox.lock().holder = Holder::Closed;
        }
    }
}

impl Outbox {
    /// Shares the socket `writer` writes to.
    ///
    /// # Errors
    /// The descriptor cannot be duplicated (out of descriptors).
    pub fn new(writer: &Writer) -> Result<Self, ReplicationError> {
        let fd = writer.get_ref().as_ref().as_fd().try_clone_to_owned();
        let fd = fd.map_err(|source| NetError::Io {
            context: "sharing a replica's socket".to_owned(),
            source,
        })?;
        Ok(Self {
            socket: std::net::TcpStream::from(fd),
            state: Mutex::new(State {
                holder: Holder::Nobody,
                unsent: Vec::new(),
            }),
            unsent_left: Notify::new(),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the socket for a thread's one write, if nobody holds it and nothing waits to
    /// be sent; `None` leaves it to the task.
    pub fn claim(&self) -> Option<Claim<'_>> {
        let mut state = self.lock();
        if state.holder != Holder::Nobody || !state.unsent.is_empty() {
            return None;
        }
        state.holder = Holder::Thread;
        Some(Claim { outbox: self })
    }

    /// Waits for the socket (a thread holds it for one non-blocking write at most), sends
    /// what threads left unsent, and keeps it until the turn ends.
    ///
    /// # Errors
    /// The write fails or stalls.
    pub async fn turn(&self, writer: &mut Writer) -> Result<Turn<'_>, ReplicationError> {
        let unsent = loop {
            // Listening before looking: a thread that gives the socket back in between
            // still wakes this task.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut state = self.lock();
                if state.holder == Holder::Nobody {
                    state.holder = Holder::Task;
                    break std::mem::take(&mut state.unsent);
                }
            }
            freed.await;
        };
        let turn = Turn {
            outbox: self,
            ended: false,
        };
        if !unsent.is_empty() {
            writer
                .write_all(&unsent)
                .await
                .map_err(|source| NetError::Io {
                    context: "writing a frame".to_owned(),
                    source,
                })?;
        }
        Ok(turn)
    }

    /// Ends once a thread left bytes unsent (at once if it did since the last call).
    pub async fn unsent_left(&self) {
        self.unsent_left.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::net::stall::StallWriter;

    /// A connection on 127.0.0.1: our writer, and the peer's end.
    async fn connection() -> (Writer, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap());
        let (ours, theirs) = tokio::join!(ours, listener.accept());
        let (_, half) = ours.unwrap().into_split();
        (
            StallWriter::new(half, Duration::from_secs(10)),
            theirs.unwrap().0,
        )
    }

    #[tokio::test]
    async fn the_socket_is_a_threads_only_while_nobody_else_holds_it() {
        let (mut writer, _peer) = connection().await;
        let outbox = Outbox::new(&writer).unwrap();
        let turn = outbox.turn(&mut writer).await.unwrap();
        assert!(outbox.claim().is_none(), "the task holds its turn");
        turn.end();
        let claim = outbox.claim().expect("nobody holds it");
        assert!(outbox.claim().is_none(), "one thread at a time");
        drop(claim);
        let claim = outbox.claim().expect("given back when dropped");
        assert!(claim.send(b"frame"));
        assert!(outbox.claim().is_some(), "given back once it sent");
    }

    #[tokio::test]
    async fn the_task_waiting_for_its_turn_is_woken_when_a_thread_gives_the_socket_back() {
        let (mut writer, _peer) = connection().await;
        let outbox = Outbox::new(&writer).unwrap();
        let claim = outbox.claim().unwrap();
        let (turn, ()) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(10), outbox.turn(&mut writer)),
            async move {
                tokio::task::yield_now().await;
                drop(claim);
            }
        );
        turn.expect("woken, not left waiting").unwrap().end();
    }

    #[tokio::test]
    async fn a_turn_given_up_mid_frame_closes_the_socket_to_threads() {
        let (mut writer, _peer) = connection().await;
        let outbox = Outbox::new(&writer).unwrap();
        let turn = outbox.turn(&mut writer).await.unwrap();
        drop(turn);
        assert!(
            outbox.claim().is_none(),
            "a thread's frame could follow half a frame"
        );
    }

    #[tokio::test]
    async fn what_a_thread_could_not_send_goes_before_anything_the_task_sends() {
        let (mut writer, mut peer) = connection().await;
        let outbox = Outbox::new(&writer).unwrap();
        // More than the socket's buffers hold while the peer reads nothing.
        let big: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
        let claim = outbox.claim().unwrap();
        assert!(!claim.send(&big), "the socket cannot take 32 MiB at once");
        assert!(
            outbox.claim().is_none(),
            "bytes left unsent go first: no thread may write"
        );
        tokio::time::timeout(Duration::from_secs(10), outbox.unsent_left())
            .await
            .expect("the task is told bytes were left");
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            peer.read_to_end(&mut received).await.map(|_| received)
        });
        let turn = outbox.turn(&mut writer).await.unwrap();
        writer.write_all(b"next frame").await.unwrap();
        turn.end();
        writer.shutdown().await.unwrap();
        drop(outbox);
        let received = reader.await.unwrap().unwrap();
        assert_eq!(received.len(), big.len() + b"next frame".len());
        assert!(
            received[..big.len()] == big[..],
            "the thread's bytes, whole and first"
        );
        assert_eq!(&received[big.len()..], b"next frame");
    }
}
