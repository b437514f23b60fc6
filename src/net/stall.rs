//! A write timeout that every write of a connection goes through: a peer that stops taking
//! bytes (frozen, or simply not reading) fails the write after a while instead of holding
//! the connection, and what it pins, forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};

use super::heard::LastHeard;

/// Wraps a writer so that any write, flush or shutdown that makes no progress for `stall`
/// fails with [`io::ErrorKind::TimedOut`]. A slow peer that keeps taking bytes is fine:
/// the clock restarts at every byte accepted, and at every byte the peer sends, once its
/// reads are watched (see [`StallWriter::hear_from`]).
pub struct StallWriter<W> {
    inner: W,
    stall: Duration,
    /// When the peer last sent bytes, if its reads are watched.
    heard: Option<Arc<LastHeard>>,
    /// Armed when the inner writer first could not make progress.
    deadline: Option<Pin<Box<Sleep>>>,
    /// When the peer's side (its kernel, at least) last took bytes that had to wait for
    /// room: a sign of life, where a write into a socket buffer with room proves nothing.
    drained: Option<Instant>,
}

impl<W> StallWriter<W> {
    /// Wraps `inner`, failing writes stuck for `stall`.
    pub fn new(inner: W, stall: Duration) -> Self {
        Self {
            inner,
            stall,
            heard: None,
            deadline: None,
            drained: None,
        }
    }

    /// A write waits for room as long as the peer keeps talking: `heard` notes its reads
    /// (see [`super::heard::HeardReader`]). A replica busy installing a snapshot reads
    /// nothing for seconds, and says meanwhile that it is alive.
    pub fn hear_from(&mut self, heard: Arc<LastHeard>) {
        self.heard = Some(heard);
    }

    /// When the peer last took bytes that waited for room (see the field).
    pub fn drained_at(&self) -> Option<Instant> {
        self.drained
    }

    /// The wrapped writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// What a stuck operation returns: `Pending` until the deadline, then the error.
    fn poll_stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let stall = self.stall;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        loop {
            if deadline.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            match self.heard.as_ref().map(|heard| heard.at() + stall) {
                Some(until) if until > Instant::now() => deadline.as_mut().reset(until),
                _ => break,
            }
        }
        self.deadline = None;
        let heard = if self.heard.is_some() {
            " and sent none"
        } else {
            ""
        };
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the peer took no bytes{heard} for {stall:?}"),
        )))
    }

    fn progressed<T>(
        &mut self,
        poll: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                if self.deadline.take().is_some() {
                    self.drained = Some(Instant::now());
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_stalled(cx),
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for StallWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progressed(poll, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progressed(poll, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.progressed(poll, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progressed(poll, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::heard::HeardReader;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_writer_that_takes_nothing_fails_after_the_stall_and_a_slow_one_does_not() {
        // A pipe with a small buffer that nobody reads: the write sticks.
        let (ours, _theirs) = tokio::io::duplex(16);
        let mut writer = StallWriter::new(ours, Duration::from_secs(3));
        writer.write_all(&[7; 16]).await.unwrap();
        assert_eq!(
            writer.drained_at(),
            None,
            "taken into room: no sign of a reader"
        );
        let err = writer.write_all(&[7; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(writer.drained_at(), None);

        // A reader that takes a byte a second never lets 3 s pass without progress.
        let (ours, mut theirs) = tokio::io::duplex(1);
        let mut writer = StallWriter::new(ours, Duration::from_secs(3));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut byte = [0u8; 1];
            while tokio::io::AsyncReadExt::read(&mut theirs, &mut byte)
                .await
                .unwrap()
                == 1
            {
                got.push(byte[0]);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            got
        });
        writer.write_all(&[9; 10]).await.unwrap();
        let drained = writer.drained_at().expect("bytes that waited were taken");
        assert!(
            drained.elapsed() < Duration::from_secs(1),
            "at the last one"
        );
        drop(writer);
        assert_eq!(reader.await.unwrap(), vec![9; 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_waits_while_the_peer_keeps_talking_and_fails_a_stall_after_it_stops() {
        let (ours, _unread) = tokio::io::duplex(16);
        let mut writer = StallWriter::new(ours, Duration::from_secs(3));
        let heard = LastHeard::now();
        writer.hear_from(Arc::clone(&heard));
        let (mut theirs, from_them) = tokio::io::duplex(64);
        let mut reader = HeardReader::new(from_them, heard);
        // Says it is alive every second for 10 s, and reads nothing.
        let talker = tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                theirs.write_all(&[1]).await.unwrap();
            }
            theirs
        });
        let listener = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            while reader.read(&mut byte).await.is_ok_and(|n| n == 1) {}
        });
        let started = Instant::now();
        let err = writer.write_all(&[7; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(13),
            "3 s after it last spoke"
        );
        drop(talker.await.unwrap());
        listener.await.unwrap();
    }
}
