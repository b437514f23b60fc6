//! A store whose log runs out of room (over an in-memory log with a size limit): writes are
//! refused with nothing written, the store stays open, and once there is room again the
//! next write takes the next LSN, with every acknowledged write read back after a reopen.

use std::collections::BTreeSet;

use super::*;
use crate::codec::{encode_key, KeyRef, Op};
use crate::error::Error;
use crate::log::memfs::MemFs;

fn put(key: &str) -> Vec<Op> {
    vec![Op {
        table: "t".to_owned(),
        key: encode_key(KeyRef::Str(key)),
        value: Some(vec![0xc3; 40]),
    }]
}

fn has(store: &Store, key: &str) -> bool {
    store
        .get_with("t", &encode_key(KeyRef::Str(key)), |v| v.is_some())
        .unwrap()
}

fn options() -> StoreOptions {
    StoreOptions {
        segment_bytes: 16 << 10,
        ..StoreOptions::default()
    }
}

fn open(dir: &std::path::Path, fs: &MemFs) -> Store {
    let log_fs = fs.clone();
    Store::open_with(&dir.join("db"), options(), |_| Ok(Box::new(log_fs))).unwrap()
}

/// A primary's store with `count` puts committed, `k0` to `k{count - 1}`.
fn primary_with(dir: &std::path::Path, count: usize) -> Store {
    let primary = Store::open(dir.join("primary"), options()).unwrap();
    for i in 0..count {
        primary.commit(put(&format!("k{i}")), None).unwrap();
    }
    primary
}

/// Every entry of `primary`'s log, as it ships them.
fn shipped(primary: &Store) -> Vec<Vec<u8>> {
    let mut position = crate::log::LogPosition::after(0);
    let entries = primary
        .read_log_raw(&mut position, usize::MAX, usize::MAX)
        .unwrap();
    entries.into_iter().map(|e| e.payload).collect()
}

/// A follower's store at `path`, its log on `fs`.
fn follower_on(path: &std::path::Path, fs: &MemFs, fsync: bool) -> Store {
    let log_fs = fs.clone();
    let options = StoreOptions {
        follower: true,
        fsync,
        ..options()
    };
    Store::open_with(path, options, |_| Ok(Box::new(log_fs))).unwrap()
}

/// Appends `payloads` from `at` on, ten at a time, calling `after` with the count appended
/// after each call that went in, until the follower refuses one: returns the count then and
/// the refusal.
fn append_until_refused(
    follower: &Store,
    payloads: &[Vec<u8>],
    mut at: usize,
    mut after: impl FnMut(usize),
) -> (usize, Error) {
    loop {
        let chunk = &payloads[at..(at + 10).min(payloads.len())];
        assert!(
            !chunk.is_empty(),
            "the follower's log never ran out of room"
        );
        match follower.append_replicated(chunk) {
            Ok(_) => at += chunk.len(),
            Err(err) => return (at, err),
        }
        after(at);
    }
}

/// Sets its flag when dropped, however the scope it lives in ends.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

fn assert_no_room(err: &Error) {
    match err {
        Error::Store(StoreError::NotWritten { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{err}");
        }
        other => panic!("expected a write refused for want of room, got {other:?}"),
    }
}

#[test]
fn a_write_the_log_has_no_room_for_is_refused_and_the_store_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MemFs::default();
    let store = open(dir.path(), &fs);
    fs.leave_room(40 << 10);
    let mut stored = 0;
    let refused = loop {
        match store.commit(put(&format!("k{stored}")), None) {
            Ok(receipt) => {
                stored += 1;
                assert_eq!(receipt.lsn, stored);
            }
            Err(err) => break err,
        }
        assert!(stored < 100_000, "the log never ran out of room");
    };
    assert_no_room(&refused);
    assert!(!store.is_closed());
    assert_eq!(store.last_lsn(), stored);
    assert!(has(&store, "k0"));
    assert!(
        !has(&store, &format!("k{stored}")),
        "the refused write is not there"
    );
    // Refused again while there is no room, then taken with the next LSN once there is.
    assert_no_room(&store.commit(put("again"), None).unwrap_err());
    fs.limit_space(None);
    let receipt = store.commit(put(&format!("k{stored}")), None).unwrap();
    assert_eq!(receipt.lsn, stored + 1);
    store.close().unwrap();
    let reopened = open(dir.path(), &fs.restart_image());
    assert_eq!(reopened.last_lsn(), stored + 1);
    assert!((0..=stored).all(|i| has(&reopened, &format!("k{i}"))));
    assert!(!has(&reopened, "again"));
}

