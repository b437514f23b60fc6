//! Where a request goes: the key's owner if it is up, else the next node on the ring; a
//! node that fails is marked down and the request tried once more; a node back from a
//! failure is probed for its log position first. Requests for several nodes go out to all
//! of them before any reply is read, so they cost one round trip, not one per node.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::cluster::Cluster;
use super::conn::{batches, refused, Conn};
use super::health::{Admission, Position};
use super::reply::Value;
use crate::error::{CacheError, Error, Result};

/// What a node made of a request.
pub(super) enum Answer {
    /// The replies, one per command, in order.
    Replies(Vec<Value>),
    /// It failed and is now down (why is in its health record).
    Failed,
}

/// A node's part of a fan-out: its connection (or why there is none) and its replies.
struct Link<'a, C> {
    node: usize,
    conn: Result<Conn>,
    batches: Vec<&'a [C]>,
    replies: Vec<Value>,
}

impl<C> Link<'_, C> {
    /// Sends this round's batch, if there is one and the link still works; returns
    /// whether it wrote.
    fn send<A>(&mut self, round: usize) -> bool
    where
        C: AsRef<[A]>,
        A: AsRef<[u8]>,
    {
        if let (Ok(conn), Some(batch)) = (&mut self.conn, self.batches.get(round)) {
            if let Err(err) = conn.send(batch) {
                self.conn = Err(err);
            }
            return true;
        }
        false
    }

    /// Reads the replies to this round's batch.
    fn receive(&mut self, round: usize) {
        if let (Ok(conn), Some(batch)) = (&mut self.conn, self.batches.get(round)) {
            match conn.receive(batch.len()) {
                Ok(replies) => self.replies.extend(replies),
                Err(err) => self.conn = Err(err),
            }
        }
    }
}

/// Whether `err` means the node itself failed (its link broke, timed out or carried
/// garbage), rather than that it refused something.
fn is_failure(err: &Error) -> bool {
    matches!(
        err,
        Error::Net(_) | Error::Cache(CacheError::Protocol { .. })
    )
}

/// A node's answer to `RKV.POSITION`: `[epoch, lsn, state]`.
fn position(node: &str, reply: &Value) -> Result<Position, CacheError> {
    if let Value::Array(items) = reply {
        if let [Value::Int(_), Value::Int(lsn), Value::Bulk(state)] = items.as_slice() {
            if let Ok(lsn) = u64::try_from(*lsn) {
                return Ok(Position {
                    lsn,
                    follows_log: state.as_slice() != b"none",
                });
            }
        }
    }
    Err(refused(node, "RKV.POSITION", reply))
}

impl Cluster {
    /// The node that takes `key` now: its owner, or the next usable node on the ring.
    pub(super) fn owner(&self, key: &[u8]) -> Option<usize> {
        self.ring.owner(key, |node| self.admitted(node))
    }

    /// Whether a request may go to `node`, probing it if its time out is over.
    fn admitted(&self, node: usize) -> bool {
        let observed = self.observed.load(Ordering::Acquire);
        let admission =
            self.members[node]
                .health()
                .admit(Instant::now(), observed, self.options.retry_after);
        match admission {
            Admission::Use => true,
            Admission::Skip => false,
            Admission::Probe => self.probe(node),
        }
    }

    /// Asks a returning node its log position; it is up again once it has reached what
    /// this client has seen (or follows no log).
    fn probe(&self, node: usize) -> bool {
        let member = &self.members[node];
        // A node that missed this client's invalidations is flushed before anything else:
        // it may hold values they dropped everywhere else, and it is not used until then.
        let missed = member.health().missed();
        if missed > 0 {
            match self.ask(node, &[["FLUSHALL"]]) {
                Ok(Answer::Replies(replies)) if matches!(replies[0], Value::Status(_)) => {
                    member.health().flushed(missed);
                }
                Ok(Answer::Failed) => return false,
                Ok(Answer::Replies(replies)) => {
                    let reason = format!("FLUSHALL answered {:?}", replies[0]);
                    member.fail(self.options.retry_after, reason);
                    return false;
                }
                Err(err) => {
                    member.fail(self.options.retry_after, err.to_string());
                    return false;
                }
            }
        }
        let reason = match self.ask(node, &[["RKV.POSITION"]]) {
            Ok(Answer::Failed) => return false,
            Ok(Answer::Replies(replies)) => match position(&member.address, &replies[0]) {
                Ok(position) => {
                    // The bar as it stands now: it may have risen during the probe.
                    let observed = self.observed.load(Ordering::Acquire);
                    return member.health().checked(
                        Instant::now(),
                        self.options.retry_after,
                        position,
                        observed,
                    );
                }
                Err(err) => err.to_string(),
            },
            Err(err) => err.to_string(),
        };
        // A node that cannot say where it is cannot be trusted to have caught up.
        member.fail(self.options.retry_after, reason);
        false
    }

