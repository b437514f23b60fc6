//! LSNs handed out: to local writes, to entries replicated from a primary, after a
//! snapshot's reset; and a follower's entries held back from readers.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{now_ms, Held, Pending, Pipeline, Refused, Returning, Taken, WriterLock};
use crate::codec::{frame_payload, frame_record, Op};

impl Pipeline {
    /// Enqueues one entry and returns what it was given: its LSN, epoch and commit time.
    /// `body` is the encoded entry with its CRC, framed into the batch's records; `None`
    /// for a record its caller writes to the log itself (a streamed bulk load, which leads
    /// its own batch: `writer` is [`WriterLock::Keep`]). `writer` says whether the caller
    /// holds the writer lock, and whether it is released in the same critical section.
    /// `taken` hears the LSN before any leader can take the entry (so before it is visible).
    pub(crate) fn enqueue(
        &self,
        body: Option<(&[u8], u32)>,
        ops: Vec<Op>,
        writer: WriterLock,
        quick: bool,
        taken: impl FnOnce(u64),
    ) -> Result<Taken, Refused> {
        let holds_writer = writer != WriterLock::NotHeld;
        let mut state = if holds_writer {
            let state = self.lock();
            if let Some(closed) = &state.closed {
                return Err(Refused::Closed(closed.cause()));
            }
            state
        } else {
            self.wait_writer_free(self.lock(), None)?
        };
        let refused = match (&state.paused, &state.dropped) {
            (Some(reason), _) => Some(Refused::Paused(reason.clone())),
            (None, Some(dropped)) => Some(Refused::NotWritten(dropped.failure().clone())),
            (None, None) => None,
        };
        if let Some(refused) = refused {
            if writer == WriterLock::Release {
                state.writer = None;
                self.writer_held.store(false, Ordering::Release);
                drop(state);
                self.writer_free.notify_all();
            }
            return Err(refused);
        }
        let lsn = state.next_lsn;
        state.next_lsn += 1;
        let timestamp_ms = now_ms().max(state.last_timestamp_ms);
        state.last_timestamp_ms = timestamp_ms;
        let epoch = state.epoch;
        if let Some((body, crc)) = body {
            frame_record(&mut state.records, lsn, epoch, timestamp_ms, body, crc);
        }
        let thread = std::thread::current().id();
        state.pending.push(Pending {
            lsn,
            ops,
            quick: quick.then_some(thread),
            replicated: false,
        });
        // Any write of the writer a leader waits for ends the wait, async or not.
        if state.returning.arrive(thread, Instant::now()) {
            self.arrived.notify_one();
        }
        if writer == WriterLock::Keep {
            state.reserved = Some(thread);
        }
        taken(lsn);
        if writer == WriterLock::Release {
            state.writer = None;
            self.writer_held.store(false, Ordering::Release);
            drop(state);
            self.writer_free.notify_all();
        }
        Ok(Taken {
            lsn,
            epoch,
            timestamp_ms,
        })
    }

    /// Enqueues an entry committed elsewhere (a primary's), keeping its LSN, epoch and
    /// timestamp: `payload` is stored byte for byte. Like a user write it waits while the
    /// writer lock is held, so that exclusive work (snapshots, scrub, dropping segments) is
    /// the only one touching the overlay on a follower too.
    pub(crate) fn enqueue_replicated(
        &self,
        payload: &[u8],
        lsn: u64,
        epoch: u64,
        timestamp_ms: u64,
        ops: Vec<Op>,
    ) -> Result<(), Refused> {
        let mut state = self.wait_writer_free(self.lock(), None)?;
        // Entries given back for want of room are appended again only once the follow
        // loop heard of it (it then resumes from the log's end).
        if let Some(dropped) = &state.dropped {
            return Err(Refused::NotWritten(dropped.failure().clone()));
        }
        if lsn != state.next_lsn {
            return Err(Refused::OutOfOrder {
                expected: state.next_lsn,
                got: lsn,
            });
        }
        state.next_lsn += 1;
        state.epoch = state.epoch.max(epoch);
        state.last_timestamp_ms = state.last_timestamp_ms.max(timestamp_ms);
        frame_payload(&mut state.records, payload);
        state.pending.push(Pending {
            lsn,
            ops,
            quick: None,
            replicated: true,
        });
        Ok(())
    }