/// Many writers run out of room together: batches are given back, LSNs are taken again,
/// and no writer ever takes another's entry for its own.
#[test]
fn concurrent_writers_refused_for_want_of_room_never_share_an_lsn() {
    const WRITERS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let fs = MemFs::default();
    let store = open(dir.path(), &fs);
    fs.leave_room(40 << 10);
    let run = |phase: &str, refusals: usize| {
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let store = &store;
                    scope.spawn(move || {
                        let (mut taken, mut refused) = (Vec::new(), Vec::new());
                        for i in 0.. {
                            let key = format!("{phase}-{w}-{i}");
                            match store.commit(put(&key), None) {
                                Ok(receipt) => taken.push((receipt.lsn, key)),
                                Err(err) => {
                                    assert_no_room(&err);
                                    refused.push(key);
                                }
                            }
                            if refused.len() == refusals || (refusals == 0 && i == 50) {
                                break;
                            }
                        }
                        (taken, refused)
                    })
                })
                .collect();
            writers.into_iter().map(|w| w.join().unwrap()).fold(
                (Vec::new(), Vec::new()),
                |(mut t, mut r), (t2, r2)| {
                    t.extend(t2);
                    r.extend(r2);
                    (t, r)
                },
            )
        })
    };
    let (mut taken, refused) = run("full", 3);
    assert!(!store.is_closed());
    fs.limit_space(None);
    let (after, none) = run("room", 0);
    assert!(none.is_empty());
    taken.extend(after);
    let lsns: BTreeSet<u64> = taken.iter().map(|(lsn, _)| *lsn).collect();
    assert_eq!(lsns.len(), taken.len(), "two writes were told the same LSN");
    assert_eq!(lsns, (1..=store.last_lsn()).collect(), "LSNs stay dense");
    store.close().unwrap();
    let reopened = open(dir.path(), &fs.restart_image());
    assert!(taken.iter().all(|(_, key)| has(&reopened, key)));
    assert!(refused.iter().all(|key| !has(&reopened, key)));
}

/// A follower whose log has no room for its primary's entries is refused with nothing
/// written and stays open (readable, its LSNs where they were), whether it fsyncs or not,
/// and whether it holds entries back; once there is room, the same entries go in with
/// their primary's LSNs, and a promotion takes local writes after them.
#[test]
fn a_follower_with_no_room_in_its_log_is_refused_and_takes_the_same_entries_later() {
    let dir = tempfile::tempdir().unwrap();
    let primary = primary_with(dir.path(), 2000);
    let payloads = shipped(&primary);
    for (fsync, holding) in [(true, false), (false, false), (true, true)] {
        let case = format!("fsync={fsync} holding={holding}");
        let fs = MemFs::default();
        let path = dir.path().join(format!("follower-{fsync}-{holding}"));
        let follower = follower_on(&path, &fs, fsync);
        if holding {
            follower.hold_back().unwrap();
        }
        fs.leave_room(40 << 10);
        let (appended, refused) = append_until_refused(&follower, &payloads, 0, |appended| {
            if holding {
                // Confirmed a chunk behind: some held entries wait when the room runs out.
                follower
                    .release_replicated(appended.saturating_sub(10) as u64)
                    .unwrap();
            }
        });
        assert_no_room(&refused);
        assert!(!follower.is_closed(), "{case}: {refused}");
        assert_eq!(
            follower.sync_replicated().unwrap(),
            appended as u64,
            "{case}"
        );
        // Refused again while there is no room; a write anywhere in the chunk is not
        // claimed, and what was appended is still read.
        assert_no_room(
            &follower
                .append_replicated(&payloads[appended..appended + 10])
                .unwrap_err(),
        );
        assert!(has(&follower, "k0"), "{case}");
        fs.limit_space(None);
        assert_eq!(
            follower.append_replicated(&payloads[appended..]).unwrap(),
            if holding {
                appended.saturating_sub(10) as u64
            } else {
                2000
            },
            "{case}"
        );
        assert_eq!(
            follower.release_replicated(u64::MAX).unwrap(),
            2000,
            "{case}"
        );
        assert_eq!(follower.sync_replicated().unwrap(), 2000, "{case}");
        assert_eq!(
            follower.checksum().unwrap(),
            primary.checksum().unwrap(),
            "{case}"
        );
        follower.stop_following().unwrap();
        let receipt = follower.commit(put("after"), None).unwrap();
        assert_eq!(
            receipt.lsn, 2001,
            "{case}: the promoted store goes on from its primary's"
        );
        follower.close().unwrap();
        let reopened =
            Store::open_with(&path, options(), |_| Ok(Box::new(fs.restart_image()))).unwrap();
        assert_eq!(reopened.last_lsn(), 2001, "{case}");
        assert!(
            (0..2000).all(|i| has(&reopened, &format!("k{i}"))),
            "{case}"
        );
    }
}

