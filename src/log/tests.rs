use super::memfs::{MemFs, Rng};
use super::*;
use crate::codec::{encode_ops, frame_record, Entry, Op};
use crate::error::Error;

/// Options keeping no records in memory: every read goes to the files, as right after an
/// open (the tests of the records kept in memory ask for some).
pub(super) fn options(segment_bytes: u64) -> LogOptions {
    LogOptions {
        segment_bytes,
        first_segment_bytes: segment_bytes,
        fsync: true,
        recent_bytes: 0,
        unsynced: std::sync::Arc::default(),
        holes_are_torn: false,
    }
}

/// Options whose segments start at 150 bytes and double up to 1200: sizes vary in a log.
fn growing() -> LogOptions {
    LogOptions {
        first_segment_bytes: 150,
        ..options(1200)
    }
}

fn entry(lsn: u64, rng: &mut Rng) -> Entry {
    let ops = (0..=rng.below(3))
        .map(|i| Op {
            table: format!("t{}", rng.below(3)),
            key: format!("k{lsn}-{i}").into_bytes(),
            value: (rng.below(4) != 0).then(|| vec![lsn as u8; rng.below(120) as usize]),
        })
        .collect();
    Entry {
        lsn,
        epoch: 1,
        timestamp_ms: 1_700_000_000_000 + lsn,
        ops,
    }
}

pub(super) fn frame(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let body = encode_ops(&e.ops);
        frame_record(
            &mut out,
            e.lsn,
            e.epoch,
            e.timestamp_ms,
            &body,
            crc32c::crc32c(&body),
        );
    }
    out
}

fn open(fs: &MemFs, segment_bytes: u64, checkpoint: u64) -> Result<(Log, Vec<Entry>)> {
    open_with(fs, options(segment_bytes), checkpoint)
}

pub(super) fn open_with(
    fs: &MemFs,
    options: LogOptions,
    checkpoint: u64,
) -> Result<(Log, Vec<Entry>)> {
    let mut replayed = Vec::new();
    let log = Log::open(Box::new(fs.clone()), options, checkpoint, |e| {
        replayed.push(e.into_entry()?);
        Ok(())
    })?;
    Ok((log, replayed))
}

pub(super) fn append_all(log: &Log, entries: &[Entry]) {
    log.append(&frame(entries), entries.last().unwrap().lsn)
        .unwrap();
}

pub(super) fn written(count: u64, seed: u64) -> Vec<Entry> {
    let mut rng = Rng(seed);
    (1..=count).map(|lsn| entry(lsn, &mut rng)).collect()
}

fn is_corrupt(result: &Result<(Log, Vec<Entry>)>) -> bool {
    matches!(result, Err(Error::Log(LogError::Corrupt { .. })))
}

/// Why opening the log was refused as corrupt (it must have been).
fn corrupt_reason(result: Result<(Log, Vec<Entry>)>) -> String {
    match result {
        Err(Error::Log(LogError::Corrupt { reason, .. })) => reason,
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a damaged log opened"),
    }
}

#[test]
fn reopened_log_replays_every_entry_after_the_checkpoint() {
    let fs = MemFs::default();
    let entries = written(50, 7);
    let (log, _) = open(&fs, 700, 0).unwrap();
    for chunk in entries.chunks(3) {
        append_all(&log, chunk);
    }
    assert!(fs.names().len() > 2, "small segments must roll over");
    drop(log);
    let (log, replayed) = open(&fs, 700, 20).unwrap();
    assert_eq!(replayed, entries[20..]);
    assert_eq!(log.next_lsn(), 51);
}

