//! The simulated network between the primary and each peer: TCP-like connections, FIFO
//! in each direction, whose frames are lost when the connection is cut. Each side learns
//! of a cut on its own, later (or, for a peer that crashed, the primary maybe never).

use std::collections::BTreeMap;

use crate::replication::machine::{LinkId, Micros};
use crate::replication::protocol::Message;

/// What travels on a connection. The handshake is modelled by its outcome only: the peer
/// says what its log holds, the primary where it resumes and where its own log ends.
#[derive(Debug, Clone)]
pub enum Frame {
    /// Peer -> primary: what its log holds.
    Hello {
        /// `(lsn, (epoch, crc))` of each entry from its confirmed LSN to the end of its
        /// log (of its last durable entry alone, for a peer that does not hold back), as
        /// [`resume_holding`](crate::replication::handshake::resume_holding) takes them.
        held: Vec<(u64, (u64, u32))>,
        /// The end of its durable log: what the primary may take as acknowledged.
        flushed_lsn: u64,
        /// Whether it holds entries back from its readers until told they are durable.
        holds_back: bool,
    },
    /// Primary -> peer: accepted; entries follow.
    Welcome {
        /// The primary's last visible LSN.
        last_lsn: u64,
        /// Where its log matches the primary's up to: a log that holds more is cut back
        /// to it (entries up to it that are not durable yet are shipped again).
        resume_at: u64,
    },
    /// A protocol message after the handshake.
    Wire(Message),
}

/// Which end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The primary's end.
    Primary,
    /// The peer's end.
    Peer,
}

/// One connection between the primary and peer `node`.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The peer it belongs to.
    pub node: usize,
    /// False once cut: nothing more is delivered on it.
    pub alive: bool,
    /// The primary's id for it, once the primary accepted the hello.
    pub link: Option<LinkId>,
    /// Whether the primary still drives it (it has not seen it end).
    pub primary_open: bool,
    /// When the primary's end asked to be polled next (an earlier request is void).
    pub wake_at: Option<Micros>,
    /// The last arrival time in each direction (to the primary, to the peer): a frame
    /// never overtakes an earlier one on the same connection.
    last_arrival: [Micros; 2],
}

/// Every connection, by its generation (unique over the run, rising).
#[derive(Debug, Default)]
pub struct Network {
    conns: BTreeMap<u64, Conn>,
    generations: u64,
}

impl Network {
    /// Opens a connection for `node`; returns its generation.
    pub fn open(&mut self, node: usize) -> u64 {
        self.generations += 1;
        let conn = Conn {
            node,
            alive: true,
            link: None,
            primary_open: true,
            wake_at: None,
            last_arrival: [0; 2],
        };
        self.conns.insert(self.generations, conn);
        self.generations
    }

    /// The connection `generation`, if it is still tracked.
    #[must_use]
    pub fn conn(&self, generation: u64) -> Option<&Conn> {
        self.conns.get(&generation)
    }

    /// The connection `generation`, to change.
    pub fn conn_mut(&mut self, generation: u64) -> Option<&mut Conn> {
        self.conns.get_mut(&generation)
    }

    /// Whether a frame sent on `generation` can still arrive.
    #[must_use]
    pub fn alive(&self, generation: u64) -> bool {
        self.conns.get(&generation).is_some_and(|c| c.alive)
    }

    /// Connections the primary drives: accepted and not yet seen to end.
    #[must_use]
    pub fn driven(&self) -> Vec<u64> {
        self.conns
            .iter()
            .filter(|(_, c)| c.primary_open && c.link.is_some())
            .map(|(generation, _)| *generation)
            .collect()
    }

    /// The connection whose primary-side id is `link`.
    #[must_use]
    pub fn by_link(&self, link: &LinkId) -> Option<u64> {
        self.conns
            .iter()
            .find(|(_, c)| c.link.as_ref() == Some(link))
            .map(|(generation, _)| *generation)
    }

    /// When a frame sent now on `generation` toward `to` arrives, `delay` after now but
    /// never before a frame sent earlier in the same direction.
    pub fn arrival(&mut self, generation: u64, to: Side, now: Micros, delay: Micros) -> Micros {
        let Some(conn) = self.conns.get_mut(&generation) else {
            return now + delay;
        };
        let slot = &mut conn.last_arrival[usize::from(to == Side::Peer)];
        *slot = (*slot).max(now + delay);
        *slot
    }

    /// Cuts `generation`: frames in flight are lost. Returns whether it was alive.
    pub fn cut(&mut self, generation: u64) -> bool {
        self.conns
            .get_mut(&generation)
            .is_some_and(|c| std::mem::replace(&mut c.alive, false))
    }

    /// The newest connection's generation (0 before the first).
    #[must_use]
    pub fn newest(&self) -> u64 {
        self.generations
    }

    /// Every connection still tracked.
    #[must_use]
    pub fn all(&self) -> Vec<u64> {
        self.conns.keys().copied().collect()
    }

    /// Forgets connections that are dead and that the primary no longer drives.
    pub fn sweep(&mut self) {
        self.conns.retain(|_, c| c.alive || c.primary_open);
    }
}
