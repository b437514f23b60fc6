//! [`LogTail`] against a real directory written by a [`Log`] (and by hand, for torn records).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::tests::{frame, written};
use super::*;
use crate::codec::Entry;
use crate::error::Error;

/// Small segments that roll every few entries; no fsync (the reader syncs what it reads).
fn small_segments() -> LogOptions {
    LogOptions {
        segment_bytes: 400,
        first_segment_bytes: 400,
        fsync: false,
        recent_bytes: 0,
        unsynced: std::sync::Arc::default(),
        holes_are_torn: false,
    }
}

fn open_log(dir: &Path) -> Log {
    open_log_with(dir, small_segments())
}

fn open_log_with(dir: &Path, options: LogOptions) -> Log {
    Log::open(Box::new(DirFs::new(dir)), options, 0, |_| Ok(())).unwrap()
}

fn append(log: &Log, entries: &[Entry]) {
    for entry in entries {
        log.append(&frame(std::slice::from_ref(entry)), entry.lsn)
            .unwrap();
    }
}

/// Everything the reader hands out now, `step` entries per read.
fn read_all(tail: &mut LogTail, step: usize) -> Vec<u64> {
    let mut lsns = Vec::new();
    loop {
        let batch = tail.read(step).unwrap();
        if batch.is_empty() {
            return lsns;
        }
        assert!(batch.len() <= step);
        lsns.extend(batch.iter().map(|entry| entry.lsn));
    }
}

fn range(from: u64, to: u64) -> Vec<u64> {
    (from..=to).collect()
}

#[test]
fn each_entry_after_since_is_handed_out_once_in_order_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let entries = written(40, 5);
    let log = open_log(dir.path());
    append(&log, &entries[..20]);
    assert!(
        log.segments().unwrap().len() > 2,
        "small segments must roll"
    );
    let mut from_start = LogTail::open(dir.path(), 0).unwrap();
    let mut from_middle = LogTail::open(dir.path(), 7).unwrap();
    assert_eq!(read_all(&mut from_start, usize::MAX), range(1, 20));
    assert_eq!(read_all(&mut from_middle, 3), range(8, 20));
    // Segments created after the reader caught up are followed as they appear.
    append(&log, &entries[20..]);
    assert_eq!(read_all(&mut from_start, 4), range(21, 40));
    assert_eq!(read_all(&mut from_middle, usize::MAX), range(21, 40));
    assert_eq!(from_start.next_lsn(), 41);
    let payloads: Vec<Vec<u8>> = LogTail::open(dir.path(), 0)
        .unwrap()
        .read(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|raw| raw.payload)
        .collect();
    let decoded: Vec<Entry> = payloads
        .iter()
        .map(|payload| codec::decode_entry(payload).unwrap())
        .collect();
    assert_eq!(
        decoded,
        entries[..decoded.len()],
        "entries read back as written"
    );
}

#[test]
fn a_record_not_yet_whole_or_failing_its_crc_is_not_handed_out_until_it_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let entries = written(6, 9);
    let log = open_log_with(dir.path(), LogOptions::default());
    append(&log, &entries[..5]);
    let tail_offset = log.segments().unwrap()[0].bytes;
    drop(log);
    let segment = OpenOptions::new()
        .write(true)
        .open(dir.path().join(segment_name(1)))
        .unwrap();
    let record = frame(&entries[5..]);
    let mut tail = LogTail::open(dir.path(), 0).unwrap();
    assert_eq!(read_all(&mut tail, usize::MAX), range(1, 5));
    // A writer midway through its append: a prefix of the record, then zeros.
    segment
        .write_all_at(&record[..record.len() - 3], tail_offset)
        .unwrap();
    assert_eq!(read_all(&mut tail, usize::MAX), Vec::<u64>::new());
    // Whole in length but with a byte not yet right: the CRC fails.
    let mut damaged = record.clone();
    *damaged.last_mut().unwrap() ^= 0xff;
    segment.write_all_at(&damaged, tail_offset).unwrap();
    assert_eq!(read_all(&mut tail, usize::MAX), Vec::<u64>::new());
    segment.write_all_at(&record, tail_offset).unwrap();
    assert_eq!(read_all(&mut tail, usize::MAX), vec![6]);
}