#[test]
fn reading_from_any_lsn_crosses_segments_in_order() {
    let fs = MemFs::default();
    let entries = written(40, 11);
    let (log, _) = open(&fs, 500, 0).unwrap();
    for chunk in entries.chunks(4) {
        append_all(&log, chunk);
    }
    for start in [0, 1, 17, 39] {
        let mut position = LogPosition::after(start);
        let mut seen = Vec::new();
        loop {
            let batch = log.read(&mut position, 40, 3, usize::MAX).unwrap();
            if batch.is_empty() {
                break;
            }
            seen.extend(batch);
        }
        assert_eq!(seen, entries[start as usize..]);
    }
    let mut position = LogPosition::after(0);
    assert_eq!(
        log.read(&mut position, 5, 100, usize::MAX).unwrap().len(),
        5,
        "stops at up_to"
    );
}

/// Appends `entries`, the last one written but not synced (a crash may tear it).
fn append_all_but_last_synced(log: &Log, entries: &[Entry]) {
    let (last, synced) = entries.split_last().unwrap();
    append_all(log, synced);
    log.append_unsynced(&frame(std::slice::from_ref(last)), last.lsn)
        .unwrap();
}

#[test]
fn torn_tail_is_cut_and_the_log_continues() {
    let fs = MemFs::default();
    let entries = written(10, 3);
    let (log, _) = open(&fs, 1 << 20, 0).unwrap();
    append_all_but_last_synced(&log, &entries);
    drop(log);
    let name = segment_name(1);
    let end = fs.written_len(&name);
    fs.flip_byte(&name, end - 1);
    let (log, replayed) = open(&fs, 1 << 20, 0).unwrap();
    assert_eq!(replayed, entries[..9], "only the torn last record is lost");
    assert_eq!(log.next_lsn(), 10);
    let more = written(12, 3);
    append_all(&log, &more[9..]);
    drop(log);
    let (_, replayed) = open(&fs, 1 << 20, 0).unwrap();
    assert_eq!(replayed, more);
}

#[test]
fn damage_followed_by_valid_records_is_corruption() {
    let fs = MemFs::default();
    let (log, _) = open(&fs, 1 << 20, 0).unwrap();
    append_all(&log, &written(10, 5));
    drop(log);
    fs.flip_byte(&segment_name(1), 20);
    assert!(is_corrupt(&open(&fs, 1 << 20, 0)));
}

/// The tables' writeback reads the count to know whether the disk's cache was flushed
/// lately: every fdatasync of a segment counts, and nothing else does.
#[test]
fn every_fdatasync_of_a_segment_is_counted_where_the_tables_see_it() {
    let fs = MemFs::default();
    let options = options(1 << 20);
    let unsynced = std::sync::Arc::clone(&options.unsynced);
    let entries = written(6, 3);
    let (log, _) = open_with(&fs, options, 0).unwrap();
    let before = unsynced.syncs();
    append_all(&log, &entries[..1]);
    append_all(&log, &entries[1..2]);
    assert_eq!(unsynced.syncs(), before + 2, "one per synced append");
    log.append_unsynced(&frame(&entries[2..4]), 4).unwrap();
    assert_eq!(
        unsynced.syncs(),
        before + 2,
        "an unsynced append flushes nothing"
    );
    log.sync().unwrap();
    assert_eq!(
        unsynced.syncs(),
        before + 3,
        "the sync of the unsynced segment"
    );
    log.sync().unwrap();
    assert_eq!(unsynced.syncs(), before + 3, "nothing was left to sync");
}

/// A follower's log, written without a sync per batch, may lose an earlier page and keep
/// a later one: recovery cuts it at the hole, and the log continues from there.
#[test]
fn a_hole_in_a_followers_unsynced_tail_is_cut_as_torn() {
    let follower = LogOptions {
        holes_are_torn: true,
        ..options(1 << 20)
    };
    let fs = MemFs::default();
    let entries = written(10, 5);
    let (log, _) = open_with(&fs, follower.clone(), 0).unwrap();
    append_all(&log, &entries[..3]);
    log.append_unsynced(&frame(&entries[3..]), 10).unwrap();
    drop(log);
    // The fourth record's first byte is lost; the ones after it survived.
    let fourth = frame(&entries[..3]).len();
    fs.flip_byte(&segment_name(1), fourth);
    assert!(
        is_corrupt(&open(&fs, 1 << 20, 0)),
        "a primary's log refuses it"
    );
    let (log, replayed) = open_with(&fs, follower.clone(), 0).unwrap();
    assert_eq!(replayed, entries[..3]);
    append_all(&log, &entries[3..4]);
    drop(log);
    let (_, replayed) = open_with(&fs, follower, 0).unwrap();
    assert_eq!(
        replayed,
        entries[..4],
        "what followed the hole is gone for good"
    );
}

