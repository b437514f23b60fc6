//! A log on a disk that fills up: segments shrink to what fits, a write with no room is
//! refused with nothing written, and the log takes the same LSN once there is room again.

use super::memfs::MemFs;
use super::tests::{frame, open_with, options, written};
use super::*;
use crate::codec::{EncodedOps, Entry};
use crate::error::Error;

/// Segments from 1 KiB doubling up to 16 KiB.
fn growing() -> LogOptions {
    LogOptions {
        first_segment_bytes: 1024,
        ..options(16 << 10)
    }
}

fn is_not_written(result: &Result<()>) -> bool {
    matches!(result, Err(Error::Log(LogError::NotWritten { source, .. }))
        if source.raw_os_error() == Some(libc::ENOSPC))
}

fn read_all(log: &Log) -> Vec<Entry> {
    let last = log.next_lsn() - 1;
    log.read(&mut LogPosition::after(0), last, usize::MAX, usize::MAX)
        .unwrap()
}

/// Appends `entries` one at a time until the log refuses one; returns how many it took.
fn append_until_refused(log: &Log, entries: &[Entry]) -> usize {
    for (taken, entry) in entries.iter().enumerate() {
        let result = log.append(&frame(std::slice::from_ref(entry)), entry.lsn);
        if result.is_err() {
            assert!(is_not_written(&result), "{result:?}");
            return taken;
        }
    }
    panic!("the log never ran out of room");
}

#[test]
fn a_segment_the_disk_cannot_hold_at_its_full_size_starts_smaller() {
    let fs = MemFs::default();
    let (log, _) = open_with(&fs, growing(), 0).unwrap();
    // A 12 KiB disk keeps 3 KiB for the tables: room for the 1, 2 and 4 KiB segments and
    // 2 KiB more, not for 8 KiB.
    fs.limit_space(Some(12 << 10));
    let entries = written(400, 3);
    let taken = append_until_refused(&log, &entries);
    let sizes: Vec<u64> = log.segments().unwrap().iter().map(|s| s.bytes).collect();
    assert!(sizes.len() > 3, "a fourth, smaller segment: {sizes:?}");
    assert!(sizes[3] < 8 << 10, "{sizes:?}");
    // Records are checked against the floor every MiB: here, only the batch that crosses
    // the last segment's end (a few hundred bytes) may reach into it.
    let free = (12 << 10) - fs.used();
    assert!(
        free + 512 >= 3 << 10,
        "the tables' floor was taken: {sizes:?}"
    );
    assert!(free < 4 << 10, "the log stopped with room left: {sizes:?}");
    assert_eq!(read_all(&log), entries[..taken]);
}

#[test]
fn a_write_the_log_has_no_room_for_leaves_it_as_it_was_and_the_next_may_take_its_lsn() {
    let fs = MemFs::default();
    let (log, _) = open_with(&fs, growing(), 0).unwrap();
    fs.limit_space(Some(6 << 10));
    let entries = written(300, 5);
    let taken = append_until_refused(&log, &entries);
    let (used, next_lsn) = (fs.used(), log.next_lsn());
    assert_eq!(next_lsn, taken as u64 + 1);
    // Refused again: nothing grows, nothing moves.
    let again = &entries[taken];
    let result = log.append(&frame(std::slice::from_ref(again)), again.lsn);
    assert!(is_not_written(&result), "{result:?}");
    assert_eq!((fs.used(), log.next_lsn()), (used, next_lsn));
    // Room again: the same LSN goes in, and every entry reads back after a reopen.
    fs.limit_space(None);
    for entry in &entries[taken..taken + 20] {
        log.append(&frame(std::slice::from_ref(entry)), entry.lsn)
            .unwrap();
    }
    drop(log);
    let (log, replayed) = open_with(&fs.restart_image(), growing(), 0).unwrap();
    assert_eq!(replayed, entries[..taken + 20]);
    assert_eq!(log.next_lsn(), taken as u64 + 21);
}

