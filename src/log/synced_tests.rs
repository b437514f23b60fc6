//! A follower's log records how far its syncs went: recovery cuts a hole as torn only past
//! that, and takes damage a sync covered, or a log that ends before it, for corruption.

use super::memfs::MemFs;
use super::tests::{frame, open_with, options, written};
use super::*;
use crate::codec::Entry;
use crate::error::Error;

fn follower() -> LogOptions {
    LogOptions {
        holes_are_torn: true,
        ..options(1 << 20)
    }
}

fn is_corrupt(result: &Result<(Log, Vec<Entry>)>) -> bool {
    matches!(result, Err(Error::Log(LogError::Corrupt { .. })))
}

/// A follower's log with entries 1..=10 synced and 11..=12 appended after the sync.
fn synced_to_ten(fs: &MemFs) -> Vec<Entry> {
    let entries = written(12, 7);
    let (log, _) = open_with(fs, follower(), 0).unwrap();
    log.append_unsynced(&frame(&entries[..10]), 10).unwrap();
    log.sync().unwrap();
    log.append_unsynced(&frame(&entries[10..]), 12).unwrap();
    entries
}

#[test]
fn damage_a_sync_covered_is_corruption_though_valid_records_follow() {
    let fs = MemFs::default();
    let entries = synced_to_ten(&fs);
    let fourth = frame(&entries[..3]).len();
    fs.flip_byte(&segment_name(1), fourth);
    assert!(
        is_corrupt(&open_with(&fs, follower(), 0)),
        "LSN 4 was synced: no crash tears it"
    );
}

#[test]
fn a_hole_past_what_was_synced_is_still_cut_as_torn() {
    let fs = MemFs::default();
    let entries = synced_to_ten(&fs);
    let eleventh = frame(&entries[..10]).len();
    fs.flip_byte(&segment_name(1), eleventh);
    let (_, replayed) = open_with(&fs, follower(), 0).unwrap();
    assert_eq!(replayed, entries[..10]);
}

#[test]
fn a_log_that_ends_before_what_was_synced_is_corruption() {
    let fs = MemFs::default();
    let entries = synced_to_ten(&fs);
    // Zeros from entry 8 on: the log reads as if it ended at entry 7.
    let name = segment_name(1);
    let from = frame(&entries[..7]).len();
    let zeros = vec![0u8; fs.written_len(&name) - from];
    let file = fs.open(&name, false).unwrap();
    file.write_at(&zeros, from as u64).unwrap();
    assert!(is_corrupt(&open_with(&fs, follower(), 0)));
}

#[test]
fn a_cut_lowers_the_mark_so_a_hole_in_what_came_after_it_is_torn() {
    let fs = MemFs::default();
    let entries = synced_to_ten(&fs);
    // Another history from LSN 6 on, as a primary's after it lost what it had shipped.
    let others = written(8, 8);
    let (log, _) = open_with(&fs, follower(), 0).unwrap();
    log.cut_after(5).unwrap();
    log.append_unsynced(&frame(&others[5..]), 8).unwrap();
    drop(log);
    let seventh = frame(&entries[..5]).len() + frame(&others[5..6]).len();
    fs.flip_byte(&segment_name(1), seventh);
    let (_, replayed) = open_with(&fs, follower(), 0).unwrap();
    let mut kept = entries[..5].to_vec();
    kept.push(others[5].clone());
    assert_eq!(replayed, kept, "entry 7 was never synced");
}

#[test]
fn a_sync_after_a_cut_never_raises_the_mark_past_the_cut_entries() {
    let fs = MemFs::default();
    let entries = written(15, 7);
    let (log, _) = open_with(&fs, follower(), 0).unwrap();
    log.append_unsynced(&frame(&entries[..10]), 10).unwrap();
    log.sync().unwrap();
    // 11..=15 written, never synced, then cut off with 6..=10: another history from 6 on.
    log.append_unsynced(&frame(&entries[10..]), 15).unwrap();
    log.cut_after(5).unwrap();
    let others = written(8, 8);
    log.append_unsynced(&frame(&others[5..]), 8).unwrap();
    log.sync().unwrap();
    drop(log);
    let (_, replayed) = open_with(&fs, follower(), 0).expect("a sound log after a cut");
    let mut kept = entries[..5].to_vec();
    kept.extend_from_slice(&others[5..]);
    assert_eq!(replayed, kept);
}
