//! Replies encoded and not yet sent, as one connection's queue: the framing and small values
//! copied, large values held by reference to the bytes the cache already holds.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use super::reply::Sink;

/// Values at least this long are queued by reference, not copied: a copy of this much costs
/// more than one more slice in a vectored write.
const SHARE_FROM: usize = 16 * 1024;

/// A connection's unsent replies, in order, read out as a [`Buf`] (so a vectored write takes
/// many at once).
///
/// A large value is not copied, so a pipeline or an `MGET` that names one large value many
/// times holds it once; what [`Buf::remaining`] counts is the bytes still to send.
#[derive(Debug, Default)]
pub struct Output {
    /// Sealed pieces, sent before `open`.
    sealed: VecDeque<Bytes>,
    /// Copied bytes gathered after the last sealed piece.
    open: BytesMut,
    /// Bytes not yet sent, over `sealed` and `open`.
    unsent: usize,
}

impl Sink for Output {
    fn put(&mut self, bytes: &[u8]) {
        self.open.extend_from_slice(bytes);
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
                return;
            }
            sent -= piece.len();
            self.sealed.pop_front();
        }
        self.open.advance(sent);
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
    fn output_holds_a_large_value_by_reference() {
        let large = Bytes::from(vec![1u8; SHARE_FROM]);
        let mut output = Output::default();
        encode(&Reply::Bulk(large.clone()), 2, &mut output);
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(output.chunks_vectored(&mut slices), 3);
        assert_eq!(slices[1].as_ptr(), large.as_ptr());
    }
}
