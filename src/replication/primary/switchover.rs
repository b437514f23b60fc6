//! Planned switchover (issue 8): the primary pauses writes at an exact LSN, waits until
//! the chosen replica holds it, hands it the log (it becomes the primary of the next epoch
//! with the same settings), tells the other replicas to follow it, and is deposed; the
//! caller then makes its store follow the new primary. No write is lost and none needs a
//! resync; writers see a retryable `Paused` error for the moment it takes.

use std::time::{Duration, Instant};

use super::{lock, Primary};
use crate::error::{ReplicationError, Result};
use crate::net::runtime;
use crate::replication::handover::Settings;
use crate::replication::protocol::Message;
use crate::store::SyncReplication;

/// How often the switchover looks at the target's progress.
const POLL: Duration = Duration::from_millis(1);

/// What a switchover did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switchover {
    /// The replica that is the primary now.
    pub to: String,
    /// Where it serves.
    pub address: String,
    /// Its epoch.
    pub epoch: u64,
    /// The last LSN of the old primary: the new epoch starts after it.
    pub last_lsn: u64,
    /// How long writes were refused: from the pause until the new primary served.
    pub paused: Duration,
}

fn refused(reason: String) -> crate::Error {
    ReplicationError::Refused { reason }.into()
}

impl Primary {
    /// Hands this primary's log to the replica named `to` (one that fsyncs and listens)
    /// and deposes this primary, whose store will follow the new one as `follow_as`;
    /// each step waits at most `timeout`. The other replicas are
    /// told to follow the new primary. Afterwards this primary is closed and its store
    /// follows nobody yet: [`crate::replication::replica::Replica::attach`] makes it the
    /// new primary's replica.
    ///
    /// # Errors
    /// [`ReplicationError::Refused`] when `to` is not a replica that fsyncs and listens,
    /// is not connected, or does not catch up within `timeout`: writes resume then and
    /// nothing changed. If the replica was told to take over but did not answer within
    /// `timeout`, this primary is deposed anyway (it may have taken over) and the error
    /// says so.
    pub fn switchover(&self, to: &str, follow_as: &str, timeout: Duration) -> Result<Switchover> {
        let shared = &self.shared;
        let address = self.member(to, timeout)?;
        let started = Instant::now();
        let last_lsn = shared.store.pause_writes(format!(
            "a switchover to {to:?} at {address} is under way: retry there in a moment"
        ))?;
        // Shipped at once, as for a sync writer, rather than at the next ship interval.
        shared.sync.will_wait(last_lsn);
        let epoch = shared.store.epoch() + 1;
        let settings = Settings::of(&shared.options);
        let mut members: Vec<String> = shared
            .slots
            .list()
            .into_iter()
            .filter(|slot| slot.fsync && slot.name != to)
            .map(|slot| slot.name)
            .collect();
        members.push(follow_as.to_owned());
        let handover = Message::Handover {
            epoch,
            last_lsn,
            settings,
            members,
        };
        let (done, serving) = tokio::sync::oneshot::channel();
        *lock(&shared.handing_over) = Some((to.to_owned(), done));
        if let Err(err) = self
            .caught_up(to, last_lsn, timeout)
            .and_then(|()| self.tell(to, handover, timeout))
        {
            lock(&shared.handing_over).take();
            shared.store.resume_writes();
            return Err(err);
        }
        // The target says where it serves, on its link, once it does.
        let answered = runtime()
            .block_on(async { tokio::time::timeout(timeout, serving).await })
            .is_ok_and(|served| served.is_ok());
        lock(&shared.handing_over).take();
        let paused = started.elapsed();
        // From here this primary never takes a write again, whatever the outcome.
        shared.sync.fence(epoch);
        shared.store.raise_epoch(epoch)?;
        if !answered {
            self.close();
            return Err(refused(format!(
                "{to:?} was told to take over as the primary of epoch {epoch} but did not \
                 answer within {timeout:?}: this primary is deposed; check {address}"
            )));
        }
        for name in shared.verify_links.names() {
            if name != to {
                let lead = Message::Lead {
                    address: address.clone(),
                };
                // Best effort: a replica that misses it can be re-pointed by hand.
                let _ = self.tell(&name, lead, timeout);
            }
        }
        self.close();
        shared.store.start_following()?;
        tracing::warn!(%to, %address, epoch, last_lsn, ?paused, "switched over");
        Ok(Switchover {
            to: to.to_owned(),
            address,
            epoch,
            last_lsn,
            paused,
        })
    }

    /// Where the member `to` answers; waits (at most `timeout`) for it to connect, but
    /// not when it is connected and does not listen.
    fn member(&self, to: &str, timeout: Duration) -> Result<String> {
        let members = &self.shared.members;
        let connected = || {
            self.shared
                .verify_links
                .names()
                .iter()
                .any(|name| name == to)
        };
        until(timeout, || members.address_of(to).is_some() || connected());
        members.address_of(to).ok_or_else(|| {
            let why = if connected() {
                "does not fsync or does not listen (start it with listen=)"
            } else {
                "is not connected"
            };
            refused(format!(
                "{to:?} {why}: a switchover needs a member to hand over to"
            ))
        })
    }

    /// Waits until `to` has acknowledged `lsn` as durable.
    fn caught_up(&self, to: &str, lsn: u64, timeout: Duration) -> Result<()> {
        let acked = || {
            self.shared.machine(|m| {
                m.peers()
                    .find(|peer| peer.id.name == to)
                    .map_or(0, |peer| peer.acked_lsn)
            })
        };
        if until(timeout, || acked() >= lsn) {
            Ok(())
        } else {
            Err(refused(format!(
                "{to:?} did not hold LSN {lsn} within {timeout:?} (it holds {}): writes \
                 resumed here",
                acked()
            )))
        }
    }

    /// Sends `message` on `to`'s link and waits (at most `timeout`) until it is written.
    fn tell(&self, to: &str, message: Message, timeout: Duration) -> Result<()> {
        let written = self
            .shared
            .verify_links
            .tell(to, message)
            .ok_or_else(|| refused(format!("{to:?} is not connected")))?;
        match runtime().block_on(async { tokio::time::timeout(timeout, written).await }) {
            Ok(Ok(())) => Ok(()),
            _ => Err(refused(format!(
                "the link to {to:?} did not take a message within {timeout:?}"
            ))),
        }
    }
}

/// Polls `done` until it holds or `timeout` passes; returns whether it held.
fn until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}
