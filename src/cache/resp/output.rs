//! Replies encoded and not yet sent, as one connection's queue: the framing and small values
//! copied, large values held by reference to the bytes the cache already holds, and the
//! items of an array reply past the queue's bound left unencoded until what is before them
//! is sent.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use super::reply::{encode, header, Reply, Sink};

/// Values at least this long are queued by reference, not copied: a copy of this much costs
/// more than one more slice in a vectored write.
const SHARE_FROM: usize = 16 * 1024;

/// A buffer keeps an allocation of at most this many bytes once what it holds is consumed.
const KEEP_BYTES: usize = 64 * 1024;

/// Gives back the allocation of `buffer` once it holds little again, if it held more than
/// [`KEEP_BYTES`] since the allocation was made (`peak`, kept by the caller as it fills
/// it). A `BytesMut` reuses its allocation for good (and its `capacity` counts only the
/// room past what was consumed): each connection that once took or sent a 60 MiB command
/// held 60 MiB until it closed, so a few thousand idle connections could hold the node's
/// memory many times over.
pub fn give_back(buffer: &mut BytesMut, peak: &mut usize) {
    *peak = (*peak).max(buffer.len());
    if *peak > KEEP_BYTES && buffer.len() <= KEEP_BYTES / 4 {
        let mut fresh = BytesMut::with_capacity(buffer.len());
        fresh.extend_from_slice(buffer);
        *buffer = fresh;
        *peak = buffer.len();
    }
}

/// A connection's unsent replies, in order, read out as a [`Buf`] (so a vectored write takes
/// many at once).
///
/// A large value is not copied, so a pipeline or an `MGET` that names one large value many
/// times holds it once. A small value is copied, so an `MGET` naming one 16,000-byte value
/// 20,000 times would copy it 20,000 times: the items of an array reply are encoded only
/// while fewer than `bound` bytes wait, and the rest as those are sent. What
/// [`Buf::remaining`] counts is the encoded bytes still to send; the writer that drains it
/// drains the deferred items too, in order.
#[derive(Debug)]
pub struct Output {
    /// Sealed pieces, sent before `open`.
    sealed: VecDeque<Bytes>,
    /// Copied bytes gathered after the last sealed piece.
    open: BytesMut,
    /// The most `open` held since its allocation was made (see [`give_back`]).
    open_peak: usize,
    /// Bytes encoded and not yet sent, over `sealed` and `open`.
    unsent: usize,
    /// The items of the last array reply not encoded yet (their values by reference).
    deferred: VecDeque<Reply>,
    /// The protocol the deferred items are encoded for.
    protocol: u8,
    /// Encoded bytes past which array items wait.
    bound: usize,
}

impl Default for Output {
    /// A queue that defers nothing.
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

impl Output {
    /// An empty queue whose array replies hold about `bound` encoded bytes at most (plus one
    /// item).
    #[must_use]
    pub fn new(bound: usize) -> Self {
        Self {
            sealed: VecDeque::new(),
            open: BytesMut::new(),
            open_peak: 0,
            unsent: 0,
            deferred: VecDeque::new(),
            protocol: 2,
            bound,
        }
    }

    /// Queues `reply` for `protocol`. The items of an array are encoded while fewer than
    /// the bound's bytes wait; the rest wait unencoded, and nothing may be queued after them
    /// until they are sent (see [`Self::deferring`]).
    pub fn push(&mut self, reply: Reply, protocol: u8) {
        debug_assert!(
            self.deferred.is_empty(),
            "a reply queued after a deferred one would be sent before it"
        );
        match reply {
            Reply::Array(items) => {
                header(self, b'*', items.len());
                self.deferred = items.into();
                self.protocol = protocol;
                self.encode_deferred();
            }
            other => encode(&other, protocol, self),
        }
    }

    /// Gives back the room a long pipeline's replies made the queue allocate, once all is
    /// sent (see [`give_back`]): for a connection about to wait for its next request. Not
    /// on each drain: the next batch of a pipeline, or of a large array reply, would grow
    /// it again from nothing (30% slower encoding of large `MGET` replies).
    pub fn shrink_if_idle(&mut self) {
        if self.unsent == 0 && self.deferred.is_empty() {
            give_back(&mut self.open, &mut self.open_peak);
        }
    }

