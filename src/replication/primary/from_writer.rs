//! Shipping a sync writer's entry from the thread that made it visible, over the links'
//! shared sockets (see [`super::outbox`]), instead of waking their tasks to do it.
//!
//! Only when that thread is the sync writer itself, about to wait for the ack: an async
//! writer that led the batch would pay for the sends, and async writers beside a sync
//! writer lost a sixth of their rate that way (0.77-0.79x of two local writers, against
//! 0.84-0.96x with the tasks shipping; `benches/bench_sync.py --only async`).
//!
//! The machine decides as it does for a task: the thread takes a link's socket, asks the
//! machine what the link may be sent now, and ships it only if that is a few entries the
//! store holds in memory. Anything else (a heartbeat due, a backlog, a socket the task
//! holds, bytes the socket would not take) is left to the link's task, which is woken as
//! it always was.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::outbox::Outbox;
use super::{lock, Shared};
use crate::log::{LogPosition, RawEntry};
use crate::replication::machine::{LinkAction, LinkId, Micros, Shipped};
use crate::replication::protocol::encode_frame;
use crate::replication::ship::entry_messages;

/// A backlog this small is among the newest records, which the store keeps in memory: it
/// is read without a system call (on a task as on a writer's thread).
pub(super) const INLINE_READ_ENTRIES: u64 = 64;

/// What a link's socket was used for.
enum Served {
    /// Sent what the link may be sent now, or the link had nothing it may be sent now.
    Done,
    /// Left to the link's task, which must be woken.
    Task,
}

impl Shared {
    /// Entries up to `lsn` are visible and a sync writer waits for `wanted` among them:
    /// ships them from this thread to every link that may take them now. Returns whether
    /// every streaming link was served (and there is one), so that no task needs waking.
    pub(super) fn ship_from_writer(&self, lsn: u64, wanted: u64) -> bool {
        let now = self.now_us();
        let written = self.written.load(Ordering::Acquire);
        let outboxes: Vec<(LinkId, Arc<Outbox>)> = {
            let mut links = lock(&self.links);
            // What a task tells the machine when it wakes, told here instead.
            links.machine.visible(lsn);
            links.machine.written(written);
            links.machine.sync_wanted(wanted);
            links
                .wires
                .values()
                .filter_map(|wire| wire.outbox.clone())
                .collect()
        };
        // No link streams: whoever starts streaming looks for itself.
        let mut every = !outboxes.is_empty();
        for (id, outbox) in outboxes {
            every &= matches!(self.ship_over(&id, &outbox, now), Served::Done);
        }
        every
    }

    fn ship_over(&self, id: &LinkId, outbox: &Outbox, now: Micros) -> Served {
        let Some(claim) = outbox.claim() else {
            return Served::Task;
        };
        let (after_lsn, up_to_lsn, durable_lsn) =
            match self.machine(|m| (m.poll(id, now), m.has_all(id))) {
                // Nothing new for it: it wakes at its time, as it would have.
                (LinkAction::WaitUntil(_), true) => return Served::Done,
                (
                    LinkAction::Ship {
                        after_lsn,
                        up_to_lsn,
                        durable_lsn,
                    },
                    _,
                ) if up_to_lsn - after_lsn <= INLINE_READ_ENTRIES
                    && up_to_lsn <= self.store.last_lsn() =>
                {
                    (after_lsn, up_to_lsn, durable_lsn)
                }
                // Anything else (news it is to be sent later, at its pace: its task must look
                // again) is its task's.
                _ => return Served::Task,
            };
        let mut position = LogPosition::after(after_lsn);
        let limit = INLINE_READ_ENTRIES as usize;
        let batch = self
            .store
            .read_log_raw(&mut position, limit, self.options.max_batch_bytes);
        let batch = match batch {
            Ok(batch) if !batch.is_empty() => batch,
            // The task reads it again, and reports what is wrong.
            _ => return Served::Task,
        };
        let shipped = shipped(&batch);
        let frames: Result<Vec<Vec<u8>>, _> =
            entry_messages(batch, self.store.own_epoch(), durable_lsn)
                .iter()
                .map(encode_frame)
                .collect();
        let Ok(frames) = frames else {
            return Served::Task;
        };
        if !self.record_shipping(id, (after_lsn, up_to_lsn), &shipped, durable_lsn, now) {
            return Served::Task;
        }
        if claim.send(&frames.concat()) {
            Served::Done
        } else {
            Served::Task
        }
    }

    /// Records that `shipped` (the entries after `after_lsn`, of those its
    /// [`LinkAction::Ship`] asked for up to `up_to_lsn`) is about to leave for `id`, by
    /// whoever holds its socket, if nobody shipped past `after_lsn` since that was
    /// decided; `false`: drop the batch and ask the machine again. Recorded before the
    /// frames leave, so that the fastest ack finds them sent. A batch that stopped short
    /// of `up_to_lsn` (its bounds filled first) leaves the peer a batch behind.
    pub(super) fn record_shipping(
        &self,
        id: &LinkId,
        (after_lsn, up_to_lsn): (u64, u64),
        shipped: &[Shipped],
        durable_lsn: u64,
        now: Micros,
    ) -> bool {
        self.machine(|m| {
            let current = m.peer(id).is_some_and(|p| p.sent_lsn == after_lsn);
            if current {
                m.shipping(id, shipped, durable_lsn, now);
                if shipped.last().is_some_and(|last| last.lsn < up_to_lsn) {
                    m.fell_short(id);
                }
            }
            current
        })
    }
}

/// What the machine tracks of a batch in flight.
pub(super) fn shipped(batch: &[RawEntry]) -> Vec<Shipped> {
    batch
        .iter()
        .map(|e| Shipped {
            lsn: e.lsn,
            commit_ms: e.timestamp_ms,
            bytes: e.payload.len() as u64,
        })
        .collect()
}