#[test]
fn damage_in_an_earlier_segment_is_corruption() {
    let fs = MemFs::default();
    let entries = written(30, 9);
    let (log, _) = open(&fs, 400, 0).unwrap();
    for chunk in entries.chunks(2) {
        append_all(&log, chunk);
    }
    drop(log);
    let first = segment_name(1);
    let end = fs.written_len(&first);
    fs.flip_byte(&first, end - 1);
    assert!(is_corrupt(&open(&fs, 400, 0)));
}

#[test]
fn damage_at_or_before_the_checkpoint_is_corruption() {
    let fs = MemFs::default();
    let (log, _) = open(&fs, 1 << 20, 0).unwrap();
    append_all(&log, &written(10, 5));
    drop(log);
    let name = segment_name(1);
    let end = fs.written_len(&name);
    fs.flip_byte(&name, end - 1);
    assert!(
        is_corrupt(&open(&fs, 1 << 20, 10)),
        "LSN 10 was already applied durably"
    );
}

#[test]
fn a_log_that_ends_before_the_checkpoint_is_corruption() {
    let fs = MemFs::default();
    let (log, _) = open(&fs, 1 << 20, 0).unwrap();
    append_all(&log, &written(5, 5));
    drop(log);
    assert!(is_corrupt(&open(&fs, 1 << 20, 8)));
}

#[test]
fn dropped_segments_are_reported_as_truncated() {
    let fs = MemFs::default();
    let entries = written(40, 13);
    let (log, _) = open(&fs, 400, 0).unwrap();
    for chunk in entries.chunks(2) {
        append_all(&log, chunk);
    }
    let removed = log.drop_before(25).unwrap();
    assert!(removed > 0);
    let oldest = log.oldest_lsn();
    assert!(oldest > 1 && oldest <= 25);
    let mut position = LogPosition::after(0);
    let truncated = log.read(&mut position, 40, 100, usize::MAX).unwrap_err();
    assert!(matches!(truncated, Error::Log(LogError::Truncated { .. })));
    // The LSN named is the reader's, as `changes(since=0)` says it: after 0, not after 1.
    assert_eq!(
        truncated.to_string(),
        format!("log entries after LSN 0 are no longer retained (oldest retained LSN is {oldest})")
    );
    let mut position = LogPosition::after(oldest - 1);
    assert_eq!(
        log.read(&mut position, 40, 100, usize::MAX).unwrap(),
        entries[oldest as usize - 1..]
    );
    drop(log);
    let (log, replayed) = open(&fs, 400, 30).unwrap();
    assert_eq!(replayed, entries[30..]);
    assert_eq!(log.oldest_lsn(), oldest);
}

/// Power loss at a random operation: every acknowledged entry survives, nothing else is
/// invented, LSNs stay dense, and the recovered log accepts new appends that also survive.
fn segment_len(fs: &MemFs, first_lsn: u64) -> u64 {
    let file = fs.open(&segment_name(first_lsn), false).unwrap();
    file.size().unwrap()
}