    /// Whether items of an array reply wait unencoded: no other reply may be queued yet.
    #[must_use]
    pub fn deferring(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Encodes deferred items until the bound is reached or none is left. An item that is
    /// an array itself (an `MGET` inside `EXEC`) is deferred item by item in its turn.
    fn encode_deferred(&mut self) {
        while self.unsent < self.bound {
            let Some(item) = self.deferred.pop_front() else {
                return;
            };
            match item {
                Reply::Array(items) => {
                    header(self, b'*', items.len());
                    for item in items.into_iter().rev() {
                        self.deferred.push_front(item);
                    }
                }
                other => encode(&other, self.protocol, self),
            }
        }
    }
}

impl Sink for Output {
    fn put(&mut self, bytes: &[u8]) {
        self.open.extend_from_slice(bytes);
        self.open_peak = self.open_peak.max(self.open.len());
        self.unsent += bytes.len();
    }

    fn put_value(&mut self, value: &Bytes) {
        if value.len() < SHARE_FROM {
            self.put(value);
            return;
        }
        if !self.open.is_empty() {
            self.sealed.push_back(self.open.split().freeze());
        }
        self.sealed.push_back(value.clone());
        self.unsent += value.len();
    }
}

impl Buf for Output {
    fn remaining(&self) -> usize {
        self.unsent
    }

    fn chunk(&self) -> &[u8] {
        self.sealed.front().map_or(&self.open, |piece| piece)
    }

    fn chunks_vectored<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let pieces = self.sealed.iter().map(|piece| &piece[..]);
        let mut filled = 0;
        for (piece, slice) in pieces.chain([&self.open[..]]).zip(slices.iter_mut()) {
            if !piece.is_empty() {
                *slice = IoSlice::new(piece);
                filled += 1;
            }
        }
        filled
    }

