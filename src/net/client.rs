//! The client side every peer of the core shares: connecting within a deadline, and the
//! backoff between attempts.

use std::time::Duration;

use tokio::net::TcpStream;

/// Connects to `address` within `timeout`, with `TCP_NODELAY` set.
///
/// # Errors
/// The connection failed, or took longer than `timeout` (`TimedOut`).
pub async fn connect(address: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            )
        })??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Waits between reconnection attempts: doubling from `first` up to `max`, and back to
/// `first` once a connection worked.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff from `first` up to `max`.
    #[must_use]
    pub fn new(first: Duration, max: Duration) -> Self {
        let max = max.max(first);
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next attempt (each call doubles the one after, up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// A connection worked: the next failure waits the shortest time again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets_after_a_success() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(50), ms(300));
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays, vec![ms(50), ms(100), ms(200), ms(300), ms(300)]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), ms(50));
    }
}