/// A new log starts with a small segment and each new one doubles the last up to the
/// largest (a segment holds its preallocated bytes plus at most the batch that crossed them).
#[test]
fn segments_start_small_and_double_up_to_the_largest() {
    let fs = MemFs::default();
    let entries = written(120, 5);
    let options = LogOptions {
        first_segment_bytes: 1000,
        ..options(8000)
    };
    let (log, _) = open_with(&fs, options.clone(), 0).unwrap();
    assert_eq!(segment_len(&fs, 1), 1000, "the first segment is small");
    for entry in &entries {
        append_all(&log, std::slice::from_ref(entry));
    }
    let segments = log.segments().unwrap();
    assert!(segments.len() >= 5, "segments rolled: {segments:?}");
    let mut capacity = 1000;
    for (index, segment) in segments.iter().enumerate() {
        let len = segment_len(&fs, segment.first_lsn);
        let last = index + 1 == segments.len();
        assert!(
            len >= capacity && (last || len < capacity + 512),
            "segment {index}: {len} bytes, preallocated {capacity}"
        );
        capacity = (capacity * 2).min(8000);
    }
    drop(log);
    let (log, replayed) = open_with(&fs, options, 0).unwrap();
    assert_eq!(replayed, entries, "variable sizes replay as written");
    let mut position = LogPosition::after(0);
    assert_eq!(
        log.read(&mut position, 120, 200, usize::MAX).unwrap(),
        entries
    );
}

#[test]
fn power_loss_at_any_point_keeps_every_acknowledged_entry() {
    let (mut interrupted, mut cut_short) = (0, 0);
    for seed in 1..400u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let fs = MemFs::default();
        let entries = written(60, seed);
        let (log, _) = open_with(&fs, growing(), 0).unwrap();
        fs.freeze_after(rng.below(120));
        let mut acked = 0u64;
        let (mut next, mut attempted) = (0usize, 0usize);
        while next < entries.len() {
            let take = 1 + rng.below(4) as usize;
            let batch = &entries[next..(next + take).min(entries.len())];
            attempted = next + batch.len();
            if log
                .append(&frame(batch), batch.last().unwrap().lsn)
                .is_err()
            {
                break;
            }
            next += batch.len();
            acked = batch.last().unwrap().lsn;
        }
        drop(log);
        let image = fs.crash_image(&mut rng);
        let (log, replayed) =
            open_with(&image, growing(), 0).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let survived = replayed.len() as u64;
        interrupted += usize::from(acked < entries.len() as u64);
        cut_short += usize::from(survived < attempted as u64);
        assert!(
            survived >= acked,
            "seed {seed}: lost acknowledged entries ({survived} < {acked})"
        );
        assert_eq!(replayed, entries[..replayed.len()], "seed {seed}");
        let more = written(survived + 3, seed + 1);
        append_all(&log, &more[survived as usize..]);
        drop(log);
        let (_, again) = open_with(&image, growing(), 0)
            .unwrap_or_else(|e| panic!("seed {seed} after recovery: {e}"));
        assert_eq!(
            again[..survived as usize],
            entries[..survived as usize],
            "seed {seed}"
        );
        assert_eq!(
            again[survived as usize..],
            more[survived as usize..],
            "seed {seed}"
        );
    }
    assert!(
        interrupted > 100 && cut_short > 10,
        "the freeze points must hit mid-stream ({interrupted}, {cut_short})"
    );
}

/// A record that reached the page cache but whose fdatasync failed is replayed on restart;
/// recovery must make it durable before the store builds on it, or a later power loss takes
/// back what readers already saw (and leaves tables ahead of the log).
#[test]
fn recovery_makes_the_replayed_tail_durable_before_returning() {
    let fs = MemFs::default();
    let entries = written(6, 21);
    let (log, _) = open(&fs, 1 << 20, 0).unwrap();
    append_all(&log, &entries[..3]);
    // The next batch is written, then its fdatasync fails.
    fs.freeze_after(1);
    assert!(log.append(&frame(&entries[3..]), 6).is_err());
    drop(log);
    let restarted = fs.restart_image();
    let (log, replayed) = open(&restarted, 1 << 20, 0).unwrap();
    assert_eq!(
        replayed, entries,
        "the page cache still held the unsynced batch"
    );
    drop(log);
    let (_, after_power_loss) = open(&restarted.power_loss_image(), 1 << 20, 0).unwrap();
    assert_eq!(
        after_power_loss, entries,
        "what recovery replayed was made durable"
    );
}

