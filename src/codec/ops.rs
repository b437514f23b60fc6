//! Ops encoded once, in the body format of a log record (see [`super::entry`]): a bulk load
//! writes each row straight into one of these, and the log, the tables and the watchers
//! then read the rows where they are. Building a `Vec<Op>` instead costs three allocations
//! per row (table name, key, value) on the encoding thread and as many frees wherever the
//! ops end up: a third of a 1M-row `put_many`.

use super::entry::{malformed, read_op, write_op, Cursor, KIND_DELETE, KIND_PUT};
use super::{Op, OpRef};
use crate::error::CodecError;

/// Bytes of the op count in front of a body.
const COUNT_LEN: usize = 4;

/// Some ops of one transaction, encoded as a body holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedOps {
    /// The op count (written by [`EncodedOps::into_body`]), then the ops.
    bytes: Vec<u8>,
    count: usize,
}

impl Default for EncodedOps {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl EncodedOps {
    /// No ops yet, with room for `bytes` bytes of them.
    #[must_use]
    pub fn with_capacity(bytes: usize) -> Self {
        let mut out = Vec::with_capacity(COUNT_LEN + bytes);
        out.extend_from_slice(&[0; COUNT_LEN]);
        Self {
            bytes: out,
            count: 0,
        }
    }

    /// Appends `op`. Its table name, key and value must have been checked against the
    /// store's limits (all below 2 GiB, names at most 255 bytes).
    pub fn push(&mut self, op: OpRef<'_>) {
        write_op(&mut self.bytes, op);
        self.count += 1;
    }

    /// Appends every op of `ops`, in order (checked as for [`EncodedOps::push`]).
    pub fn extend(&mut self, ops: &[Op]) {
        self.bytes.reserve(ops.iter().map(encoded_len).sum());
        for op in ops {
            self.push(op.borrowed());
        }
    }

    /// Number of ops.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there is no op.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded ops, as they follow the op count in a body.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[COUNT_LEN..]
    }

    /// The ops, borrowed, in order.
    pub fn iter(&self) -> impl Iterator<Item = OpRef<'_>> {
        let mut cursor = Cursor {
            bytes: self.as_bytes(),
        };
        std::iter::from_fn(move || {
            (!cursor.bytes.is_empty())
                .then(|| read_op(&mut cursor).expect("invariant: written by `push`"))
        })
    }

    /// The ops, owned.
    #[must_use]
    pub fn to_ops(&self) -> Vec<Op> {
        self.iter().map(|op| op.to_op()).collect()
    }

    /// The body of an entry holding these ops and no other.
    #[must_use]
    pub fn into_body(mut self) -> Vec<u8> {
        self.bytes[..COUNT_LEN].copy_from_slice(&count_bytes(self.count));
        self.bytes
    }
}

/// The whole ops at the start of `bytes` (a body's ops read in pieces), until they take
/// `max` bytes or more, and the bytes they take. An op cut off by the end of `bytes` is
/// left for a call with more of them; the ops are copied as they are, not encoded again.
///
/// # Errors
/// [`CodecError::Malformed`] if a whole op is not a valid one.
pub fn whole_ops(bytes: &[u8], max: usize) -> Result<(EncodedOps, usize), CodecError> {
    let mut ops = EncodedOps::with_capacity(max.min(bytes.len()));
    let mut taken = 0;
    while taken < max {
        let rest = &bytes[taken..];
        let Some(len) = whole_op_len(rest)? else {
            break;
        };
        let mut cursor = Cursor {
            bytes: &rest[..len],
        };
        read_op(&mut cursor)?;
        ops.bytes.extend_from_slice(&rest[..len]);
        ops.count += 1;
        taken += len;
    }
    Ok((ops, taken))
}

