//! `Primary::verify`: each connected replica is asked for its recent per-table sums over
//! its stream link, and they are compared with the primary's at an LSN both recorded.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{lock, Shared};
use crate::error::Result;
use crate::follow::SumsAt;
use crate::replication::protocol::{Message, PeerKind};
use crate::replication::verify::{compare, ReplicaCheck, Verdict, VerifyReport};

/// How long a verification that a verifier peer (`replikv verify`) asked for waits for
/// the replicas' answers.
pub(super) const VERIFIER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longer timeouts are cut to this (answers take a round trip; `Duration::MAX` must not
/// overflow the deadline).
const LONGEST_VERIFY: Duration = Duration::from_secs(3600);
/// Why a replica without a stream link is not comparable.
const NOT_STREAMING: &str = "not streaming (disconnected, or receiving a snapshot)";
/// How long a verification waits before it asks a replica again when their rings share
/// no LSN yet.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The stream links that can carry a message the stream does not make itself (a verify
/// request, a switchover's handover or lead), by replica name.
#[derive(Default)]
pub(super) struct LinkQueues {
    links: Mutex<BTreeMap<String, Link>>,
    next_id: AtomicU64,
}

struct Link {
    /// Tells one connection from a newer one of the same name.
    serial: u64,
    requests: mpsc::UnboundedSender<Request>,
    waiting: HashMap<u64, oneshot::Sender<Vec<SumsAt>>>,
}

/// A message for a stream link to send, and who waits until it is written.
pub(super) struct Request {
    pub message: Message,
    pub written: Option<oneshot::Sender<()>>,
}

impl Request {
    /// Tells the waiter (if any) that the message was written.
    pub(super) fn sent(self) {
        if let Some(written) = self.written {
            let _ = written.send(());
        }
    }
}

/// A stream link's end of the registry: the requests to send to its peer. Dropping it
/// unregisters the link (unless a newer connection of that name replaced it).
pub(super) struct LinkRequests<'a> {
    links: &'a LinkQueues,
    name: String,
    serial: u64,
    receiver: mpsc::UnboundedReceiver<Request>,
}

impl LinkRequests<'_> {
    /// The next request to send; waits for one.
    pub(super) async fn next(&mut self) -> Option<Request> {
        self.receiver.recv().await
    }

    /// A request waiting to be sent, if any.
    pub(super) fn pending(&mut self) -> Option<Request> {
        self.receiver.try_recv().ok()
    }
}

impl Drop for LinkRequests<'_> {
    fn drop(&mut self) {
        let mut links = lock(&self.links.links);
        if links
            .get(&self.name)
            .is_some_and(|l| l.serial == self.serial)
        {
            links.remove(&self.name);
        }
    }
}

impl LinkQueues {
    /// Registers the stream link of `name`, replacing an older one.
    pub(super) fn register(&self, name: &str) -> LinkRequests<'_> {
        let serial = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (requests, receiver) = mpsc::unbounded_channel();
        let link = Link {
            serial,
            requests,
            waiting: HashMap::new(),
        };
        lock(&self.links).insert(name.to_owned(), link);
        LinkRequests {
            links: self,
            name: name.to_owned(),
            serial,
            receiver,
        }
    }

    /// Queues a request to `name`; `None` if it has no link.
    fn ask(&self, name: &str, since_lsn: u64) -> Option<oneshot::Receiver<Vec<SumsAt>>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut links = lock(&self.links);
        let link = links.get_mut(name)?;
        let (reply, answer) = oneshot::channel();
        let request = Request {
            message: Message::VerifyRequest { id, since_lsn },
            written: None,
        };
        link.requests.send(request).ok()?;
        // Requests whose verification gave up (timed out) are forgotten here: a replica
        // that never answers cannot make the map grow.
        link.waiting.retain(|_, waiting| !waiting.is_closed());
        link.waiting.insert(id, reply);
        Some(answer)
    }

    /// Queues `message` to `name`'s link; the receiver hears once it is written. `None`
    /// if it has no link.
    pub(super) fn tell(&self, name: &str, message: Message) -> Option<oneshot::Receiver<()>> {
        let (written, heard) = oneshot::channel();
        let request = Request {
            message,
            written: Some(written),
        };
        lock(&self.links).get(name)?.requests.send(request).ok()?;
        Some(heard)
    }

    /// The names of the links registered now.
    pub(super) fn names(&self) -> Vec<String> {
        lock(&self.links).keys().cloned().collect()
    }

    /// Hands `name`'s reply to the verification waiting for it (a late one is dropped).
    pub(super) fn reply(&self, name: &str, id: u64, sums: Vec<SumsAt>) {
        let waiting = lock(&self.links)
            .get_mut(name)
            .and_then(|link| link.waiting.remove(&id));
        if let Some(waiting) = waiting {
            let _ = waiting.send(sums);
        }
    }
}