    fn advance(&mut self, mut sent: usize) {
        assert!(
            sent <= self.unsent,
            "advanced {sent} bytes past the {} unsent",
            self.unsent
        );
        self.unsent -= sent;
        while let Some(piece) = self.sealed.front_mut() {
            if sent < piece.len() {
                piece.advance(sent);
                self.encode_deferred();
                return;
            }
            sent -= piece.len();
            self.sealed.pop_front();
        }
        self.open.advance(sent);
        // What was sent makes room for the deferred items: a writer that drains this until
        // nothing remains sends the whole reply, holding at most the bound at once.
        self.encode_deferred();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::resp::{encode, Reply};

    fn replies() -> Vec<Reply> {
        let large = Bytes::from(vec![7u8; SHARE_FROM + 3]);
        vec![
            Reply::Bulk(large.clone()),
            Reply::Int(-12),
            Reply::Array(vec![
                Reply::Bulk(large.clone()),
                Reply::Nil,
                Reply::Bulk(large),
            ]),
            Reply::Bulk(Bytes::from_static(b"small")),
            Reply::Double(1.5),
        ]
    }

    #[test]
    fn output_sends_the_bytes_a_copying_encode_writes_however_it_is_drained() {
        let mut copied = Vec::new();
        for reply in replies() {
            encode(&reply, 2, &mut copied);
        }
        for step in [1, 5, 4096, SHARE_FROM + 1, usize::MAX] {
            let mut output = Output::default();
            for reply in replies() {
                encode(&reply, 2, &mut output);
            }
            assert_eq!(output.remaining(), copied.len());
            let mut sent = Vec::new();
            while output.has_remaining() {
                let mut slices = [IoSlice::new(&[]); 4];
                let filled = output.chunks_vectored(&mut slices);
                let gathered: Vec<u8> = slices[..filled].iter().flat_map(|s| s.to_vec()).collect();
                assert!(gathered.starts_with(output.chunk()));
                let take = step.min(gathered.len());
                sent.extend_from_slice(&gathered[..take]);
                output.advance(take);
            }
            assert_eq!(sent, copied, "drained {step} bytes at a time");
        }
    }

    #[test]
    fn an_array_reply_holds_at_most_its_bound_encoded_and_sends_every_item_in_order() {
        // Under the size a reply holds by reference: each mention is a copy.
        let value = Bytes::from(vec![3u8; 16_000]);
        let reply = Reply::Array(vec![Reply::Bulk(value); 2_000]);
        let mut copied = Vec::new();
        encode(&reply, 2, &mut copied);
        encode(&Reply::Ok, 2, &mut copied);
        let bound = 64 * 1024;
        let mut output = Output::new(bound);
        output.push(reply, 2);
        assert!(output.deferring());
        let (mut sent, most) = drain(&mut output);
        output.push(Reply::Ok, 2);
        sent.extend_from_slice(output.chunk());
        assert_eq!(sent, copied);
        assert!(most < bound + 16_100, "{most} bytes encoded at once");
    }

    /// Everything `output` sends, taken 5,000 bytes at a time, and the most it held
    /// encoded at once meanwhile.
    fn drain(output: &mut Output) -> (Vec<u8>, usize) {
        let (mut sent, mut most) = (Vec::new(), 0);
        while output.deferring() || output.has_remaining() {
            most = most.max(output.remaining());
            let take = output.chunk().len().min(5_000);
            sent.extend_from_slice(&output.chunk()[..take]);
            output.advance(take);
        }
        (sent, most)
    }

    /// The allocation a buffer reuses once emptied: `reserve` takes the room back from
    /// the start of the allocation it holds.
    fn reused_allocation(buffer: &mut BytesMut) -> usize {
        buffer.reserve(16);
        buffer.capacity()
    }

    #[test]
    fn an_array_inside_an_array_reply_is_held_to_the_bound_too() {
        // EXEC answering an MGET that names one large value many times.
        let value = Bytes::from(vec![3u8; 16_000]);
        let mget = Reply::Array(vec![Reply::Bulk(value); 2_000]);
        let reply = Reply::Array(vec![Reply::Ok, mget, Reply::Int(7)]);
        let mut copied = Vec::new();
        encode(&reply, 2, &mut copied);
        let bound = 64 * 1024;
        let mut output = Output::new(bound);
        output.push(reply, 2);
        let (sent, most) = drain(&mut output);
        assert_eq!(sent, copied);
        assert!(most < bound + 16_100, "{most} bytes encoded at once");
    }

    #[test]
    fn a_buffer_that_held_much_gives_its_allocation_back_once_it_holds_little() {
        let mut kept = BytesMut::from(&vec![5u8; 1 << 20][..]);
        kept.advance(1 << 20);
        assert!(
            reused_allocation(&mut kept) >= 1 << 20,
            "a BytesMut keeps it"
        );
        let mut buffer = BytesMut::from(&vec![5u8; 1 << 20][..]);
        let mut peak = 0;
        give_back(&mut buffer, &mut peak);
        assert_eq!(buffer.len(), 1 << 20, "held while it holds much");
        buffer.advance((1 << 20) - 10);
        give_back(&mut buffer, &mut peak);
        assert_eq!(&buffer[..], &[5u8; 10], "what it still holds is kept");
        assert!(reused_allocation(&mut buffer) < KEEP_BYTES);
        assert_eq!(peak, 10);
    }

    #[test]
    fn output_gives_back_what_a_long_pipeline_of_small_replies_made_it_allocate() {
        let mut output = Output::default();
        for _ in 0..10_000 {
            encode(
                &Reply::Bulk(Bytes::from_static(b"a small value")),
                2,
                &mut output,
            );
        }
        let most = output.remaining();
        assert!(most > KEEP_BYTES);
        while output.has_remaining() {
            let take = output.chunk().len().min(4096);
            output.advance(take);
        }
        output.shrink_if_idle();
        assert!(reused_allocation(&mut output.open) < KEEP_BYTES);
        encode(&Reply::Ok, 2, &mut output);
        assert_eq!(output.chunk(), b"+OK\r\n");
    }

    #[test]
    fn output_holds_a_large_value_by_reference() {
        let large = Bytes::from(vec![1u8; SHARE_FROM]);
        let mut output = Output::default();
        encode(&Reply::Bulk(large.clone()), 2, &mut output);
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(output.chunks_vectored(&mut slices), 3);
        assert_eq!(slices[1].as_ptr(), large.as_ptr());
    }
}