/// A replica catching up is handed its backlog in batches of up to 32 MiB, each appended
/// in one call. The log takes a write of 1 MiB or more as one large write, which needs its
/// size twice above the tables' floor, and each new link sends the same batch again: a
/// follower whose log has room for the entries (as its primary's small writes find it)
/// must still take them.
#[test]
fn a_follower_takes_a_backlog_its_log_has_room_for_even_if_not_twice() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Store::open(dir.path().join("primary"), options()).unwrap();
    let value = vec![0x5a; 2000];
    for i in 0..3000 {
        let ops = vec![Op {
            table: "t".to_owned(),
            key: encode_key(KeyRef::Str(&format!("k{i}"))),
            value: Some(value.clone()),
        }];
        primary.commit(ops, None).unwrap();
    }
    let payloads = shipped(&primary);
    let backlog = payloads.iter().map(Vec::len).sum::<usize>() as u64;
    let fs = MemFs::default();
    let follower = follower_on(&dir.path().join("follower"), &fs, true);
    // A quarter of the disk is kept for the tables; above it, room for the backlog and half
    // of it again (not twice).
    let size = (fs.used() + backlog * 3 / 2) * 4 / 3;
    fs.limit_space(Some(size));
    let appended = follower.append_replicated(&payloads);
    assert!(
        appended.is_ok(),
        "a backlog of {backlog} bytes with {} bytes of room above the tables' floor: {appended:?}",
        size - fs.used() - size / 4
    );
    assert_eq!(follower.sync_replicated().unwrap(), 3000);
    assert_eq!(follower.checksum().unwrap(), primary.checksum().unwrap());
}

/// Stress: the follow thread appends, a sync thread syncs beside it (as the replica's
/// session does), and the room comes and goes; every refusal resumes from the log's end.
#[test]
#[allow(clippy::too_many_lines)] // one scenario, four cases
fn a_follower_appending_beside_a_sync_while_room_comes_and_goes_keeps_its_log_dense() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let primary = Store::open(dir.path().join("primary"), options()).unwrap();
    for i in 0..3000 {
        if i % 400 == 399 {
            primary.begin_epoch(primary.epoch() + 1).unwrap();
        }
        primary.commit(put(&format!("k{i}")), None).unwrap();
    }
    let payloads = shipped(&primary);
    for (fsync, holding) in [(true, false), (false, false), (true, true), (false, true)] {
        let case = format!("fsync={fsync} holding={holding}");
        let fs = MemFs::default();
        let path = dir.path().join(format!("stress-{fsync}-{holding}"));
        let follower = follower_on(&path, &fs, fsync);
        if holding {
            follower.hold_back().unwrap();
        }
        let done = AtomicBool::new(false);
        let refusals = AtomicUsize::new(0);
        // No room from the start, until the follower's growing log has met it once (a
        // window that opened and closed by time alone could miss every growth in a fast
        // build); after that the room comes and goes.
        fs.leave_room(0);
        std::thread::scope(|scope| {
            // A failed assertion below must stop the two helper threads too: the scope
            // joins them before it passes the panic on, so the test would hang instead.
            let _stop = StopOnDrop(&done);
            let syncer = scope.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    follower.sync_replicated().unwrap();
                }
            });
            let toggler = scope.spawn(|| {
                while !done.load(Ordering::Acquire) && refusals.load(Ordering::Acquire) == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
                let mut i = 0u64;
                while !done.load(Ordering::Acquire) {
                    i += 1;
                    if i % 2 == 1 {
                        fs.leave_room((i % 7) * 2000);
                    } else {
                        fs.limit_space(None);
                    }
                    std::thread::sleep(std::time::Duration::from_micros(300 + (i % 5) * 200));
                }
                fs.limit_space(None);
            });
            let mut appended = 0usize;
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while appended < payloads.len() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{case}: stuck at {appended}"
                );
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let n = 1 + (rng % 30) as usize;
                let chunk = &payloads[appended..(appended + n).min(payloads.len())];
                match follower.append_replicated(chunk) {
                    Ok(_) => {
                        appended += chunk.len();
                        assert!(
                            follower.inner.pipeline.last_assigned() >= appended as u64,
                            "{case}"
                        );
                    }
                    Err(err) => {
                        assert_no_room(&err);
                        refusals.fetch_add(1, Ordering::AcqRel);
                        // The next link resumes from the log's end.
                        let flushed = follower.sync_replicated().unwrap() as usize;
                        assert_eq!(follower.written_lsn(), flushed as u64, "{case}");
                        assert_eq!(
                            follower.inner.pipeline.last_assigned(),
                            flushed as u64,
                            "{case}"
                        );
                        assert!(follower.readable_lsn() <= flushed as u64, "{case}");
                        assert!(flushed <= appended + chunk.len(), "{case}");
                        assert!(flushed >= appended, "{case}: {flushed} < {appended}");
                        if holding {
                            follower.hold_back().unwrap();
                        }
                        appended = flushed;
                    }
                }
                if holding {
                    follower
                        .release_replicated(appended.saturating_sub(15) as u64)
                        .unwrap();
                }
            }
            done.store(true, Ordering::Release);
            syncer.join().unwrap();
            toggler.join().unwrap();
        });
        assert!(refusals.into_inner() > 0, "{case}: never refused");
        assert!(!follower.is_closed(), "{case}");
        follower.release_replicated(u64::MAX).unwrap();
        assert_eq!(follower.sync_replicated().unwrap(), 3000, "{case}");
        assert_eq!(
            follower.checksum().unwrap(),
            primary.checksum().unwrap(),
            "{case}"
        );
        assert_eq!(
            follower.epoch_history().pairs(),
            primary.epoch_history().pairs(),
            "{case}"
        );
        follower.stop_following().unwrap();
        assert_eq!(
            follower.commit(put("after"), None).unwrap().lsn,
            3001,
            "{case}"
        );
        follower.close().unwrap();
    }
}