/// What a replica answered to one request.
enum Answer {
    Sums(Vec<SumsAt>),
    /// It has no stream link, or the link ended before it answered.
    Disconnected,
    /// Nothing came back before the deadline.
    Silent,
}

async fn answer(asked: Option<oneshot::Receiver<Vec<SumsAt>>>, deadline: Instant) -> Answer {
    let Some(asked) = asked else {
        return Answer::Disconnected;
    };
    match tokio::time::timeout_at(deadline, asked).await {
        Ok(Ok(sums)) => Answer::Sums(sums),
        Ok(Err(_)) => Answer::Disconnected,
        Err(_) => Answer::Silent,
    }
}

impl Shared {
    /// Compares every replica's sums with the primary's, asking again (until `timeout`,
    /// at most an hour) those whose rings share no LSN yet.
    pub(super) async fn verify(&self, timeout: Duration) -> Result<VerifyReport> {
        let timeout = timeout.min(LONGEST_VERIFY);
        let deadline = Instant::now() + timeout;
        let lsn = self.store.last_lsn();
        let mut pending: Vec<String> = self.machine(|m| {
            m.peers()
                .filter(|peer| peer.kind == PeerKind::Replica)
                .map(|peer| peer.id.name.clone())
                .collect()
        });
        let mut checks: BTreeMap<String, ReplicaCheck> = BTreeMap::new();
        loop {
            let since_lsn = self.store.recent_checksums(0)?.first().map_or(0, |c| c.lsn);
            // Every request goes out before any answer is awaited.
            let asked: Vec<_> = pending
                .drain(..)
                .map(|name| {
                    let asked = self.link_queues.ask(&name, since_lsn);
                    (name, asked)
                })
                .collect();
            let mut answers = Vec::with_capacity(asked.len());
            for (name, asked) in asked {
                answers.push((name, answer(asked, deadline).await));
            }
            // Read after the answers: the primary recorded every LSN a replica did by then.
            let ours: Vec<SumsAt> = self
                .store
                .recent_checksums(since_lsn)?
                .into_iter()
                .map(SumsAt::from)
                .collect();
            for (name, answer) in answers {
                let check = match answer {
                    Answer::Sums(theirs) => {
                        let check = compare(&name, &ours, &theirs);
                        if check.verdict == Verdict::NotComparable {
                            pending.push(name.clone());
                        }
                        check
                    }
                    Answer::Disconnected => {
                        ReplicaCheck::not_comparable(&name, NOT_STREAMING.to_owned())
                    }
                    Answer::Silent => {
                        ReplicaCheck::not_comparable(&name, format!("no answer within {timeout:?}"))
                    }
                };
                checks.insert(name, check);
            }
            if pending.is_empty() || Instant::now() + RETRY_PAUSE >= deadline {
                break;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        Ok(VerifyReport {
            lsn,
            replicas: checks.into_values().collect(),
        })
    }
}
