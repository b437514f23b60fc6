//! Planned switchover (issue 8): the primary pauses writes at an exact LSN, waits until
//! the chosen replica holds it, hands it the log (it becomes the primary of the next epoch
//! with the same settings), tells the other replicas to follow it, and is deposed; the
//! caller then makes its store follow the new primary. No write is lost and none needs a
//! resync; writers see a retryable `Paused` error for the moment it takes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{lock, Primary, Shared};
use crate::error::{Error, ReplicationError, Result};
use crate::net::runtime;
use crate::replication::handover::{HandedMember, Settings};
use crate::replication::handshake::Denied;
use crate::replication::protocol::{write_frame, Message, RefuseCode};

/// How long a switchover request (`replikv switchover`) waits for the primary's owner.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the switchover waits for the operator's answer to be written.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

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

/// A switchover an operator asked for over the wire, waiting for the primary's owner.
pub(super) struct Request {
    to: String,
    answer: oneshot::Sender<Answer>,
}

/// How a requested switchover went (the new primary's address, or why it failed), and
/// where the operator's connection says it has written that down.
struct Answer {
    outcome: std::result::Result<String, String>,
    written: oneshot::Sender<()>,
}

/// Holds an operator's request to hand over to `to` until the primary's owner carries it
/// out ([`Primary::serve_switchover_request`]), then answers the operator on `writer`:
/// the new primary's address, or a refusal with the reason, counted as a rejection of
/// `peer`.
///
/// # Errors
/// `to` is no member to hand over to; another request is pending; the answer cannot be
/// written.
pub(super) async fn answer_request(
    shared: &Shared,
    writer: &mut super::Writer,
    peer: &SocketAddr,
    to: String,
) -> std::result::Result<(), Denied> {
    // Refused at once: the owner would wait for such a target to connect, and the
    // operator, who named a replica that should be running, would see a timeout instead.
    shared
        .successor(&to)
        .map_err(|reason| Denied::new(RefuseCode::Protocol, reason))?;
    let (answer, answered) = oneshot::channel();
    {
        let mut pending = lock(&shared.requested);
        if pending.is_some() {
            return Err(Denied::new(
                RefuseCode::Busy,
                "another switchover request is pending",
            ));
        }
        *pending = Some(Request { to, answer });
    }
    let (outcome, written) = if let Ok(Ok(Answer { outcome, written })) =
        tokio::time::timeout(REQUEST_TIMEOUT, answered).await
    {
        (outcome, Some(written))
    } else {
        lock(&shared.requested).take();
        let reason = format!(
            "this primary's owner took no switchover request within {REQUEST_TIMEOUT:?}: \
                 `replikv primary` takes them; a program serving a Primary calls \
                 Primary.serve_switchover_request()"
        );
        (Err(reason), None)
    };
    let reply = match outcome {
        Ok(address) => Message::Lead { address },
        Err(reason) => {
            shared.reject(peer, &reason);
            Message::Refused {
                reason,
                code: RefuseCode::Protocol,
                epoch: shared.store.epoch(),
                fork_lsn: None,
            }
        }
    };
    let wrote = write_frame(writer, &reply).await;
    if let Some(written) = written {
        let _ = written.send(());
    }
    wrote.map_err(Denied::from)
}

impl Answer {
    /// Tells the waiting operator how the switchover went, and waits (briefly) until it
    /// is written: the server and its connections stop right after.
    fn send(to: oneshot::Sender<Answer>, outcome: std::result::Result<String, String>) {
        let (written, done) = oneshot::channel();
        if to.send(Answer { outcome, written }).is_ok() {
            let _ = runtime().block_on(async { tokio::time::timeout(ANSWER_TIMEOUT, done).await });
        }
    }
}

/// What [`Primary::hand_over`] came to.
enum Handed {
    /// The target serves: this primary closes and follows it.
    Done(Switchover),
    /// Nothing changed (writes resumed).
    Unchanged(Error),
    /// The target was told to take over and did not confirm: this primary is deposed.
    Deposed(Error),
}

impl Handed {
    /// What the operator who asked is told: the new primary's address, or why not (a
    /// refusal's reason alone: the operator's side says it was refused).
    fn outcome(&self) -> std::result::Result<String, String> {
        match self {
            Handed::Done(switched) => Ok(switched.address.clone()),
            Handed::Unchanged(Error::Replication(ReplicationError::Refused { reason }))
            | Handed::Deposed(Error::Replication(ReplicationError::Refused { reason })) => {
                Err(reason.clone())
            }
            Handed::Unchanged(err) | Handed::Deposed(err) => Err(err.to_string()),
        }
    }
}

