//! The read side's clock: when a connection last brought bytes. A large frame on a slow
//! link takes its time to arrive; timed from frame to frame, that time looked like
//! silence, and a link that could not deliver such a frame within the idle timeout was
//! dropped and redialled forever, never getting past it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

/// When bytes last arrived, shared between a reader and whoever times its silence.
#[derive(Debug)]
pub struct LastHeard {
    base: Instant,
    /// Microseconds after `base`.
    micros: AtomicU64,
}

impl LastHeard {
    /// Heard now.
    #[must_use]
    pub fn now() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            micros: AtomicU64::new(0),
        })
    }

    fn heard(&self) {
        let micros = u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_max(micros, Ordering::Relaxed);
    }

    /// When bytes last arrived.
    #[must_use]
    pub fn at(&self) -> Instant {
        self.base + Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }
}

/// Wraps a reader, noting in a [`LastHeard`] every read that brings bytes.
pub struct HeardReader<R> {
    inner: R,
    heard: Arc<LastHeard>,
}

impl<R> HeardReader<R> {
    /// Wraps `inner`, noting its reads in `heard`.
    pub fn new(inner: R, heard: Arc<LastHeard>) -> Self {
        Self { inner, heard }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HeardReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.heard.heard();
        }
        poll
    }
}

/// No byte came for the idle time (see [`idle_bounded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idle;

/// Runs `read` on `reader` wrapped in a [`HeardReader`], and gives it up once no byte
/// arrived for `idle`: a slow peer that keeps sending is never cut off, however long the
/// whole read takes.
///
/// # Errors
/// [`Idle`] if it was given up.
pub async fn idle_bounded<R, F>(
    reader: R,
    idle: Duration,
    read: impl FnOnce(HeardReader<R>) -> F,
) -> Result<F::Output, Idle>
where
    R: AsyncRead + Unpin,
    F: Future,
{
    let heard = LastHeard::now();
    let reading = read(HeardReader::new(reader, Arc::clone(&heard)));
    tokio::pin!(reading);
    loop {
        tokio::select! {
            result = &mut reading => return Ok(result),
            () = tokio::time::sleep_until(heard.at() + idle) => {
                if heard.at() + idle <= Instant::now() {
                    return Err(Idle);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_slow_sender_is_never_idle_and_a_silent_one_is_given_up() {
        // 64 bytes at one byte a second: over a minute for the read, never 3 s of silence.
        let (mut theirs, ours) = tokio::io::duplex(1);
        let sender = tokio::spawn(async move {
            for byte in 0..64u8 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                theirs.write_all(&[byte]).await.unwrap();
            }
        });
        let started = Instant::now();
        let got = idle_bounded(ours, Duration::from_secs(3), |mut r| async move {
            let mut got = [0u8; 64];
            r.read_exact(&mut got).await.map(|_| got)
        })
        .await;
        assert_eq!(got.unwrap().unwrap()[63], 63);
        assert!(started.elapsed() >= Duration::from_secs(64));
        sender.await.unwrap();

        // Silent after its first byte: given up 3 s after that byte, not after the start.
        let (mut theirs, ours) = tokio::io::duplex(16);
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            theirs.write_all(&[1]).await.unwrap();
            theirs
        });
        let started = Instant::now();
        let given_up = idle_bounded(ours, Duration::from_secs(3), |mut r| async move {
            let mut two = [0u8; 2];
            r.read_exact(&mut two).await.map(|_| two)
        })
        .await;
        assert_eq!(given_up.unwrap_err(), Idle);
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(5) && took < Duration::from_millis(5_010));
        drop(sender.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn every_read_that_brings_bytes_moves_the_clock() {
        let heard = LastHeard::now();
        let (mut theirs, ours) = tokio::io::duplex(64);
        let mut reader = HeardReader::new(ours, Arc::clone(&heard));
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert_eq!(heard.at() + Duration::from_secs(7), Instant::now());
        theirs.write_all(b"abc").await.unwrap();
        let mut got = [0u8; 3];
        reader.read_exact(&mut got).await.unwrap();
        assert_eq!(heard.at(), Instant::now());
    }
}
