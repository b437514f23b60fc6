//! Segments: the batch that fills one starts the next, a large dropped one is renamed out
//! of the log and cut down before it goes, and what a crash leaves of it midway is removed
//! at the next open.

use super::memfs::MemFs;
use super::tests::{append_all, open_with, options};
use super::*;
use crate::codec::{Entry, Op};

/// Segments of 5 MiB, and entries of about 1 MiB: the first segment is cut in steps.
const SEGMENT_BYTES: u64 = 5 << 20;

fn big_entries(count: u64) -> Vec<Entry> {
    (1..=count)
        .map(|lsn| Entry {
            lsn,
            epoch: 1,
            timestamp_ms: 1_700_000_000_000 + lsn,
            ops: vec![Op {
                table: "blobs".into(),
                key: lsn.to_be_bytes().to_vec(),
                value: Some(vec![lsn as u8; 1 << 20]),
            }],
        })
        .collect()
}

/// A log of two segments or more, written one entry per append; returns it and the
/// entries.
fn two_segments(fs: &MemFs) -> (Log, Vec<Entry>) {
    let (log, _) = open_with(fs, options(SEGMENT_BYTES), 0).unwrap();
    let entries = big_entries(8);
    for entry in entries.chunks(1) {
        append_all(&log, entry);
    }
    assert!(log.segments.read().unwrap().len() >= 2);
    (log, entries)
}

/// The segments the log lists: first LSN and file name.
fn listed(log: &Log) -> Vec<(u64, String)> {
    let segments = log.segments.read().unwrap();
    segments
        .iter()
        .map(|s| (s.first_lsn, s.name.clone()))
        .collect()
}

fn dropped_files(fs: &MemFs) -> Vec<String> {
    fs.names()
        .into_iter()
        .filter(|name| name.ends_with(DROPPED_SUFFIX))
        .collect()
}

#[test]
fn a_large_dropped_segment_goes_whole_and_the_rest_still_reads() {
    let fs = MemFs::default();
    let (log, entries) = two_segments(&fs);
    let second = log.segments.read().unwrap()[1].first_lsn;
    assert_eq!(log.drop_before(second).unwrap(), 1);
    // Out of the log at once, under another name while it is cut down.
    assert!(!fs.names().contains(&segment_name(1)));
    assert_eq!(log.oldest_lsn(), second);
    let mut position = LogPosition::after(second - 1);
    let read = log.read(&mut position, 8, 100, usize::MAX).unwrap();
    assert_eq!(read, entries[second as usize - 1..]);
    // Dropping the log waits for the cut: nothing is left of the segment.
    drop(log);
    assert!(dropped_files(&fs).is_empty());
    assert!(!fs.names().contains(&segment_name(1)));
}

/// A compaction removes the dropped segments still being cut before it returns; the log
/// goes on, and what it drops afterwards is cut gently again.
#[test]
fn reclaiming_returns_once_dropped_segments_are_gone_and_later_drops_are_cut_gently() {
    let fs = MemFs::default();
    let (log, _) = open_with(&fs, options(SEGMENT_BYTES), 0).unwrap();
    for entry in big_entries(24).chunks(1) {
        append_all(&log, entry);
    }
    let firsts: Vec<u64> = listed(&log).into_iter().map(|(first, _)| first).collect();
    assert!(firsts.len() >= 4, "{firsts:?}");
    assert_eq!(log.drop_before(firsts[2]).unwrap(), 2);
    assert!(log.cutter.progress().0 > 0, "the cut has just begun");
    log.reclaim_dropped();
    assert!(dropped_files(&fs).is_empty(), "{:?}", dropped_files(&fs));
    assert_eq!(log.cutter.progress(), (0, 0));
    for first in &firsts[..2] {
        assert!(!fs.names().contains(&segment_name(*first)));
    }
    // Not hurried any more: the next drop is cut a step at a time, in the background.
    assert_eq!(log.drop_before(firsts[3]).unwrap(), 1);
    let (backlog, running) = log.cutter.progress();
    assert!(
        backlog > 0 && running == 1,
        "a later drop is cut down in the background ({backlog} bytes, {running} threads)"
    );
    assert_eq!(dropped_files(&fs).len(), 1);
}