/// Reads raw entries from `position` up to `up_to` in steps of `step` entries.
fn read_raw_all(log: &Log, position: &mut LogPosition, up_to: u64, step: usize) -> Vec<RawEntry> {
    let mut read = Vec::new();
    loop {
        let batch = log.read_raw(position, up_to, step, usize::MAX).unwrap();
        if batch.is_empty() {
            return read;
        }
        read.extend(batch);
    }
}

/// The records kept in memory are the records in the files: for every start position and
/// step, across segment rolls, before and after the oldest batches are trimmed away (and a
/// reader whose position was trimmed away goes on from the files). The newest batch is
/// read with no file access at all.
#[test]
fn records_kept_in_memory_read_as_the_files_do() {
    let fs = MemFs::default();
    let entries = written(80, 17);
    let kept = LogOptions {
        recent_bytes: 1200,
        ..options(500)
    };
    let (log, _) = open_with(&fs, kept, 0).unwrap();
    let mut rng = Rng(99);
    let mut keeping_up = LogPosition::after(0);
    let mut followed = Vec::new();
    let mut next = 0;
    while next < entries.len() {
        let take = (1 + rng.below(4) as usize).min(entries.len() - next);
        let batch = &entries[next..next + take];
        append_all(&log, batch);
        next += take;
        let last = next as u64;
        // A reader that keeps up, a few entries at a time.
        followed.extend(read_raw_all(
            &log,
            &mut keeping_up,
            last,
            1 + rng.below(3) as usize,
        ));
        let reads = fs.reads();
        let mut newest = LogPosition::after(batch[0].lsn - 1);
        let from_memory = log
            .read_raw(&mut newest, last, usize::MAX, usize::MAX)
            .unwrap();
        assert_eq!(fs.reads(), reads, "the newest batch is read from memory");
        assert_eq!(
            from_memory.iter().map(|e| e.lsn).collect::<Vec<_>>(),
            batch.iter().map(|e| e.lsn).collect::<Vec<_>>()
        );
    }
    assert!(fs.names().len() > 3, "small segments must roll over");
    // The same log read from its files only, as a reopened log reads it.
    let (files, _) = open(&fs, 500, 80).unwrap();
    let everything = read_raw_all(&files, &mut LogPosition::after(0), 80, usize::MAX);
    assert_eq!(everything.len(), 80);
    assert_eq!(followed, everything, "the reader that kept up");
    let reads = fs.reads();
    assert_eq!(
        read_raw_all(&log, &mut LogPosition::after(0), 80, 7),
        everything
    );
    assert!(
        fs.reads() > reads,
        "the oldest batches were trimmed from memory"
    );
    for start in 0..80 {
        for step in [1, 2, 5, 100] {
            let mut position = LogPosition::after(start);
            let read = read_raw_all(&log, &mut position, 80, step);
            assert_eq!(read, everything[start as usize..], "from {start} by {step}");
        }
    }
    // A reader whose position is trimmed away from memory goes on from the files where its
    // last read from memory left it.
    let mut position = LogPosition::after(78);
    assert_eq!(
        log.read_raw(&mut position, 80, 1, usize::MAX).unwrap(),
        everything[78..79]
    );
    append_all(&log, &written(120, 17)[80..]);
    let rest = read_raw_all(&log, &mut position, 120, 3);
    let (files, _) = open(&fs, 500, 120).unwrap();
    assert_eq!(
        rest,
        read_raw_all(&files, &mut LogPosition::after(79), 120, 100)
    );
    assert_eq!(rest.len(), 41);
}

