//! The TCP accept loop every server of the core runs: connection caps, and a graceful
//! shutdown that returns only once no connection task runs or holds the port.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::admission::{Admission, Ticket};
use super::rated::Rated;
use crate::error::NetError;

/// A new connection, handed to the server's handler.
pub struct Incoming {
    /// The socket (with `TCP_NODELAY` set).
    pub stream: TcpStream,
    /// Who connected.
    pub peer: SocketAddr,
    /// Its place in the connection caps.
    pub ticket: Ticket,
    /// Becomes `true` when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// Listens on `address` (`host:port`; port 0 picks a free one); returns the listener and
/// the address it really got.
///
/// # Errors
/// [`NetError::Address`]: the address is not `host:port`; [`NetError::Listen`]: it is in
/// use, not local, or not permitted.
pub async fn bind(address: &str) -> Result<(TcpListener, SocketAddr), NetError> {
    super::client::check_listen_address(address)?;
    let failed = |source| NetError::Listen {
        address: address.to_owned(),
        source,
    };
    let listener = TcpListener::bind(address).await.map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok((listener, bound))
}

/// Checks, before anything is changed for it, that a server could listen on `address`:
/// its form, then a bind that is let go at once, unless it is `own`, the address a server
/// of the caller's listens on now and gives up before the new one binds it.
///
/// # Errors
/// As [`bind`].
pub fn check_can_listen(address: &str, own: Option<SocketAddr>) -> Result<(), NetError> {
    super::client::check_listen_address(address)?;
    let failed = |source| NetError::Listen {
        address: address.to_owned(),
        source,
    };
    let resolved: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(address)
        .map_err(failed)?
        .collect();
    if own.is_some_and(|own| resolved.contains(&own)) {
        return Ok(());
    }
    std::net::TcpListener::bind(&resolved[..])
        .map(drop)
        .map_err(failed)
}

/// Accepts connections on `listener` and runs `handle` for each as a task, until
/// `shutdown` becomes `true`; then aborts every connection task and waits for them.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    admission: Arc<Admission>,
    mut shutdown: watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(Incoming) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = tokio::task::JoinSet::new();
    let failures_logged = Rated::default();
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                connections.shutdown().await;
                return;
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // Out of descriptors, typically: back off instead of spinning.
                        if let Some(skipped) = failures_logged.admit(Instant::now()) {
                            tracing::warn!(error = %err, skipped, "accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let ticket = admission.admit();
                connections.spawn(handle(Incoming { stream, peer, ticket, shutdown: shutdown.clone() }));
            }
        }
    }
}
