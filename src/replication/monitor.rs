//! `replikv status` and `replikv verify`: one question to a primary (its replicas' state
//! and lag, or how their tables compare with its own), one report back.

use std::time::Duration;

use serde_bytes::ByteBuf;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::handshake::{self, Role};
use super::primary::PrimaryStatus;
use super::protocol::{
    read_frame_within, read_handshake_frame, unexpected, write_frame, Message, PeerKind,
};
use super::verify::VerifyReport;
use crate::error::{NetError, ReplicationError};
use crate::net::client;
use crate::net::runtime;
use crate::net::stall::StallWriter;

/// Connects to the primary at `address`, proves `token`, and returns its status report.
///
/// # Errors
/// The primary cannot be reached within `timeout`, refuses the token, or answers with
/// something other than a report.
pub fn fetch_status(
    address: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<PrimaryStatus, ReplicationError> {
    match ask(address, token, timeout, PeerKind::Monitor, "status report")? {
        Message::Status {
            last_lsn,
            epoch,
            rejected,
            replicas,
            sync_state,
        } => Ok(PrimaryStatus {
            last_lsn,
            epoch,
            rejected,
            last_rejection: None,
            replicas,
            sync_state,
        }),
        other => Err(unexpected(other, "a status report")),
    }
}

/// Connects to the primary at `address`, proves `token`, and returns how its replicas'
/// tables compare with its own (the primary gives its replicas 5 s to answer: `timeout`
/// should be longer).
///
/// # Errors
/// As [`fetch_status`].
pub fn fetch_verify(
    address: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<VerifyReport, ReplicationError> {
    match ask(address, token, timeout, PeerKind::Verifier, "verify report")? {
        Message::VerifyReport { report } => Ok(report),
        other => Err(unexpected(other, "a verify report")),
    }
}

/// Tells the primary at `address` that `epoch` exists (a promotion made it): a primary of
/// an older epoch is deposed by hearing it (its sync writers fail, it takes no more
/// writes). Returns once that primary has heard it.
///
/// # Errors
/// The primary could not be reached or answered otherwise: try again later.
pub async fn announce_epoch(
    address: &str,
    token: &[u8],
    epoch: u64,
    timeout: Duration,
) -> Result<(), ReplicationError> {
    let answer = tokio::time::timeout(
        timeout,
        exchange(
            address,
            token,
            timeout,
            (PeerKind::Monitor, epoch),
            "status report",
        ),
    )
    .await
    .map_err(|_| NetError::TimedOut {
        context: format!("no answer from {address} within {timeout:?}"),
    })?;
    match answer {
        // Deposed now, or it had heard of the epoch already.
        Ok(_) | Err(ReplicationError::Fenced { .. }) => Ok(()),
        Err(err) => Err(err),
    }
}

/// The handshake as `kind`, then the one report the primary sends such a peer.
fn ask(
    address: &str,
    token: Option<&str>,
    timeout: Duration,
    kind: PeerKind,
    what: &str,
) -> Result<Message, ReplicationError> {
    let token = token.unwrap_or("").as_bytes();
    runtime().block_on(async {
        tokio::time::timeout(timeout, exchange(address, token, timeout, (kind, 0), what))
            .await
            .map_err(|_| NetError::TimedOut {
                context: format!("no {what} from {address} within {timeout:?}"),
            })?
    })
}

async fn exchange(
    address: &str,
    token: &[u8],
    timeout: Duration,
    (kind, epoch): (PeerKind, u64),
    what: &str,
) -> Result<Message, ReplicationError> {
    let (mut reader, mut writer, nonce) = dial(address, timeout, timeout).await?;
    let hello = holding_nothing(kind, "status", token, &nonce, &handshake::nonce(), epoch);
    write_frame(&mut writer, &hello).await?;
    let report = read_frame_within(&mut reader, timeout, what).await?;
    match report.clone().refusal(0) {
        Some(refused) => Err(refused),
        None => Ok(report),
    }
}

/// Connects to `address` (within `timeout`) and reads the server's challenge; returns the
/// stream's halves (writes fail after `stall`) and the challenge's nonce.
///
/// # Errors
/// The server cannot be reached, or sends anything but a challenge.
pub(crate) async fn dial(
    address: &str,
    timeout: Duration,
    stall: Duration,
) -> Result<(OwnedReadHalf, StallWriter<OwnedWriteHalf>, ByteBuf), ReplicationError> {
    let stream = client::connect(address, timeout)
        .await
        .map_err(|source| NetError::Connect {
            address: address.to_owned(),
            source,
        })?;
    let (mut reader, writer) = stream.into_split();
    let writer = StallWriter::new(writer, stall);
    match read_handshake_frame(&mut reader, timeout, "challenge").await? {
        Message::Challenge { nonce } => Ok((reader, writer, nonce)),
        other => Err(unexpected(other, "a challenge")),
    }
}

/// The hello of a peer that holds no log (a monitor, a verifier, a candidate asking a
/// member): its `kind`, `name`, proof of `token` for the server's `nonce`, its own nonce
/// and the newest `epoch` it knows.
pub(crate) fn holding_nothing(
    kind: PeerKind,
    name: &str,
    token: &[u8],
    nonce: &[u8],
    own_nonce: &[u8],
    epoch: u64,
) -> Message {
    Message::Hello {
        kind,
        name: name.to_owned(),
        proof: ByteBuf::from(handshake::prove(token, Role::Peer, nonce)),
        nonce: ByteBuf::from(own_nonce.to_vec()),
        epoch,
        flushed_lsn: 0,
        flushed_id: (0, 0),
        lineage: 0,
        fsync: false,
        history: Vec::new(),
        listen: None,
    }
}