#[test]
fn a_damaged_record_with_valid_records_after_it_is_corruption_not_the_end_for_now() {
    let dir = tempfile::tempdir().unwrap();
    let entries = written(6, 9);
    let log = open_log_with(dir.path(), LogOptions::default());
    append(&log, &entries[..2]);
    let third = log.segments().unwrap()[0].bytes;
    append(&log, &entries[2..]);
    drop(log);
    let segment = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join(segment_name(1)))
        .unwrap();
    // A byte of the third record's body flipped (by the disk, or by hand): entries 4 to 6
    // still check, so this is not a write in progress.
    let at = third + 20;
    let mut byte = [0u8];
    segment.read_exact_at(&mut byte, at).unwrap();
    segment.write_all_at(&[byte[0] ^ 0xff], at).unwrap();
    let mut tail = LogTail::open(dir.path(), 0).unwrap();
    assert_eq!(
        tail.read(usize::MAX).unwrap().len(),
        2,
        "what comes before is handed out"
    );
    match tail.read(usize::MAX) {
        Err(Error::Log(LogError::Corrupt { offset, .. })) => assert_eq!(offset, third),
        other => panic!("a damaged record must be reported, got {other:?}"),
    }
}

#[test]
fn retention_dropping_the_segment_being_read_does_not_stop_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let entries = written(60, 17);
    let log = open_log(dir.path());
    append(&log, &entries[..10]);
    let mut tail = LogTail::open(dir.path(), 0).unwrap();
    assert_eq!(read_all(&mut tail, usize::MAX)[..], range(1, 10)[..]);
    let mut slow = LogTail::open(dir.path(), 0).unwrap();
    assert_eq!(slow.read(1).unwrap().len(), 1);
    append(&log, &entries[10..]);
    let segments = log.segments().unwrap();
    let after_slow = segments
        .iter()
        .map(|segment| segment.first_lsn)
        .find(|&first| first > 1)
        .unwrap();
    let after_fast = segments
        .iter()
        .map(|segment| segment.first_lsn)
        .find(|&first| first > 10)
        .unwrap();
    assert!(
        (3..=10).contains(&after_slow),
        "the slow reader's segment holds more than it read, and ends before the fast one's: {segments:?}"
    );
    // Both readers' segments go, and the one the slow reader needs next; the one the
    // fast reader needs next stays.
    log.drop_before(after_fast).unwrap();
    assert_eq!(log.oldest_lsn(), after_fast);
    assert_eq!(read_all(&mut tail, 5), range(11, 60));
    // The slow reader finishes its segment through the descriptor it holds (handing out
    // what it read before failing); the entries after it are gone, which it then says
    // rather than skipping them.
    let rest: Vec<u64> = slow
        .read(usize::MAX)
        .unwrap()
        .iter()
        .map(|entry| entry.lsn)
        .collect();
    assert_eq!(rest, range(2, after_slow - 1));
    let failure = slow.read(usize::MAX).unwrap_err();
    assert!(
        matches!(failure, Error::Log(LogError::Truncated { requested, oldest })
            if requested == after_slow - 1 && oldest == after_fast),
        "{failure}"
    );
    assert!(matches!(
        LogTail::open(dir.path(), 0),
        Err(Error::Log(LogError::Truncated { .. }))
    ));
}

#[test]
fn a_log_directory_replaced_by_a_snapshot_install_stops_the_reader() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("log");
    std::fs::create_dir(&dir).unwrap();
    let entries = written(5, 23);
    append(&open_log(&dir), &entries);
    let mut tail = LogTail::open(&dir, 0).unwrap();
    assert_eq!(tail.read(2).unwrap().len(), 2);
    // As an install does: the old log moves aside and a new one, from a later LSN, takes
    // its name.
    std::fs::rename(&dir, root.path().join("replaced")).unwrap();
    std::fs::create_dir(&dir).unwrap();
    drop(Log::open(Box::new(DirFs::new(&dir)), small_segments(), 40, |_| Ok(())).unwrap());
    assert!(matches!(
        tail.read(usize::MAX),
        Err(Error::Log(LogError::Replaced { next_lsn: 3, .. }))
    ));
}
