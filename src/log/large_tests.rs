//! Large records (a bulk load's entry) recovered in pieces: the same entry as one read
//! whole, and damage in them judged as in any other record.

use super::large::LARGE_RECORD;
use super::memfs::MemFs;
use super::tests::{append_all, open_with, options};
use super::*;
use crate::codec::{Entry, Op};

/// An entry whose record is larger than [`LARGE_RECORD`]: puts of about 1 KiB in two
/// tables, and a delete.
fn large_entry(lsn: u64) -> Entry {
    let rows = LARGE_RECORD / 1000 + 2000;
    let mut ops: Vec<Op> = (0..rows)
        .map(|i| Op {
            table: if i % 3 == 0 { "events" } else { "subs" }.into(),
            key: format!("key-{i:08}").into_bytes(),
            value: Some(vec![(i % 251) as u8; 900 + i % 200]),
        })
        .collect();
    ops.push(Op {
        table: "subs".into(),
        key: b"key-00000001".to_vec(),
        value: None,
    });
    Entry {
        lsn,
        epoch: 2,
        timestamp_ms: 1_700_000_000_000 + lsn,
        ops,
    }
}

fn small_entry(lsn: u64) -> Entry {
    Entry {
        lsn,
        epoch: 2,
        timestamp_ms: 1_700_000_000_000 + lsn,
        ops: vec![Op {
            table: "subs".into(),
            key: format!("small-{lsn}").into_bytes(),
            value: Some(b"v".to_vec()),
        }],
    }
}

/// Segments that hold every test entry: a record is cut as torn only in the last one.
const SEGMENT: u64 = 64 << 20;

/// How an entry came back from a replay: its LSN, whether in pieces and how many, and
/// the entry itself.
type Back = (u64, Option<usize>, Entry);

fn reopen(fs: &MemFs, checkpoint: u64) -> Result<(Log, Vec<Back>)> {
    let mut back = Vec::new();
    let log = Log::open(
        Box::new(fs.restart_image()),
        options(SEGMENT),
        checkpoint,
        |replayed| {
            back.push(match replayed {
                Replayed::Whole(entry) => (entry.lsn, None, entry),
                Replayed::Large(mut large) => {
                    let mut ops = Vec::new();
                    let mut pieces = 0;
                    while let Some(piece) = large.next_ops()? {
                        pieces += 1;
                        ops.extend(piece.to_ops());
                    }
                    let entry = Entry {
                        lsn: large.lsn,
                        epoch: large.epoch,
                        timestamp_ms: large.timestamp_ms,
                        ops,
                    };
                    (entry.lsn, Some(pieces), entry)
                }
            });
            Ok(())
        },
    )?;
    Ok((log, back))
}

/// Writes entries 1-2, a large entry 3, and entries 4-5 when `after`, all in the first
/// segment; returns the offset of the large record.
fn written(fs: &MemFs, after: bool) -> usize {
    let (log, _) = open_with(fs, options(SEGMENT), 0).unwrap();
    append_all(&log, &[small_entry(1), small_entry(2)]);
    let at = fs.written_len(&segment_name(1));
    append_all(&log, &[large_entry(3)]);
    if after {
        append_all(&log, &[small_entry(4), small_entry(5)]);
    }
    at
}

#[test]
fn a_large_record_is_replayed_in_pieces_as_the_entry_it_holds() {
    let fs = MemFs::default();
    written(&fs, true);
    let (log, back) = reopen(&fs, 0).unwrap();
    let lsns: Vec<u64> = back.iter().map(|(lsn, _, _)| *lsn).collect();
    assert_eq!(lsns, [1, 2, 3, 4, 5]);
    let (_, pieces, entry) = &back[2];
    assert!(pieces.is_some_and(|p| p > 1), "in pieces: {pieces:?}");
    assert_eq!(entry, &large_entry(3));
    assert!(back
        .iter()
        .all(|(lsn, pieces, _)| pieces.is_some() == (*lsn == 3)));
    assert_eq!(back[4].2, small_entry(5));
    // The log goes on after it, and knows the entry it ends with.
    assert_eq!(log.next_lsn(), 6);
    // From a checkpoint past it, it is read over and not replayed.
    let (_, back) = reopen(&fs, 3).unwrap();
    assert_eq!(
        back.iter().map(|(lsn, ..)| *lsn).collect::<Vec<_>>(),
        [4, 5]
    );
}

#[test]
fn a_damaged_large_record_is_corruption_with_records_after_it_and_a_torn_tail_without() {
    let fs = MemFs::default();
    let at = written(&fs, true);
    fs.flip_byte(&segment_name(1), at + LARGE_RECORD / 2);
    let err = reopen(&fs, 0).err().expect("damage before valid records");
    assert!(
        matches!(err, crate::Error::Log(LogError::Corrupt { offset, .. }) if offset == at as u64),
        "{err}"
    );

    let fs = MemFs::default();
    let at = written(&fs, false);
    fs.flip_byte(&segment_name(1), at + LARGE_RECORD / 2);
    let (log, back) = reopen(&fs, 0).unwrap();
    assert_eq!(
        back.iter().map(|(lsn, ..)| *lsn).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        log.next_lsn(),
        3,
        "the torn record is cut and its LSN written again"
    );
}