/// A refused batch that also released held entries puts them back, and a promotion right
/// after (still no room) shows everything the log holds and writes after it.
#[test]
fn a_refused_batch_that_released_held_entries_puts_them_back_and_a_promotion_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let primary = primary_with(dir.path(), 400);
    let payloads = shipped(&primary);
    for fsync in [true, false] {
        let fs = MemFs::default();
        let path = dir.path().join(format!("f-{fsync}"));
        let follower = follower_on(&path, &fs, fsync);
        follower.hold_back().unwrap();
        follower.append_replicated(&payloads[..10]).unwrap();
        assert_eq!(follower.readable_lsn(), 0);
        fs.leave_room(0);
        let (at, refused) = append_until_refused(&follower, &payloads, 10, |_| {});
        assert_no_room(&refused);
        // Released but not applied yet: the next flush applies them with its records.
        assert!(follower.inner.pipeline.release(at as u64 - 3));
        assert_no_room(
            &follower
                .append_replicated(&payloads[at..at + 10])
                .unwrap_err(),
        );
        assert_eq!(follower.readable_lsn(), 0, "fsync={fsync}");
        assert_eq!(
            follower.sync_replicated().unwrap(),
            at as u64,
            "fsync={fsync}"
        );
        assert_eq!(follower.written_lsn(), at as u64, "fsync={fsync}");
        follower.stop_following().unwrap();
        assert_eq!(follower.readable_lsn(), at as u64, "fsync={fsync}");
        assert_eq!(follower.last_lsn(), at as u64, "fsync={fsync}");
        fs.limit_space(None);
        assert_eq!(
            follower.commit(put("after"), None).unwrap().lsn,
            at as u64 + 1
        );
        follower.close().unwrap();
    }
}

/// A holding follower refused for want of room, closed and reopened as a follower, goes on
/// from its log's end.
#[test]
fn a_holding_follower_refused_then_reopened_goes_on_from_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let primary = primary_with(dir.path(), 400);
    let payloads = shipped(&primary);
    for fsync in [true, false] {
        let fs = MemFs::default();
        let path = dir.path().join(format!("f-{fsync}"));
        let follower = follower_on(&path, &fs, fsync);
        follower.hold_back().unwrap();
        follower.expect_unconfirmed().unwrap();
        fs.leave_room(20 << 10);
        let (at, refused) = append_until_refused(&follower, &payloads, 0, |at| {
            follower.release_replicated(at as u64 - 5).unwrap();
        });
        assert_no_room(&refused);
        follower.sync_replicated().unwrap();
        follower.close().unwrap();
        fs.limit_space(None);
        let reopened = follower_on(&path, &fs.restart_image(), fsync);
        let resume = reopened.sync_replicated().unwrap() as usize;
        assert!(resume <= at, "fsync={fsync}");
        reopened.hold_back().unwrap();
        reopened.append_replicated(&payloads[resume..]).unwrap();
        reopened.release_replicated(u64::MAX).unwrap();
        assert_eq!(reopened.sync_replicated().unwrap(), 400);
        assert_eq!(reopened.checksum().unwrap(), primary.checksum().unwrap());
        reopened.close().unwrap();
    }
}