/// Reads from memory stop at `up_to` (the store passes its visible LSN, so that only
/// durable, visible entries leave it), however many entries were appended past it.
#[test]
fn records_kept_in_memory_are_read_no_further_than_up_to() {
    let fs = MemFs::default();
    let entries = written(10, 5);
    let kept = LogOptions {
        recent_bytes: 1 << 20,
        ..options(1 << 20)
    };
    let (log, _) = open_with(&fs, kept, 0).unwrap();
    append_all(&log, &entries);
    let reads = fs.reads();
    let mut position = LogPosition::after(0);
    let read = read_raw_all(&log, &mut position, 4, usize::MAX);
    assert_eq!(read.iter().map(|e| e.lsn).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(position.next_lsn(), 5);
    let read = log.read(&mut position, 10, usize::MAX, usize::MAX).unwrap();
    assert_eq!(read, entries[4..]);
    assert_eq!(fs.reads(), reads, "all of it from memory");
}

/// Rewrites a file's written bytes through the file layer, as a damaged disk would.
fn rewrite(fs: &MemFs, name: &str, change: impl FnOnce(&mut Vec<u8>)) {
    let file = fs.open(name, false).unwrap();
    let mut bytes = vec![0; fs.written_len(name)];
    let read = file.read_at(&mut bytes, 0).unwrap();
    assert_eq!(read, bytes.len());
    change(&mut bytes);
    file.write_at(&bytes, 0).unwrap();
}

mod fuzz {
    //! Fuzz targets of the log record decoder and recovery, run for a bounded number of
    //! cases by `cargo test`; for a longer run:
    //! `PROPTEST_CASES=100000 cargo test --release --no-default-features fuzz_`.

    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    proptest! {
        /// Bits flipped anywhere in a segment, and a segment cut short at any byte: reopening
        /// replays exactly a prefix of what was written after the checkpoint (a torn tail
        /// is cut) or reports corruption; never a panic, never an entry that was not written.
        /// Undamaged, every entry round-trips.
        #[test]
        fn fuzz_damaged_segments_replay_a_prefix_or_report_corruption(
            seed in 1u64..,
            count in 1u64..24,
            flips in proptest::collection::vec((any::<Index>(), 1u8..), 0..3),
            cut in proptest::option::of(any::<Index>()),
            checkpoint in any::<Index>(),
        ) {
            let fs = MemFs::default();
            let entries = written(count, seed);
            let (log, _) = open(&fs, 1 << 20, 0).unwrap();
            for chunk in entries.chunks(5) {
                append_all(&log, chunk);
            }
            drop(log);
            let damaged = !flips.is_empty() || cut.is_some();
            rewrite(&fs, &segment_name(1), |bytes| {
                let len = bytes.len();
                for (at, mask) in &flips {
                    bytes[at.index(len)] ^= mask;
                }
                if let Some(cut) = cut {
                    bytes[cut.index(len)..].fill(0);
                }
            });
            let checkpoint = checkpoint.index(count as usize + 1);
            match open(&fs, 1 << 20, checkpoint as u64) {
                Ok((log, replayed)) => {
                    let after = &entries[checkpoint..];
                    prop_assert!(replayed.len() <= after.len());
                    prop_assert_eq!(&replayed[..], &after[..replayed.len()]);
                    prop_assert_eq!(log.next_lsn(), (checkpoint + replayed.len()) as u64 + 1);
                    if !damaged {
                        prop_assert_eq!(replayed.len(), after.len());
                    }
                }
                Err(Error::Log(LogError::Corrupt { .. })) => prop_assert!(damaged),
                Err(other) => prop_assert!(false, "unexpected error: {other}"),
            }
        }

        /// A segment of arbitrary bytes is read without a panic: whatever replays is a run
        /// of valid records with dense LSNs from the start.
        #[test]
        fn fuzz_arbitrary_segment_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let fs = MemFs::default();
            fs.open(&segment_name(1), true).unwrap().write_at(&bytes, 0).unwrap();
            if let Ok((log, replayed)) = open(&fs, 1 << 20, 0) {
                for (lsn, entry) in (1..).zip(&replayed) {
                    prop_assert_eq!(entry.lsn, lsn);
                }
                prop_assert_eq!(log.next_lsn(), replayed.len() as u64 + 1);
            }
        }
    }
}