    /// Sends `commands` to `node`.
    pub(super) fn ask<C, A>(&self, node: usize, commands: &[C]) -> Result<Answer>
    where
        C: AsRef<[A]>,
        A: AsRef<[u8]>,
    {
        self.fan_out(&[(node, commands)])
            .pop()
            .expect("invariant: a fan-out answers for every node it is given")
    }

    /// Sends `command` to `key`'s owner, and once more to the next owner if that one
    /// fails. Returns the node that answered and its reply, or `None` if none could.
    ///
    /// # Errors
    /// A node refused the connection's token.
    pub(super) fn on_owner<A: AsRef<[u8]>>(
        &self,
        key: &[u8],
        command: &[A],
    ) -> Result<Option<(usize, Value)>> {
        for _attempt in 0..2 {
            let Some(node) = self.owner(key) else { break };
            if let Answer::Replies(mut replies) = self.ask(node, &[command])? {
                let reply = replies.pop().expect("invariant: one reply per command");
                return Ok(Some((node, reply)));
            }
        }
        Ok(None)
    }

    /// Sends `commands` (invalidations) to every node that is not down, and returns the
    /// replies of those that answered; the others count as having missed them.
    ///
    /// # Errors
    /// [`CacheError::Unavailable`] when none answered; a node refused the token.
    pub(super) fn everywhere<A: AsRef<[u8]>>(
        &self,
        commands: &[Vec<A>],
    ) -> Result<Vec<(usize, Vec<Value>)>> {
        let errands: Vec<(usize, &[Vec<A>])> = self
            .reachable()
            .into_iter()
            .map(|node| (node, commands))
            .collect();
        let mut answered = Vec::new();
        for ((node, _), answer) in errands.iter().zip(self.fan_out(&errands)) {
            if let Answer::Replies(replies) = answer? {
                answered.push((*node, replies));
            }
        }
        // The nodes skipped or failed are flushed before they are used again.
        for (node, member) in self.members.iter().enumerate() {
            if !answered.iter().any(|(reached, _)| *reached == node) {
                member.health().missed_invalidation();
            }
        }
        if answered.is_empty() {
            return Err(self.unavailable());
        }
        Ok(answered)
    }

    /// The nodes that are not down: what invalidations and reports go to.
    pub(super) fn reachable(&self) -> Vec<usize> {
        let now = Instant::now();
        (0..self.members.len())
            .filter(|&node| self.members[node].health().reachable(now))
            .collect()
    }

    /// Sends each node its commands, all nodes before any reply is read.
    ///
    /// # Errors
    /// Per node: it refused the token. A node that fails is marked down and answers
    /// [`Answer::Failed`].
    pub(super) fn fan_out<C, A>(&self, errands: &[(usize, &[C])]) -> Vec<Result<Answer>>
    where
        C: AsRef<[A]>,
        A: AsRef<[u8]>,
    {
        let options = &self.options;
        let mut links: Vec<Link<'_, C>> = errands
            .iter()
            .map(|&(node, commands)| Link {
                node,
                conn: self.members[node].take(options.token.as_deref(), options.timeout),
                batches: batches(commands),
                replies: Vec::with_capacity(commands.len()),
            })
            .collect();
        let rounds = links.iter().map(|link| link.batches.len()).max();
        for round in 0..rounds.unwrap_or(0) {
            for link in &mut links {
                if link.send::<A>(round) {
                    self.members[link.node].sent();
                }
            }
            for link in &mut links {
                link.receive(round);
            }
        }
        links
            .into_iter()
            .map(|link| {
                let member = &self.members[link.node];
                match link.conn {
                    Ok(conn) => {
                        member.give_back(conn);
                        Ok(Answer::Replies(link.replies))
                    }
                    Err(err) if is_failure(&err) => {
                        member.fail(options.retry_after, err.to_string());
                        Ok(Answer::Failed)
                    }
                    Err(err) => Err(err),
                }
            })
            .collect()
    }

    /// The error when no node can take a request: each node's last failure.
    pub(super) fn unavailable(&self) -> Error {
        let nodes: Vec<String> = self
            .members
            .iter()
            .map(|member| {
                let health = member.health();
                match health.last_error() {
                    Some(error) => format!("{}: {error}", member.address),
                    None => format!("{}: {:?}", member.address, health.standing()),
                }
            })
            .collect();
        CacheError::Unavailable(nodes.join("; ")).into()
    }
}