/// The length of the op at the start of `bytes`, from its length fields, if all of it is
/// there.
fn whole_op_len(bytes: &[u8]) -> Result<Option<usize>, CodecError> {
    let [kind, table_len, ..] = *bytes else {
        return Ok(None);
    };
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("invariant: 4 bytes")) as usize)
    };
    let mut len = 2 + usize::from(table_len);
    let Some(key_len) = word(len) else {
        return Ok(None);
    };
    len += 4 + key_len;
    match kind {
        KIND_PUT => {
            let Some(value_len) = word(len) else {
                return Ok(None);
            };
            len += 4 + value_len;
        }
        KIND_DELETE => {}
        _ => return Err(malformed("unknown op kind")),
    }
    Ok((len <= bytes.len()).then_some(len))
}

/// The op count of a body as it starts the body.
#[must_use]
pub fn count_bytes(count: usize) -> [u8; COUNT_LEN] {
    u32::try_from(count)
        .expect("invariant: a transaction below 2 GiB holds fewer than 2^32 ops")
        .to_le_bytes()
}

/// Bytes `op` takes in a body.
fn encoded_len(op: &Op) -> usize {
    6 + op.table.len() + op.key.len() + op.value.as_ref().map_or(0, |v| 4 + v.len())
}

/// Encodes the body of an entry (everything but the LSN header).
#[must_use]
pub fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut encoded = EncodedOps::with_capacity(ops.iter().map(encoded_len).sum());
    encoded.extend(ops);
    encoded.into_body()
}

#[cfg(test)]
mod tests {
    use super::super::entry::tests::op_strategy;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Ops pushed a few at a time (a streamed bulk load's chunks) read back in order, and
        /// their bytes joined are the body of all of them at once, wherever they are cut.
        #[test]
        fn fuzz_ops_encoded_in_chunks_read_back_and_join_into_the_whole_body(
            ops in proptest::collection::vec(op_strategy(), 0..12),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(ops.len() + 1)).collect();
            cuts.push(ops.len());
            cuts.sort_unstable();
            let mut joined = count_bytes(ops.len()).to_vec();
            let mut from = 0;
            for to in cuts {
                let mut chunk = EncodedOps::default();
                chunk.extend(&ops[from..to]);
                prop_assert_eq!(chunk.len(), to - from);
                prop_assert_eq!(chunk.is_empty(), to == from);
                prop_assert_eq!(chunk.to_ops(), ops[from..to].to_vec());
                joined.extend_from_slice(chunk.as_bytes());
                from = to;
            }
            prop_assert_eq!(&joined, &encode_ops(&ops));
            let mut whole = EncodedOps::default();
            for op in &ops {
                whole.push(op.borrowed());
            }
            prop_assert_eq!(whole.into_body(), joined);
        }

        /// A body's ops read in pieces cut anywhere, each piece taken as whole ops with what
        /// was left of the one before, give back every op in order, none twice.
        #[test]
        fn fuzz_whole_ops_taken_from_pieces_cut_anywhere_are_the_ops_in_order(
            ops in proptest::collection::vec(op_strategy(), 0..12),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            max in 1usize..64,
        ) {
            let body = encode_ops(&ops);
            let bytes = &body[COUNT_LEN..];
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            cuts.extend([0, bytes.len()]);
            cuts.sort_unstable();
            let (mut read, mut pending) = (Vec::new(), Vec::new());
            for piece in cuts.windows(2) {
                pending.extend_from_slice(&bytes[piece[0]..piece[1]]);
                loop {
                    let (whole, taken) = whole_ops(&pending, max).unwrap();
                    read.extend(whole.to_ops());
                    pending.drain(..taken);
                    if taken == 0 {
                        break;
                    }
                }
            }
            prop_assert!(pending.is_empty());
            prop_assert_eq!(read, ops);
        }
    }

    #[test]
    fn an_op_of_an_unknown_kind_is_malformed_not_cut_off() {
        assert!(matches!(
            whole_ops(&[9, 0, 0, 0, 0, 0], 100),
            Err(CodecError::Malformed { .. })
        ));
        let (ops, taken) = whole_ops(&[KIND_PUT, 1, b't', 1, 0, 0], 100).unwrap();
        assert_eq!((ops.len(), taken), (0, 0));
    }
}