/// The cut hurries once more than four of the log's largest segments wait, so that a log
/// with a size cap (segments of at most a quarter of it) stays within about twice its cap
/// on disk while it is written fast; never more than 256 MiB waits.
#[test]
fn what_may_wait_to_be_cut_is_four_of_the_largest_segments_up_to_256_mib() {
    for (largest, waits) in [
        (1 << 20, 4 << 20),
        (64 << 20, 256 << 20),
        (1 << 40, 256 << 20),
    ] {
        let fs = MemFs::default();
        let grown_to = LogOptions {
            first_segment_bytes: 1 << 20,
            ..options(largest)
        };
        let (log, _) = open_with(&fs, grown_to, 0).unwrap();
        assert_eq!(log.cutter.hurry_backlog, waits, "segments of {largest}");
    }
}

#[test]
fn segments_dropped_while_others_are_cut_wait_for_the_same_thread_and_all_go() {
    let fs = MemFs::default();
    let (log, _) = open_with(&fs, options(SEGMENT_BYTES), 0).unwrap();
    let entries = big_entries(24);
    for entry in entries.chunks(1) {
        append_all(&log, entry);
    }
    let firsts: Vec<u64> = listed(&log).into_iter().map(|(first, _)| first).collect();
    assert!(firsts.len() >= 4, "{firsts:?}");
    // Three drops in a row, each of a segment of several steps.
    for first in &firsts[1..4] {
        assert_eq!(log.drop_before(*first).unwrap(), 1);
        let (backlog, running) = log.cutter.progress();
        assert!(running <= 1, "{running} threads cut at once");
        assert!(
            backlog > 0,
            "a dropped segment of several steps waits to be cut"
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Until every file is gone and the thread ended, its backlog told down to nothing.
    while !dropped_files(&fs).is_empty() || log.cutter.progress() != (0, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?} {:?}",
            dropped_files(&fs),
            log.cutter.progress()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for first in &firsts[..3] {
        assert!(!fs.names().contains(&segment_name(*first)));
    }
}

#[test]
fn a_crash_while_a_dropped_segment_is_cut_leaves_a_log_that_opens() {
    let fs = MemFs::default();
    let (log, entries) = two_segments(&fs);
    let second = log.segments.read().unwrap()[1].first_lsn;
    // The rename and the directory sync go through; the first cut meets the power loss.
    fs.freeze_after(2);
    assert_eq!(log.drop_before(second).unwrap(), 1);
    drop(log);
    let image = fs.power_loss_image();
    assert_eq!(
        dropped_files(&image),
        [format!("{}{DROPPED_SUFFIX}", segment_name(1))]
    );
    // The segments are whole or gone: the log opens, replays and reads from the second.
    let (log, replayed) = open_with(&image, options(SEGMENT_BYTES), second - 1).unwrap();
    assert_eq!(replayed, entries[second as usize - 1..]);
    assert!(dropped_files(&image).is_empty());
    assert_eq!(log.oldest_lsn(), second);
}

#[test]
fn the_segment_holding_the_last_entry_is_never_dropped() {
    let fs = MemFs::default();
    let (log, _) = open_with(&fs, options(SEGMENT_BYTES), 0).unwrap();
    let entries = big_entries(5);
    append_all(&log, &entries);
    // The batch filled the first segment, which started the second, empty one: dropping
    // everything before the next LSN keeps the first, the only one with an entry.
    assert_eq!(log.segments.read().unwrap().len(), 2);
    assert_eq!(log.drop_before(6).unwrap(), 0);
    let mut position = LogPosition::after(4);
    assert_eq!(
        log.read(&mut position, 5, 1, usize::MAX).unwrap(),
        entries[4..]
    );
    // So does a reopen: the last entry is still there to read (its identity comes from it).
    drop(log);
    let (log, _) = open_with(&fs, options(SEGMENT_BYTES), 5).unwrap();
    let mut position = LogPosition::after(4);
    assert_eq!(
        log.read(&mut position, 5, 1, usize::MAX).unwrap(),
        entries[4..]
    );
}

#[test]
fn the_batch_that_fills_a_segment_starts_the_next_one() {
    let fs = MemFs::default();
    let (log, _) = open_with(&fs, options(SEGMENT_BYTES), 0).unwrap();
    let entries = big_entries(8);
    // Four entries of 1 MiB stay within the first 5 MiB; the fifth crosses its end.
    append_all(&log, &entries[..4]);
    assert_eq!(fs.names(), [segment_name(1), "synced".to_owned()]);
    append_all(&log, &entries[4..5]);
    // The next segment exists before any write needs it, and the log reads on across it.
    assert_eq!(
        fs.names(),
        [segment_name(1), segment_name(6), "synced".to_owned()]
    );
    append_all(&log, &entries[5..]);
    assert_eq!(log.segments.read().unwrap().len(), 2);
    let mut position = LogPosition::after(0);
    assert_eq!(
        log.read(&mut position, 8, 100, usize::MAX).unwrap(),
        entries
    );
    // Reopened, it replays the same entries, whatever segment they are in.
    drop(log);
    let (_, replayed) = open_with(&fs, options(SEGMENT_BYTES), 0).unwrap();
    assert_eq!(replayed, entries);
}

/// Retention asks for the commit time of each full segment's newest entry: the log that
/// filled the segment knows it, one reopened reads it, and the last segment (still
/// written) has none yet.
#[test]
fn a_full_segment_knows_its_newest_entrys_time() {
    let fs = MemFs::default();
    let (log, entries) = two_segments(&fs);
    let second = log.segments.read().unwrap()[1].first_lsn;
    let newest = entries[second as usize - 2].timestamp_ms;
    assert_eq!(log.newest_ms(1).unwrap(), Some(newest));
    assert_eq!(log.newest_ms(second).unwrap(), None);
    assert_eq!(log.newest_ms(second + 1).unwrap(), None, "no such segment");
    drop(log);
    let (log, _) = open_with(&fs, options(SEGMENT_BYTES), 0).unwrap();
    assert!(log.segments.read().unwrap()[0].newest_ms.get().is_none());
    assert_eq!(log.newest_ms(1).unwrap(), Some(newest));
    assert_eq!(
        log.segments.read().unwrap()[0].newest_ms.get(),
        Some(&newest)
    );
}

#[test]
fn an_empty_segment_a_crash_left_is_not_kept_beside_the_one_that_replaces_it() {
    let fs = MemFs::default();
    let entries = big_entries(8);
    let (log, _) = open_with(&fs, options(SEGMENT_BYTES), 0).unwrap();
    append_all(&log, &entries[..3]);
    drop(log);
    // A crash between creating the next segment's file and preallocating it leaves the
    // file empty.
    let _ = fs.open(&segment_name(4), true).unwrap();
    let (log, replayed) = open_with(&fs, options(SEGMENT_BYTES), 0).unwrap();
    assert_eq!(replayed, entries[..3]);
    for entry in entries[3..].chunks(1) {
        append_all(&log, entry);
    }
    let names: Vec<String> = listed(&log).into_iter().map(|(_, name)| name).collect();
    let mut unique = names.clone();
    unique.dedup();
    assert_eq!(names, unique, "one segment per file");
    // Retention drops what is before the newest segment: never the file being written.
    let newest = log.segments.read().unwrap().last().unwrap().first_lsn;
    log.drop_before(newest).unwrap();
    drop(log);
    let (_, replayed) = open_with(&fs, options(SEGMENT_BYTES), newest - 1).unwrap();
    assert_eq!(replayed, entries[newest as usize - 1..]);
}

#[test]
fn a_lone_empty_segment_past_the_checkpoint_is_left_for_recovery_to_judge() {
    let fs = MemFs::default();
    // The tables hold nothing, the only segment would start at LSN 10: entries are missing.
    let _ = fs.open(&segment_name(10), true).unwrap();
    assert!(open_with(&fs, options(SEGMENT_BYTES), 0).is_err());
    assert!(fs.names().contains(&segment_name(10)));
    // Where the log begins anyway, it is simply the first segment, made again.
    let (log, replayed) = open_with(&fs, options(SEGMENT_BYTES), 9).unwrap();
    assert!(replayed.is_empty());
    assert_eq!(listed(&log), [(10, segment_name(10))]);
}
