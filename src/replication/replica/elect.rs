//! The candidate's side of a promotion over TCP: ask every member to raise its epoch,
//! count the answers with the [`Election`] machine, fetch what the adopted log holds
//! beyond this replica's, and tell the members who leads once it does.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::{NetError, ReplicationError};
use crate::net::stall::StallWriter;
use crate::replication::handshake::{self, Role};
use crate::replication::machine::promotion::{Answer, Election, MemberLog, Outcome};
use crate::replication::machine::{ReplicaAction, ReplicaMachine};
use crate::replication::monitor::{dial, holding_nothing};
use crate::replication::protocol::{
    read_frame_idle, read_handshake_frame, unexpected, write_frame, Message, PeerKind,
};
use crate::store::{EpochHistory, Store};

/// How long asking one member may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Once enough members granted, how much longer the others may take to answer (a longer
/// log among them loses fewer async writes).
const GRACE: Duration = Duration::from_millis(300);
/// How long a fetch may go without a frame.
const FETCH_IDLE: Duration = Duration::from_secs(10);

/// An open connection to a member that granted the epoch.
pub(super) struct Link {
    reader: OwnedReadHalf,
    writer: StallWriter<OwnedWriteHalf>,
}

/// Who asks, and for what epoch.
pub(super) struct Ballot<'a> {
    pub token: &'a [u8],
    pub name: &'a str,
    pub epoch: u64,
}

/// Asks every member in `peers` (`(name, address)`), feeding the answers to `election`
/// until its outcome is known; returns it with the links of the members that granted.
pub(super) async fn run(
    mut election: Election,
    peers: Vec<(String, String)>,
    ballot: &Ballot<'_>,
    force: bool,
) -> (Outcome, BTreeMap<String, Link>) {
    let mut asks = JoinSet::new();
    for (name, address) in peers {
        let (token, candidate, epoch) =
            (ballot.token.to_vec(), ballot.name.to_owned(), ballot.epoch);
        asks.spawn(async move {
            let asked = tokio::time::timeout(ASK_TIMEOUT, ask(&address, &token, &candidate, epoch))
                .await
                .unwrap_or_else(|_| {
                    Err(NetError::TimedOut {
                        context: format!("no answer from {address} within {ASK_TIMEOUT:?}"),
                    }
                    .into())
                });
            (name, asked)
        });
    }
    let mut links = BTreeMap::new();
    let mut deadline = Instant::now() + ASK_TIMEOUT + GRACE;
    loop {
        let outcome = election.outcome(false, force);
        if !matches!(outcome, Outcome::Waiting) {
            return (outcome, links);
        }
        if matches!(election.outcome(true, false), Outcome::Won(_)) {
            deadline = deadline.min(Instant::now() + GRACE);
        }
        let next = tokio::select! {
            next = asks.join_next() => next,
            () = tokio::time::sleep_until(deadline) => None,
        };
        let Some(Ok((name, asked))) = next else {
            return (election.outcome(true, force), links);
        };
        let answer = match asked {
            Ok((mut log, link)) => {
                log.name.clone_from(&name);
                links.insert(name.clone(), link);
                Answer::Granted(log)
            }
            Err(ReplicationError::Fenced { epoch, .. }) => Answer::Refused { seen: epoch },
            Err(err) => Answer::Unreachable(err.to_string()),
        };
        tracing::info!(member = %name, answer = ?answer, "a member answered the promotion");
        election.answer(&name, answer);
    }
}

/// Asks the member at `address` to grant `epoch` to `candidate`.
async fn ask(
    address: &str,
    token: &[u8],
    candidate: &str,
    epoch: u64,
) -> Result<(MemberLog, Link), ReplicationError> {
    let (mut reader, mut writer, nonce) = dial(address, ASK_TIMEOUT, ASK_TIMEOUT).await?;
    let my_nonce = handshake::nonce();
    let hello = holding_nothing(
        PeerKind::Candidate,
        candidate,
        token,
        &nonce,
        &my_nonce,
        epoch,
    );
    write_frame(&mut writer, &hello).await?;
    match read_handshake_frame(&mut reader, ASK_TIMEOUT, "grant").await? {
        Message::Granted {
            proof,
            flushed_lsn,
            history,
            counted,
            view,
            store_id,
        } => {
            if !handshake::verify(token, Role::Primary, &my_nonce, &proof) {
                return Err(ReplicationError::Auth(format!(
                    "the member at {address} could not prove the token"
                )));
            }
            let history = EpochHistory::new(history).map_err(ReplicationError::Protocol)?;
            let log = MemberLog {
                name: String::new(),
                flushed_lsn,
                history,
                counted,
                view,
                store_id,
            };
            Ok((log, Link { reader, writer }))
        }
        other => Err(unexpected(other, "a grant")),
    }
}

impl Link {
    /// Fetches the entries after `store`'s last LSN up to `up_to_lsn` from this member
    /// (of the new `epoch`, which it granted) and appends them.
    ///
    /// # Errors
    /// The member fails or sends anything out of order: nothing past the last whole
    /// entry is kept.
    pub(super) async fn fetch(
        &mut self,
        store: &Store,
        epoch: u64,
        up_to_lsn: u64,
    ) -> Result<(), ReplicationError> {
        let flushed = store.synced_lsn();
        let entry_epoch = store.epoch_history().epoch_at(flushed);
        let mut machine = ReplicaMachine::new(flushed, flushed, epoch, entry_epoch);
        machine.welcomed(epoch, up_to_lsn, false)?;
        let request = Message::Fetch {
            after_lsn: flushed,
            up_to_lsn,
        };
        write_frame(&mut self.writer, &request).await?;
        while machine.flushed_lsn() < up_to_lsn {
            let frame = read_frame_idle(&mut self.reader, FETCH_IDLE, "fetched entries").await?;
            if let Message::Refused { .. } = frame {
                // The member says why it cannot send them (its log no longer reaches back).
                return Err(frame
                    .refusal(epoch)
                    .unwrap_or_else(|| ReplicationError::Protocol("the member refused".into())));
            }
            for action in machine.receive(frame)? {
                if let ReplicaAction::Append(payloads) = action {
                    // Durable before the next frame: the promotion waits for the fetched
                    // entries to be on this disk, not only applied.
                    let appended = tokio::task::block_in_place(|| {
                        let applied = store.append_replicated(&payloads)?;
                        Ok::<_, crate::Error>((store.sync_replicated()?, applied))
                    });
                    let (flushed, applied) = appended.map_err(|e| {
                        ReplicationError::Protocol(format!("cannot append fetched entries: {e}"))
                    })?;
                    machine.durable(flushed, applied);
                }
            }
        }
        Ok(())
    }

    /// Tells the member to follow the new primary at `address` (best effort: a member
    /// that misses it keeps its raised epoch and can be re-pointed by hand).
    pub(super) async fn lead(mut self, address: &str) {
        let lead = Message::Lead {
            address: address.to_owned(),
        };
        if let Err(err) = write_frame(&mut self.writer, &lead).await {
            tracing::warn!(error = %err, "a member did not hear who leads");
        }
    }
}