#[test]
fn a_durable_batch_that_fills_its_segment_is_not_failed_by_the_next_segment() {
    let fs = MemFs::default();
    let (log, _) = open_with(&fs, options(1024), 0).unwrap();
    let entries = written(40, 9);
    let mut filled = 0;
    loop {
        let batch = frame(&entries[filled..=filled]);
        let end = log.segments().unwrap()[0].bytes + batch.len() as u64;
        let fills = end >= 1024;
        if fills {
            // Room for this batch (and the synced mark), none for the segment after it.
            fs.limit_space(Some(end.max(1024) + super::synced::MARK_BYTES as u64));
        }
        log.append(&batch, entries[filled].lsn)
            .expect("a batch with room is durable, whatever comes after it");
        filled += 1;
        if fills {
            break;
        }
    }
    assert_eq!(log.segments().unwrap().len(), 1);
    assert_eq!(read_all(&log), entries[..filled]);
    let next = &entries[filled];
    let result = log.append(&frame(std::slice::from_ref(next)), next.lsn);
    assert!(is_not_written(&result), "{result:?}");
    fs.limit_space(None);
    log.append(&frame(std::slice::from_ref(next)), next.lsn)
        .unwrap();
    assert_eq!(log.segments().unwrap().len(), 2);
    assert_eq!(read_all(&log), entries[..=filled]);
}

#[test]
fn a_record_written_in_pieces_stops_before_a_piece_with_no_room_and_is_given_up_cleanly() {
    let fs = MemFs::default();
    let (log, _) = open_with(&fs, options(4096), 0).unwrap();
    let small = written(3, 1);
    log.append(&frame(&small), 3).unwrap();
    let used = fs.used();
    fs.limit_space(Some(used + 2000));
    let mut record = log.begin_record().unwrap();
    let piece = written(200, 2);
    let mut refused = None;
    for entry in &piece {
        let mut encoded = EncodedOps::default();
        encoded.extend(&entry.ops);
        if let Err(err) = log.write_ops(&mut record, &encoded) {
            refused = Some(err);
            break;
        }
    }
    let refused = refused.expect("the record outgrew the room");
    assert!(refused.is_not_written(), "{refused}");
    record.abandon().unwrap();
    assert_eq!(
        fs.used(),
        used,
        "what the record took past its segment is given back"
    );
    fs.limit_space(None);
    let next = written(4, 1);
    log.append(&frame(&next[3..]), 4).unwrap();
    drop(log);
    let (_, replayed) = open_with(&fs.restart_image(), options(4096), 0).unwrap();
    assert_eq!(replayed, next);
}

#[test]
fn a_large_write_the_disk_could_not_hold_twice_is_refused_before_it_is_written() {
    let fs = MemFs::default();
    let (log, _) = open_with(&fs, options(4 << 20), 0).unwrap();
    let large = Entry {
        lsn: 1,
        epoch: 1,
        timestamp_ms: 1_700_000_000_000,
        ops: vec![crate::codec::Op {
            table: "t".into(),
            key: b"k".to_vec(),
            value: Some(vec![7; 3 << 19]),
        }],
    };
    let record = frame(std::slice::from_ref(&large));
    // The segment's preallocated space holds the record; the disk could not hold its rows
    // a second time.
    fs.leave_room(record.len() as u64 * 2 - 1);
    let result = log.append(&record, 1);
    assert!(is_not_written(&result), "{result:?}");
    assert_eq!(log.next_lsn(), 1);
    fs.limit_space(None);
    log.append(&record, 1).unwrap();
    assert_eq!(read_all(&log), vec![large]);
}

#[test]
fn writes_stop_where_the_disk_keeps_a_quarter_free_for_the_tables_and_go_on_with_room() {
    let fs = MemFs::default();
    let (log, _) = open_with(&fs, growing(), 0).unwrap();
    let disk = 16 << 20;
    fs.limit_space(Some(disk));
    let entries = written(120_000, 4);
    let taken = append_until_refused(&log, &entries);
    let free = disk - fs.used();
    // Checked every MiB of records: the log stops within a MiB (and a segment) of the floor.
    assert!(free >= disk / 4 - (1 << 20) - (16 << 10), "{free} free");
    assert!(free < disk / 4, "{free} free: stopped before the floor");
    let again = &entries[taken];
    let result = log.append(&frame(std::slice::from_ref(again)), again.lsn);
    assert!(is_not_written(&result), "checked again at once: {result:?}");
    fs.limit_space(None);
    log.append(&frame(std::slice::from_ref(again)), again.lsn)
        .unwrap();
    assert_eq!(read_all(&log), entries[..=taken]);
}
