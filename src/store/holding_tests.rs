//! A follower that holds back: entries past what its primary confirmed are in its log,
//! durable and acknowledged, but not shown to readers (nor to its log's readers) until
//! released; a reopen holds back its last entries again; a cut drops only held entries;
//! a promotion shows them all.

use super::follow_tests::{entries_named as entries, put};
use super::recover_tests::crash_image;
use super::{Store, StoreOptions, MAX_HELD_ENTRIES};
use crate::codec::{encode_key, KeyRef};
use crate::follow::LogConsumer;
use crate::log::LogPosition;

fn follower(dir: &std::path::Path) -> Store {
    let options = StoreOptions {
        follower: true,
        ..StoreOptions::default()
    };
    Store::open(dir.join("follower"), options).unwrap()
}

fn has(store: &Store, key: &str) -> bool {
    store.contains("t", &encode_key(KeyRef::Str(key))).unwrap()
}

#[test]
fn held_entries_are_durable_but_shown_only_once_released() {
    let dir = tempfile::tempdir().unwrap();
    let payloads = entries(&dir.path().join("primary"), "k", 10);
    let store = follower(dir.path());
    store.append_replicated(&payloads[..4]).unwrap();
    store.hold_back().unwrap();
    assert_eq!(store.append_replicated(&payloads[4..]).unwrap(), 4);
    assert_eq!(store.sync_replicated().unwrap(), 10, "acked as durable");
    assert_eq!(store.synced_lsn(), 10);
    assert!(has(&store, "k3") && !has(&store, "k4"));
    assert_eq!(
        store.last_lsn(),
        4,
        "the log's readers stop where readers do"
    );
    let mut position = LogPosition::after(0);
    assert_eq!(
        store
            .read_log_raw(&mut position, 100, usize::MAX)
            .unwrap()
            .len(),
        4
    );
    assert_eq!(store.release_replicated(7).unwrap(), 7);
    assert!(has(&store, "k6") && !has(&store, "k7"));
    assert_eq!(store.last_lsn(), 7);
    assert_eq!(store.release_replicated(u64::MAX).unwrap(), 10);
    assert!(has(&store, "k9"));
    assert_eq!(store.last_lsn(), 10);
    // Released before they arrive: shown as they are appended.
    let more = entries(&dir.path().join("primary-2"), "k", 12);
    store.append_replicated(&more[10..]).unwrap();
    assert!(has(&store, "k11"));
}

/// A follower that checkpoints only when it closes: its entries are in its log alone.
fn unchecked_follower_options() -> StoreOptions {
    StoreOptions {
        follower: true,
        checkpoint_entries: u64::MAX,
        checkpoint_interval: std::time::Duration::from_secs(3600),
        ..StoreOptions::default()
    }
}

/// A follower in `dir` that holds back and is told entries not confirmed are coming, and
/// more entries for it than a crash holds back.
fn shipped_ahead(dir: &std::path::Path) -> (Store, Vec<Vec<u8>>) {
    let payloads = entries(&dir.join("primary"), "k", MAX_HELD_ENTRIES as usize + 10);
    let store = Store::open(dir.join("follower"), unchecked_follower_options()).unwrap();
    store.hold_back().unwrap();
    store.expect_unconfirmed().unwrap();
    (store, payloads)
}