/// The identity a read of the entry at `lsn` gives.
fn read_id(log: &Log, lsn: u64) -> (u64, u32) {
    let entry = &log
        .read_raw(&mut LogPosition::after(lsn - 1), lsn, 1, usize::MAX)
        .unwrap()[0];
    (entry.epoch, entry.crc)
}

#[test]
fn the_last_entrys_identity_is_known_without_a_read_after_appends_and_reopens() {
    let fs = MemFs::default();
    let (log, _) = open(&fs, 700, 0).unwrap();
    assert_eq!(log.last_entry_id(0), None, "an empty log has no last entry");
    let mut entries = written(20, 11);
    for (i, entry) in entries.iter_mut().enumerate() {
        entry.epoch = 1 + i as u64 / 7;
    }
    for chunk in entries.chunks(3) {
        append_all(&log, chunk);
        let last = chunk.last().unwrap().lsn;
        assert_eq!(log.last_entry_id(last), Some(read_id(&log, last)));
        assert_eq!(
            log.last_entry_id(last - 1),
            None,
            "only the last entry is known"
        );
    }
    assert_eq!(
        log.last_entry_id(20).unwrap().0,
        3,
        "the epoch is the entry's"
    );
    let expected = log.last_entry_id(20);
    drop(log);
    let (log, _) = open(&fs, 700, 20).unwrap();
    assert_eq!(log.last_entry_id(20), expected, "recovery finds it again");
}

#[test]
fn a_bad_last_record_that_a_sync_covered_is_damage_not_a_torn_tail() {
    let fs = MemFs::default();
    let entries = written(10, 3);
    let (log, _) = open(&fs, 1 << 20, 0).unwrap();
    append_all(&log, &entries);
    drop(log);
    let name = segment_name(1);
    fs.flip_byte(&name, fs.written_len(&name) - 1);
    assert!(is_corrupt(&open(&fs, 1 << 20, 0)));
}

#[test]
fn a_log_cut_short_before_what_a_sync_covered_is_damage() {
    let fs = MemFs::default();
    let entries = written(10, 3);
    let (log, _) = open(&fs, 1 << 20, 0).unwrap();
    append_all(&log, &entries[..6]);
    let sixth_end = fs.written_len(&segment_name(1));
    append_all(&log, &entries[6..]);
    drop(log);
    // Cut at a record boundary: what is left reads as a whole log that ends at LSN 6.
    fs.truncate(&segment_name(1), sixth_end);
    let reason = corrupt_reason(open(&fs, 1 << 20, 0));
    assert!(
        reason.contains("ends at LSN 6 but was synced up to LSN 10"),
        "{reason}"
    );
}

#[test]
fn a_log_whose_only_segment_is_gone_after_synced_entries_is_damage() {
    let fs = MemFs::default();
    let (log, _) = open(&fs, 1 << 20, 0).unwrap();
    append_all(&log, &written(4, 3));
    drop(log);
    fs.remove(&segment_name(1)).unwrap();
    let reason = corrupt_reason(open(&fs, 1 << 20, 0));
    assert!(reason.contains("synced up to LSN 4"), "{reason}");
    // Where the tables applied all of it, nothing is missing: the log starts anew.
    assert!(open(&fs, 1 << 20, 4).is_ok());
}

#[test]
fn a_torn_last_record_leaves_the_one_before_it_last() {
    let fs = MemFs::default();
    let entries = written(10, 5);
    let (log, _) = open(&fs, 1 << 20, 0).unwrap();
    append_all_but_last_synced(&log, &entries);
    let ninth = read_id(&log, 9);
    drop(log);
    let name = segment_name(1);
    fs.flip_byte(&name, fs.written_len(&name) - 1);
    let (log, _) = open(&fs, 1 << 20, 0).unwrap();
    assert_eq!(log.last_entry_id(10), None);
    assert_eq!(log.last_entry_id(9), Some(ninth));
}