/// Marks the switchover that holds it as ended when dropped.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn refused(reason: String) -> Error {
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
        self.conclude(self.hand_over(to, follow_as, timeout))
    }

    /// Closes this primary unless the hand-over changed nothing (its error then).
    fn conclude(&self, handed: Handed) -> Result<Switchover> {
        match handed {
            Handed::Unchanged(err) => Err(err),
            Handed::Deposed(err) => {
                self.close();
                Err(err)
            }
            Handed::Done(switched) => {
                self.close();
                self.shared.store.start_following()?;
                tracing::info!(to = %switched.to, address = %switched.address, epoch = switched.epoch, paused = ?switched.paused, "switched over");
                Ok(switched)
            }
        }
    }

    /// Everything up to the target's confirmation, and the lead to the other replicas.
    fn hand_over(&self, to: &str, follow_as: &str, timeout: Duration) -> Handed {
        let shared = &self.shared;
        // Two at once would tell two replicas to take over the same epoch: two primaries
        // whose logs fork inside it, which no fencing can tell apart.
        if shared.switching.swap(true, Ordering::AcqRel) {
            return Handed::Unchanged(refused(
                "another switchover of this primary is under way: wait for it to end".into(),
            ));
        }
        let _running = Running(&shared.switching);
        let address = match self.member(to, timeout) {
            Ok(address) => address,
            Err(err) => return Handed::Unchanged(err),
        };
        // Most of the catching up happens before the pause: a target that lags by a long
        // backlog would otherwise hold writes for all of it; one that cannot catch up is
        // found before any write waits.
        if let Err(err) = self.caught_up(to, shared.store.last_lsn(), timeout) {
            return Handed::Unchanged(err);
        }
        let started = Instant::now();
        let last_lsn = match shared.store.pause_writes(format!(
            "a switchover to {to:?} at {address} is under way: retry there in a moment"
        )) {
            Ok(last_lsn) => last_lsn,
            Err(err) => return Handed::Unchanged(err),
        };
        // Shipped at once, as for a sync writer, rather than at the next ship interval.
        shared.sync.ship_at_once(last_lsn);
        let epoch = shared.store.epoch() + 1;
        let settings = Settings::of(&shared.options);
        let mut members: Vec<HandedMember> = shared
            .slots
            .list()
            .into_iter()
            .filter(|slot| slot.fsync && slot.name != to)
            .map(|slot| HandedMember {
                name: slot.name,
                store_id: slot.store_id,
                joining: slot.joining,
            })
            .collect();
        members.push(HandedMember {
            name: follow_as.to_owned(),
            store_id: shared.store.store_id().unwrap_or(0),
            joining: false,
        });
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
            return Handed::Unchanged(err);
        }
        // The target says where it serves, on its link, once it does.
        let answered = runtime()
            .block_on(async { tokio::time::timeout(timeout, serving).await })
            .is_ok_and(|served| served.is_ok());
        lock(&shared.handing_over).take();
        let paused = started.elapsed();
        // From here this primary never takes a write again, whatever the outcome.
        shared.sync.fence(epoch);
        if let Err(err) = shared.store.raise_epoch(epoch) {
            return Handed::Deposed(err);
        }
        if !answered {
            // Deposed, not paused: writes are refused as fenced from now on (the pause said
            // to retry, which would never succeed here).
            shared.store.resume_writes();
            return Handed::Deposed(refused(format!(
                "{to:?} was told to take over as the primary of epoch {epoch} but did not \
                 answer within {timeout:?}: this primary is deposed; check {address}"
            )));
        }
        for name in shared.link_queues.names() {
            if name != to {
                let lead = Message::Lead {
                    address: address.clone(),
                };
                // Best effort: a replica that misses it can be re-pointed by hand.
                let _ = self.tell(&name, lead, timeout);
            }
        }
        Handed::Done(Switchover {
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
        let shared = &self.shared;
        until(timeout, || {
            shared.members.address_of(to).is_some() || shared.connected(to)
        });
        shared.successor(to).map_err(refused)
    }

    /// Carries out the switchover an operator asked for (`replikv switchover`), if one
    /// waits, as [`Primary::switchover`] does, and tells the operator how it went.
    /// `None` if none waits, or if it changed nothing (the target could not take over):
    /// the operator is told why, it counts as a refused connection (see
    /// [`Primary::status`]), and this primary serves on as before.
    ///
    /// # Errors
    /// The target was told to take over and did not answer in time (this primary is
    /// deposed anyway), or this primary's store cannot become a replica.
    pub fn serve_switchover_request(
        &self,
        follow_as: &str,
        timeout: Duration,
    ) -> Result<Option<Switchover>> {
        let Some(Request { to, answer }) = lock(&self.shared.requested).take() else {
            return Ok(None);
        };
        let handed = self.hand_over(&to, follow_as, timeout);
        Answer::send(answer, handed.outcome());
        // A request that cannot be carried out is the operator's to fix, not a failure of
        // this primary, which must not stop serving over it.
        if matches!(handed, Handed::Unchanged(_)) {
            return Ok(None);
        }
        self.conclude(handed).map(Some)
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
                "{to:?} did not hold LSN {lsn} within {timeout:?} (it holds {}): nothing \
                 changed, and writes go on here",
                acked()
            )))
        }
    }

    /// Sends `message` on `to`'s link and waits (at most `timeout`) until it is written.
    fn tell(&self, to: &str, message: Message, timeout: Duration) -> Result<()> {
        let written = self
            .shared
            .link_queues
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

impl Shared {
    /// Whether `name` has a link now.
    fn connected(&self, name: &str) -> bool {
        self.link_queues.names().iter().any(|linked| linked == name)
    }

    /// Where the member `to` answers, or why a switchover cannot hand over to it.
    fn successor(&self, to: &str) -> std::result::Result<String, String> {
        self.members.address_of(to).ok_or_else(|| {
            let why = if self.connected(to) {
                "does not fsync or does not listen (start it with listen=)"
            } else {
                "is not connected"
            };
            format!("{to:?} {why}: a switchover needs a member to hand over to")
        })
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
