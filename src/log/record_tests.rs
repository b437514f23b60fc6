//! A record written in pieces ([`Log::begin_record`]): the same bytes and entries as the
//! record appended whole, and nothing of it after a crash or when it is given up.

use super::memfs::MemFs;
use super::tests::{append_all, frame, open_with, options};
use super::*;
use crate::codec::{EncodedOps, Entry, Op};

/// 100 rows of about 100 bytes each, in one entry.
fn big_entry(lsn: u64) -> Entry {
    Entry {
        lsn,
        epoch: 3,
        timestamp_ms: 1_700_000_000_000 + lsn,
        ops: (0..100u32)
            .map(|i| Op {
                table: "events".into(),
                key: i.to_be_bytes().to_vec(),
                value: (i % 7 != 0).then(|| vec![i as u8; 90 + i as usize % 20]),
            })
            .collect(),
    }
}

fn small_entries(lsns: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    lsns.map(|lsn| Entry {
        ops: big_entry(lsn).ops[..2].to_vec(),
        ..big_entry(lsn)
    })
    .collect()
}

/// Begins a record after what `log` holds and writes `entry`'s ops in chunks of `chunk`.
fn write_in_pieces(log: &Log, entry: &Entry, chunk: usize) -> RecordWriter {
    let mut record = log.begin_record().unwrap();
    for ops in entry.ops.chunks(chunk) {
        let mut encoded = EncodedOps::default();
        encoded.extend(ops);
        log.write_ops(&mut record, &encoded).unwrap();
    }
    record
}

fn segment_bytes(fs: &MemFs) -> Vec<u8> {
    let name = segment_name(1);
    let file = fs.open(&name, false).unwrap();
    let mut bytes = vec![0; fs.written_len(&name)];
    let read = file.read_at(&mut bytes, 0).unwrap();
    bytes.truncate(read);
    bytes
}

fn read_all(log: &Log, up_to: u64) -> Vec<Entry> {
    log.read(&mut LogPosition::after(0), up_to, usize::MAX, usize::MAX)
        .unwrap()
}

#[test]
fn a_record_written_in_pieces_is_the_record_appended_whole() {
    let (whole, pieces) = (MemFs::default(), MemFs::default());
    let before = small_entries(1..=3);
    let big = big_entry(4);
    let (log, _) = open_with(&whole, options(1 << 20), 0).unwrap();
    append_all(&log, &before);
    append_all(&log, std::slice::from_ref(&big));
    let (log, _) = open_with(&pieces, options(1 << 20), 0).unwrap();
    append_all(&log, &before);
    let record = write_in_pieces(&log, &big, 17);
    assert_eq!(read_all(&log, 3), before);
    log.finish_record(record, 4, big.epoch, big.timestamp_ms)
        .unwrap();
    assert_eq!(segment_bytes(&pieces), segment_bytes(&whole));
    let mut expected = before.clone();
    expected.push(big);
    assert_eq!(read_all(&log, 4), expected);
    assert_eq!(log.last_entry_id(4), {
        let (whole_log, _) = open_with(&whole.restart_image(), options(1 << 20), 4).unwrap();
        whole_log.last_entry_id(4)
    });
    // The next append goes after it, and a reopen replays both.
    append_all(&log, &small_entries(5..=5));
    expected.extend(small_entries(5..=5));
    let (_, replayed) = open_with(&pieces.power_loss_image(), options(1 << 20), 0).unwrap();
    assert_eq!(replayed, expected);
}

/// A log holding three small entries, and a big fourth written in pieces, unfinished.
fn unfinished(fs: &MemFs) -> (Log, Vec<Entry>, RecordWriter) {
    let before = small_entries(1..=3);
    let (log, _) = open_with(fs, options(1 << 20), 0).unwrap();
    append_all(&log, &before);
    let record = write_in_pieces(&log, &big_entry(4), 30);
    (log, before, record)
}

/// After a kill -9 or a power loss, `fs` reopens with `before` (LSNs 1 to 3) and not the
/// unfinished record, and takes LSN 4 after them.
fn reopens_without_it(fs: &MemFs, before: &[Entry]) {
    for image in [fs.restart_image(), fs.power_loss_image()] {
        let (log, replayed) = open_with(&image, options(1 << 20), 0).unwrap();
        assert_eq!(replayed, before);
        append_all(&log, &small_entries(4..=4));
        let (_, replayed) = open_with(&image.restart_image(), options(1 << 20), 0).unwrap();
        assert_eq!(replayed, small_entries(1..=4));
    }
}

#[test]
fn a_record_unfinished_at_a_crash_is_cut_and_the_log_goes_on() {
    let fs = MemFs::default();
    let (_log, before, _record) = unfinished(&fs);
    reopens_without_it(&fs, &before);
}

#[test]
fn a_record_given_up_leaves_only_zeros_after_the_tail() {
    let fs = MemFs::default();
    let (log, before, record) = unfinished(&fs);
    let end = frame(&before).len();
    assert!(segment_bytes(&fs)[end..].iter().any(|&b| b != 0));
    record.abandon().unwrap();
    assert!(segment_bytes(&fs)[end..].iter().all(|&b| b == 0));
    assert_eq!(read_all(&log, 3), before);
    // The LSN it would have had goes to the next entry.
    append_all(&log, &small_entries(4..=4));
    let (_, replayed) = open_with(&fs.restart_image(), options(1 << 20), 0).unwrap();
    assert_eq!(replayed, small_entries(1..=4));
}

#[test]
fn a_record_whose_tail_moved_is_refused() {
    let fs = MemFs::default();
    let (log, _) = open_with(&fs, options(1 << 20), 0).unwrap();
    let record = write_in_pieces(&log, &big_entry(1), 50);
    append_all(&log, &small_entries(1..=1));
    let err = log.finish_record(record, 2, 3, 0).unwrap_err();
    assert!(err.to_string().contains("the log moved"), "{err}");
    assert_eq!(read_all(&log, 1), small_entries(1..=1));
}

#[test]
fn an_unfinished_record_is_cut_whatever_its_rows_hold() {
    let fs = MemFs::default();
    let before = small_entries(1..=3);
    let (log, _) = open_with(&fs, options(1 << 20), 0).unwrap();
    append_all(&log, &before);
    // A row whose value is a valid record of the next LSN, as user data may be: taken for
    // a record after damage, it made the log refuse to open.
    let lookalike = Entry {
        ops: vec![Op {
            table: "blobs".into(),
            key: b"k".to_vec(),
            value: Some(frame(&small_entries(4..=4))),
        }],
        ..big_entry(4)
    };
    let _record = write_in_pieces(&log, &lookalike, 1);
    reopens_without_it(&fs, &before);
}
