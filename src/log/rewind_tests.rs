use super::memfs::MemFs;
use super::tests::{append_all, open_with, options, written};
use super::*;

/// Entries `1..=count` of another history than `written(count, 5)`'s.
fn other(count: u64) -> Vec<codec::Entry> {
    written(count, 99)
}

#[test]
fn a_cut_drops_the_newest_entries_across_segments_and_the_log_goes_on_from_there() {
    let original = written(40, 5);
    let replacement = other(40);
    for keep in [0, 1, 9, 22, 38, 39, 40] {
        let fs = MemFs::default();
        let (log, _) = open_with(&fs, options(500), 0).unwrap();
        for chunk in original.chunks(4) {
            append_all(&log, chunk);
        }
        log.cut_after(keep).unwrap();
        assert_eq!(log.next_lsn(), keep + 1, "keep {keep}");
        let mut expected = original[..keep as usize].to_vec();
        expected.extend_from_slice(&replacement[keep as usize..]);
        for chunk in expected[keep as usize..].chunks(3) {
            append_all(&log, chunk);
        }
        let mut position = LogPosition::after(0);
        let read = log.read(&mut position, 40, 100, usize::MAX).unwrap();
        assert_eq!(read, expected, "keep {keep}");
        drop(log);
        let (log, replayed) = open_with(&fs, options(500), 0).unwrap();
        assert_eq!(replayed, expected, "reopened, keep {keep}");
        assert_eq!(log.next_lsn(), 41);
    }
}

#[test]
fn a_cut_that_leaves_nothing_to_cut_changes_nothing() {
    let fs = MemFs::default();
    let (log, _) = open_with(&fs, options(1 << 20), 0).unwrap();
    append_all(&log, &written(5, 5));
    log.cut_after(5).unwrap();
    log.cut_after(9).unwrap();
    assert_eq!(log.next_lsn(), 6);
}
