//! The client side every peer of the core shares: connecting within a deadline, and the
//! backoff between attempts.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::error::NetError;

/// The addresses of `address`: an IP address as it is; a host name looked up on the
/// process's runtime, whose blocking pool outlives any caller. A lookup blocks a thread
/// until the resolver answers (seconds in a DNS outage); on the runtime of a link of its
/// own (a replica's), that runtime could not stop before it, and neither could `close()`.
async fn resolve(address: &str) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = address.parse::<SocketAddr>() {
        return Ok(vec![ip]);
    }
    let name = address.to_owned();
    super::runtime()
        .spawn_blocking(move || name.to_socket_addrs().map(Iterator::collect))
        .await
        .map_err(|err| std::io::Error::other(format!("the lookup of {address} failed: {err}")))?
}

/// Checks that `address` is `host:port` (a name or an IPv4 address, or an IPv6 one in
/// brackets, and a port from 1 to 65535), so that a typo is refused when it is given
/// rather than retried for ever. Whether the host resolves is learned when connecting.
///
/// # Errors
/// [`NetError::Address`], saying what is wrong.
pub fn check_address(address: &str) -> Result<(), NetError> {
    check_host_port(address, "connect to", 1)
}

/// Checks that `address` is `host:port` to listen on, as [`check_address`] does but with
/// port 0 (pick a free one) allowed: a typo is a wrong argument, not a network failure.
/// Whether the host is local is learned when binding.
///
/// # Errors
/// [`NetError::Address`], saying what is wrong.
pub fn check_listen_address(address: &str) -> Result<(), NetError> {
    check_host_port(address, "listen on", 0)
}

fn check_host_port(address: &str, purpose: &'static str, lowest_port: u16) -> Result<(), NetError> {
    let refuse = |reason| {
        Err(NetError::Address {
            address: address.to_owned(),
            purpose,
            reason,
        })
    };
    let Some((host, port)) = address.rsplit_once(':') else {
        return refuse("expected host:port, such as 127.0.0.1:7400");
    };
    if !port.parse::<u16>().is_ok_and(|port| port >= lowest_port) {
        return refuse(if lowest_port == 0 {
            "the port must be a number from 0 (any free port) to 65535"
        } else {
            "the port must be a number from 1 to 65535"
        });
    }
    let plain = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner.parse::<std::net::Ipv6Addr>().is_ok(),
        None => plain(host),
    };
    if valid {
        Ok(())
    } else {
        refuse("expected host:port with no scheme or path, such as 127.0.0.1:7400 or [::1]:7400")
    }
}

/// Connects to `address` within `timeout`, with `TCP_NODELAY` set.
///
/// # Errors
/// The connection failed, or took longer than `timeout` (`TimedOut`).
pub async fn connect(address: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    // Tokio tries each address in turn, as it would after its own lookup.
    let attempt = async { TcpStream::connect(&resolve(address).await?[..]).await };
    let stream = tokio::time::timeout(timeout, attempt).await.map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        )
    })??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Waits between reconnection attempts: doubling from `first` up to `max`, and back to
/// `first` once a connection worked. Each wait is drawn between half of its step and the
/// whole of it, so that peers that lost their primary together (a restart) do not all
/// come back in the same instant, again and again.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    /// State of the xorshift generator the waits are drawn from.
    draw: u64,
}

impl Backoff {
    /// A backoff from `first` up to `max`.
    ///
    /// # Panics
    /// If the operating system has no randomness to give.
    #[must_use]
    pub fn new(first: Duration, max: Duration) -> Self {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).expect("invariant: the OS random source is available");
        Self {
            first,
            max: max.max(first),
            next: first,
            draw: u64::from_le_bytes(seed) | 1,
        }
    }

    /// The wait before the next attempt: between half of this step and all of it (each
    /// call doubles the step after, up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        self.draw ^= self.draw << 13;
        self.draw ^= self.draw >> 7;
        self.draw ^= self.draw << 17;
        // A share of half the step, in 1/1024ths.
        let share = u32::try_from(self.draw % 1025).expect("invariant: below 1025");
        step / 2 + step / 2 * share / 1024
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
    fn an_ip_address_is_taken_as_is_and_a_name_is_looked_up() {
        let own = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime starts");
        let literal = own
            .block_on(resolve("127.0.0.1:7400"))
            .expect("no lookup needed");
        assert_eq!(literal, vec!["127.0.0.1:7400".parse().expect("an address")]);
        let named = own
            .block_on(resolve("localhost:7400"))
            .expect("localhost resolves");
        assert!(!named.is_empty());
        assert!(named
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 7400));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets_after_a_success() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(50), ms(300));
        let steps = [ms(50), ms(100), ms(200), ms(300), ms(300)];
        for step in steps {
            let delay = backoff.next_delay();
            assert!(
                step / 2 <= delay && delay <= step,
                "{delay:?} for a step of {step:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= ms(50));
    }

    #[test]
    fn peers_that_back_off_together_spread_out() {
        let ms = Duration::from_millis;
        let waits: Vec<Duration> = (0..16)
            .map(|_| Backoff::new(ms(1000), ms(1000)).next_delay())
            .collect();
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(
            distinct.len() > 8,
            "16 peers drew only {} waits",
            distinct.len()
        );
    }

    #[test]
    fn addresses_to_connect_to_are_host_and_port() {
        for good in [
            "127.0.0.1:7400",
            "localhost:1",
            "db-1.example.com:65535",
            "[::1]:7400",
        ] {
            assert!(check_address(good).is_ok(), "{good}");
        }
        for bad in [
            "localhost",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            "127.0.0.1:x",
            "http://127.0.0.1:7400",
            "127.0.0.1:7400:1",
            ":7400",
            "[::1:7400",
            "[nonsense]:7400",
            "",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_to_listen_on_are_host_and_port_with_port_0_allowed() {
        for good in ["127.0.0.1:0", "localhost:7400", "0.0.0.0:0", "[::1]:0"] {
            assert!(check_listen_address(good).is_ok(), "{good}");
        }
        for bad in [
            "nonsense",
            "127.0.0.1",
            "127.0.0.1:99999",
            "127.0.0.1:0x",
            ":0",
            "",
        ] {
            let refused = check_listen_address(bad).unwrap_err().to_string();
            assert!(
                refused.contains("is not an address to listen on"),
                "{bad}: {refused}"
            );
        }
    }
}
