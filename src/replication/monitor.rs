//! `replikv status` and `replikv verify`: one question to a primary (its replicas' state
//! and lag, or how their tables compare with its own), one report back.

use std::time::Duration;

use serde_bytes::ByteBuf;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::handshake::{self, Role};
use super::primary::PrimaryStatus;
use super::protocol::{
    read_frame_within, read_handshake_frame, unexpected, write_frame, Message, PeerKind,
    DROP_SLOT_REQUEST, FOLLOW_REQUEST,
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
    status_of(ask(
        address,
        token,
        timeout,
        PeerKind::Monitor,
        "status report",
    )?)
}

/// The status a primary reported in `report`.
fn status_of(report: Message) -> Result<PrimaryStatus, ReplicationError> {
    match report {
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
            PeerKind::Monitor.into(),
            epoch,
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

/// Asks the primary at `address` to hand over to its replica `to` (`replikv switchover`);
/// returns the new primary's address once it serves. The primary's owner carries it out
/// (`replikv primary` does, with `Primary.serve_switchover_request`); `timeout` bounds
/// the whole wait.
///
/// # Errors
/// As [`fetch_status`]; the primary's refusal (the switchover failed, or its owner takes
/// no requests), with its reason.
pub fn request_switchover(
    address: &str,
    to: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<String, ReplicationError> {
    let hello = Ask {
        kind: PeerKind::Operator,
        name: to,
        instruction: None,
    };
    match ask(address, token, timeout, hello, "switchover")? {
        Message::Lead { address } => Ok(address),
        other => Err(unexpected(other, "the new primary's address")),
    }
}

/// Tells the replica whose member address is `address` to follow the primary at
/// `primary` from now on (`replikv follow`).
///
/// # Errors
/// As [`fetch_status`], at the replica's member address.
pub fn request_follow(
    address: &str,
    primary: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(), ReplicationError> {
    let lead = Message::Lead {
        address: primary.to_owned(),
    };
    let hello = Ask {
        kind: PeerKind::Operator,
        name: FOLLOW_REQUEST,
        instruction: Some(lead),
    };
    match ask(address, token, timeout, hello, "acknowledgement")? {
        Message::Lead { address } if address == primary => Ok(()),
        other => Err(unexpected(other, "an acknowledgement")),
    }
}

/// Asks the primary at `address` to drop the slot of its replica `name`, gone for good
/// (`replikv drop-slot`); returns the primary's status once it is dropped.
///
/// # Errors
/// As [`fetch_status`]; the primary's refusal: no slot has that name (the refusal lists
/// those it has), or that replica is connected.
pub fn request_drop_slot(
    address: &str,
    name: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<PrimaryStatus, ReplicationError> {
    let hello = Ask {
        kind: PeerKind::Operator,
        name: DROP_SLOT_REQUEST,
        instruction: Some(Message::DropSlot {
            name: name.to_owned(),
        }),
    };
    let report = ask(address, token, timeout, hello, "status report")?;
    status_of(report)
}

/// Who asks, by what name, and an instruction sent after the hello, if any.
struct Ask<'a> {
    kind: PeerKind,
    name: &'a str,
    instruction: Option<Message>,
}

/// The handshake as `kind`, then the one report the primary sends such a peer.
fn ask<'a>(
    address: &str,
    token: Option<&str>,
    timeout: Duration,
    hello: impl Into<Ask<'a>>,
    what: &str,
) -> Result<Message, ReplicationError> {
    let token = token.unwrap_or("").as_bytes();
    let hello = hello.into();
    // Each step has `timeout` and says what it waited for (a port that never challenges is
    // not replikv's); this bound, a little later, catches whatever else is slow.
    let backstop = timeout + Duration::from_millis(250);
    runtime().block_on(async {
        tokio::time::timeout(backstop, exchange(address, token, timeout, hello, 0, what))
            .await
            .map_err(|_| NetError::TimedOut {
                context: format!("no {what} from {address} within {timeout:?}"),
            })?
    })
}

impl From<PeerKind> for Ask<'_> {
    fn from(kind: PeerKind) -> Self {
        Ask {
            kind,
            name: "status",
            instruction: None,
        }
    }
}

async fn exchange(
    address: &str,
    token: &[u8],
    timeout: Duration,
    ask: Ask<'_>,
    epoch: u64,
    what: &str,
) -> Result<Message, ReplicationError> {
    let (mut reader, mut writer, nonce) = dial(address, timeout, timeout).await?;
    let hello = holding_nothing(
        ask.kind,
        ask.name,
        token,
        &nonce,
        &handshake::nonce(),
        epoch,
    );
    write_frame(&mut writer, &hello).await?;
    if let Some(instruction) = &ask.instruction {
        write_frame(&mut writer, instruction).await?;
    }
    let report = read_frame_within(&mut reader, timeout, what).await?;
    match report.clone().refusal(0) {
        Some(refused) => Err(refused),
        None => Ok(report),
    }
}

/// The longest wait for a server's challenge, which a replikv server sends as it accepts.
const CHALLENGE_WAIT: Duration = Duration::from_secs(3);

/// Connects to `address` (within `timeout`) and reads the server's challenge (within
/// `timeout` too, and at most [`CHALLENGE_WAIT`]); returns the stream's halves (writes
/// fail after `stall`) and the challenge's nonce.
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
    // A replikv server challenges at once: silence means some other service is there (a
    // cache node's port, a database), which the message should make plain, and soon (a
    // replica's status shows nothing wrong meanwhile).
    let timeout = timeout.min(CHALLENGE_WAIT);
    let first = read_handshake_frame(&mut reader, timeout, "challenge")
        .await
        .map_err(|err| match err {
            ReplicationError::Net(NetError::TimedOut { .. }) => NetError::TimedOut {
                context: format!(
                    "{address} took the connection but sent no replikv challenge within \
                     {timeout:?}: is it a replikv primary's (or replica's member) address?"
                ),
            }
            .into(),
            other => other,
        })?;
    match first {
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
        store_id: 0,
        held: None,
    }
}