#[test]
fn a_follower_restarted_after_a_crash_holds_back_its_last_entries_until_released_again() {
    let dir = tempfile::tempdir().unwrap();
    let (store, payloads) = shipped_ahead(dir.path());
    let count = payloads.len();
    let options = unchecked_follower_options();
    store.append_replicated(&payloads).unwrap();
    store.release_replicated(u64::MAX).unwrap();
    store.sync_replicated().unwrap();
    let image = dir.path().join("crashed");
    crash_image(&dir.path().join("follower"), &image);
    let looked_at = dir.path().join("looked-at");
    crash_image(&dir.path().join("follower"), &looked_at);
    store.close().unwrap();
    // Opened plainly (to look at it, not to follow): everything its log holds durably.
    let plain = Store::open(&looked_at, StoreOptions::default()).unwrap();
    assert_eq!(plain.readable_lsn(), count as u64);
    plain.close().unwrap();
    let store = Store::open(&image, options).unwrap();
    assert_eq!(store.readable_lsn(), 10, "its last {MAX_HELD_ENTRIES} wait");
    assert_eq!(store.synced_lsn(), count as u64);
    assert!(has(&store, "k9") && !has(&store, "k10"));
    let ids = store.held_ids(10).unwrap();
    assert_eq!(ids.len(), MAX_HELD_ENTRIES as usize + 1);
    assert_eq!(ids.last().unwrap().0, count as u64);
    store.release_replicated(u64::MAX).unwrap();
    assert!(has(&store, &format!("k{}", count - 1)));
}

/// Entries confirmed before they reach the log (a primary that ships only what is durable
/// there) are never hidden again by a crash; the mark that entries shipped ahead left is
/// gone once a new connection finds everything shown.
#[test]
fn a_crash_hides_nothing_from_a_follower_sent_only_confirmed_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (store, payloads) = shipped_ahead(dir.path());
    let count = payloads.len();
    let options = unchecked_follower_options();
    // Shipped ahead by an earlier primary, then confirmed.
    store.append_replicated(&payloads[..5]).unwrap();
    store.release_replicated(5).unwrap();
    LogConsumer::position(&store).unwrap();
    // Each batch is released as it is appended, as a frame that confirms its own entries.
    for (index, batch) in payloads[5..].chunks(7).enumerate() {
        store.append_replicated(batch).unwrap();
        let last = (5 + (index + 1) * 7).min(count) as u64;
        assert_eq!(store.release_replicated(last).unwrap(), last);
    }
    store.sync_replicated().unwrap();
    let image = dir.path().join("crashed");
    crash_image(&dir.path().join("follower"), &image);
    store.close().unwrap();
    let store = Store::open(&image, options).unwrap();
    assert_eq!(store.readable_lsn(), count as u64, "nothing to hold back");
    assert!(has(&store, &format!("k{}", count - 1)));
}

#[test]
fn a_cut_drops_held_entries_only_and_the_log_goes_on_with_the_primarys() {
    let dir = tempfile::tempdir().unwrap();
    let lost = entries(&dir.path().join("primary"), "lost", 8);
    let kept = entries(&dir.path().join("primary-2"), "kept", 8);
    let store = follower(dir.path());
    store.hold_back().unwrap();
    store.append_replicated(&lost).unwrap();
    store.release_replicated(5).unwrap();
    assert!(store.cut_replicated(4).is_err(), "entry 5 was shown");
    store.cut_replicated(5).unwrap();
    assert_eq!(store.synced_lsn(), 5);
    // The primary's own entries 6.. (another history than the ones it lost).
    store.append_replicated(&kept[5..]).unwrap();
    store.release_replicated(8).unwrap();
    assert!(has(&store, "lost4") && !has(&store, "lost5") && has(&store, "kept5"));
    store.close().unwrap();
    let store = follower(dir.path());
    store.release_replicated(u64::MAX).unwrap();
    assert!(
        has(&store, "kept7") && !has(&store, "lost7"),
        "the cut is durable"
    );
}

#[test]
fn a_promotion_shows_what_was_held_back() {
    let dir = tempfile::tempdir().unwrap();
    let payloads = entries(&dir.path().join("primary"), "k", 6);
    let store = follower(dir.path());
    store.hold_back().unwrap();
    store.append_replicated(&payloads).unwrap();
    assert!(!has(&store, "k0"));
    store.stop_following().unwrap();
    assert!(has(&store, "k5"));
    store.commit(put("new"), None).unwrap();
    assert_eq!(store.last_lsn(), 7);
}