    /// Local commits from now on carry `epoch` (nothing may be pending).
    pub(crate) fn begin_epoch(&self, epoch: u64) {
        self.lock().epoch = epoch;
    }

    /// Restarts the sequence after a snapshot was swapped in (nothing may be pending).
    /// The listeners hear of it from [`Pipeline::announce_reset`], once the caller holds
    /// no lock of the store.
    pub(crate) fn reset(&self, next_lsn: u64, epoch: u64) {
        let mut state = self.lock();
        debug_assert!(
            state.pending.is_empty() && !state.leading,
            "a swap happens between appends"
        );
        state.next_lsn = next_lsn;
        state.visible_lsn = next_lsn - 1;
        state.readable_lsn = next_lsn - 1;
        let release_lsn = state.held.release_lsn.max(next_lsn - 1);
        state.held = Held::new(next_lsn - 1);
        state.held.release_lsn = release_lsn;
        state.resets += 1;
        state.epoch = epoch;
        state.in_flight_last = 0;
        state.returning = Returning::default();
        state.given_back_to = 0;
    }

    /// Tells the listeners the visible LSN a [`Pipeline::reset`] set (or any later one).
    pub(crate) fn announce_reset(&self) {
        let visible_lsn = self.lock().visible_lsn;
        self.announce(visible_lsn);
    }

    /// The last LSN handed out (visible or not).
    pub(crate) fn last_assigned(&self) -> u64 {
        self.lock().next_lsn - 1
    }

    /// The last LSN handed out that is not held back: what draining waits for.
    pub(crate) fn last_releasable(&self) -> u64 {
        let state = self.lock();
        (state.next_lsn - 1).min(state.held.release_lsn)
    }

    /// The last LSN durable in the log (applied or not).
    pub(crate) fn synced_lsn(&self) -> u64 {
        self.lock().held.synced_lsn
    }

    /// From now on, entries past those applied are held back from readers until
    /// released. `entries`, the last of the log and not applied (a recovery's), are held.
    pub(crate) fn hold(&self, entries: Vec<Pending>) {
        let mut state = self.lock();
        if let Some(first) = entries.first() {
            state.readable_lsn = first.lsn - 1;
            state.visible_lsn = first.lsn - 1;
        }
        state.held.release_lsn = state.readable_lsn;
        state.held.entries.extend(entries);
    }

    /// Entries up to `lsn` may be applied; returns whether some wait to be (then a
    /// [`Pipeline::wait`] for them applies them).
    pub(crate) fn release(&self, lsn: u64) -> bool {
        let mut state = self.lock();
        state.held.release_lsn = state.held.release_lsn.max(lsn);
        state.held.releasable()
    }

    /// Forgets the held entries after `lsn` (their records were cut from the log): the
    /// next entry appended takes LSN `lsn + 1`. Only entries never applied are cut.
    pub(crate) fn cut_held(&self, lsn: u64) -> Result<(), Refused> {
        let mut state = self.lock();
        if lsn < state.readable_lsn || state.leading || !state.pending.is_empty() {
            return Err(Refused::OutOfOrder {
                expected: state.readable_lsn,
                got: lsn,
            });
        }
        state.held.entries.retain(|e| e.lsn <= lsn);
        state.next_lsn = state.next_lsn.min(lsn + 1);
        state.held.written_lsn = state.held.written_lsn.min(lsn);
        state.held.synced_lsn = state.held.synced_lsn.min(lsn);
        Ok(())
    }
}
