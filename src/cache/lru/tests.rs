use proptest::prelude::*;

use super::*;

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn lru(capacity: usize, max_bytes: Option<usize>) -> VersionedLru {
    VersionedLru::new(
        Bounds {
            capacity,
            max_bytes,
            tombstones: 1024,
        },
        OnWrite::Drop,
    )
}

fn at(lsn: u64) -> Version {
    Version { epoch: 1, lsn }
}

#[test]
fn the_least_recently_used_entry_goes_first() {
    let mut cache = lru(2, None);
    cache.fill(bytes("a"), bytes("1"), at(1), None, 0);
    cache.fill(bytes("b"), bytes("2"), at(1), None, 0);
    assert!(cache.get(b"a", 0).is_some());
    cache.fill(bytes("c"), bytes("3"), at(1), None, 0);
    assert!(
        cache.get(b"b", 0).is_none(),
        "b was the least recently used"
    );
    assert!(cache.get(b"a", 0).is_some());
    assert!(cache.get(b"c", 0).is_some());
    assert_eq!(cache.counters().evictions, 1);
}

#[test]
fn an_entry_expires_once_the_clock_passes_its_deadline_never_before() {
    let mut cache = lru(8, None);
    cache.fill(bytes("a"), bytes("1"), at(1), Some(100), 1_000);
    assert_eq!(cache.ttl_left(b"a", 1_050), Some(Some(50)));
    // The clock counts whole milliseconds, rounded down: at 1_100 the fill (made at any
    // instant within 1_000) may not be 100 ms old yet.
    assert!(cache.get(b"a", 1_100).is_some());
    assert!(cache.get(b"a", 1_101).is_none());
    assert_eq!(cache.counters().expirations, 1);
    assert_eq!(cache.len(), 0);
    assert_eq!(cache.bytes(), 0);
}

#[test]
fn expire_sets_and_clears_a_ttl() {
    let mut cache = lru(8, None);
    assert!(cache
        .set(bytes("a"), bytes("1"), None, SetIf::Always, 0)
        .unwrap());
    assert_eq!(cache.ttl_left(b"a", 0), Some(None));
    assert!(cache.expire(b"a", Some(10), 0));
    assert_eq!(cache.ttl_left(b"a", 5), Some(Some(5)));
    assert!(cache.expire(b"a", None, 5));
    assert_eq!(cache.ttl_left(b"a", 1_000_000), Some(None));
    assert!(!cache.expire(b"missing", Some(1), 0));
}

#[test]
fn a_fill_older_than_a_write_it_never_saw_is_refused() {
    let mut cache = lru(8, None);
    cache.written(&bytes("k"), None, at(10), 0);
    assert_eq!(
        cache.fill(bytes("k"), bytes("old"), at(9), None, 0),
        Fill::Stale
    );
    assert_eq!(
        cache.fill(bytes("k"), bytes("new"), at(10), None, 0),
        Fill::Stored
    );
    assert_eq!(cache.counters().stale_fills_refused, 1);
}

#[test]
fn a_fill_never_replaces_a_newer_value() {
    let mut cache = lru(8, None);
    cache.fill(bytes("k"), bytes("v20"), at(20), None, 0);
    assert_eq!(
        cache.fill(bytes("k"), bytes("v15"), at(15), None, 0),
        Fill::Stale
    );
    assert_eq!(cache.get(b"k", 0).unwrap().0, &bytes("v20"));
}

#[test]
fn a_plain_set_never_blocks_a_later_write_or_fill() {
    let mut cache = lru(8, None);
    cache
        .set(bytes("k"), bytes("by hand"), None, SetIf::Always, 0)
        .unwrap();
    cache.written(&bytes("k"), None, at(3), 0);
    assert!(cache.get(b"k", 0).is_none(), "the log's write dropped it");
    cache
        .set(bytes("k"), bytes("by hand"), None, SetIf::Always, 0)
        .unwrap();
    assert_eq!(
        cache.fill(bytes("k"), bytes("v"), at(3), None, 0),
        Fill::Stored
    );
}

#[test]
fn refresh_mode_stores_the_written_value_and_a_delete_drops() {
    let mut cache: VersionedLru = VersionedLru::new(
        Bounds {
            capacity: 8,
            max_bytes: None,
            tombstones: 8,
        },
        OnWrite::Refresh,
    );
    cache.fill(bytes("k"), bytes("v1"), at(1), None, 0);
    cache.written(&bytes("k"), Some(bytes("v2")), at(2), 0);
    assert_eq!(cache.get(b"k", 0), Some((&bytes("v2"), at(2))));
    cache.written(&bytes("k"), None, at(3), 0);
    assert!(cache.get(b"k", 0).is_none());
    // One entry that writes a key twice (put_many of one key twice, a put then a delete in
    // a transaction) ends at its last op.
    cache.fill(bytes("k"), bytes("v3"), at(3), None, 0);
    cache.written(&bytes("k"), Some(bytes("first")), at(4), 0);
    cache.written(&bytes("k"), Some(bytes("last")), at(4), 0);
    assert_eq!(cache.get(b"k", 0), Some((&bytes("last"), at(4))));
    cache.written(&bytes("k"), Some(bytes("put")), at(5), 0);
    cache.written(&bytes("k"), None, at(5), 0);
    assert!(cache.get(b"k", 0).is_none());
    // A key not held is not filled by a write: only remembered.
    cache.written(&bytes("other"), Some(bytes("x")), at(4), 0);
    assert!(cache.get(b"other", 0).is_none());
    assert_eq!(
        cache.fill(bytes("other"), bytes("x"), at(3), None, 0),
        Fill::Stale
    );
}

#[test]
fn flush_drops_everything_and_refuses_fills_from_before_it() {
    let mut cache = lru(8, None);
    cache.fill(bytes("k"), bytes("v"), at(5), None, 0);
    cache.flush(7);
    assert!(cache.is_empty());
    assert_eq!(
        cache.fill(bytes("k"), bytes("v"), at(6), None, 0),
        Fill::Stale
    );
    assert_eq!(
        cache.fill(bytes("k"), bytes("v"), at(7), None, 0),
        Fill::Stored
    );
}

#[test]
fn a_fill_from_an_older_epoch_than_the_node_has_seen_is_refused() {
    let mut cache = lru(8, None);
    cache.processed_through(Version { epoch: 2, lsn: 10 });
    let old = Version { epoch: 1, lsn: 12 };
    assert_eq!(
        cache.fill(bytes("k"), bytes("v"), old, None, 0),
        Fill::Stale
    );
}

/// A version of epoch `epoch` at `lsn`.
fn of(epoch: u64, lsn: u64) -> Version {
    Version { epoch, lsn }
}

#[test]
fn a_write_of_a_later_epoch_drops_a_value_of_the_lost_history_at_a_higher_lsn() {
    let mut cache = lru(8, None);
    cache.processed_through(of(1, 1));
    // Read through the old primary ahead of the node; that primary failed over before its
    // replica got the write, and the new primary wrote LSN 2 again, in epoch 2.
    cache.fill(bytes("k"), bytes("v2-lost"), of(1, 2), None, 0);
    cache.written(&bytes("k"), None, of(2, 2), 0);
    assert!(cache.get(b"k", 0).is_none());
}

#[test]
fn a_fill_of_a_later_epoch_replaces_a_value_of_an_older_one_at_a_higher_lsn() {
    let mut cache = lru(8, None);
    cache.fill(bytes("k"), bytes("v5-lost"), of(1, 5), None, 0);
    assert_eq!(
        cache.fill(bytes("k"), bytes("v3"), of(2, 3), None, 0),
        Fill::Stored
    );
    assert_eq!(cache.get(b"k", 0).unwrap().0, &bytes("v3"));
    assert_eq!(
        cache.fill(bytes("k"), bytes("v5-lost"), of(1, 5), None, 0),
        Fill::Stale
    );
}

#[test]
fn a_new_epoch_drops_older_values_read_at_or_after_its_start_only() {
    let mut cache = lru(8, None);
    cache.fill(bytes("shared"), bytes("v"), of(1, 1), None, 0);
    cache.fill(bytes("lost"), bytes("v"), of(1, 2), None, 0);
    cache.fill(bytes("later-lost"), bytes("v"), of(1, 9), None, 0);
    cache.fill(bytes("new"), bytes("v"), of(2, 3), None, 0);
    cache
        .set(bytes("by-hand"), bytes("v"), None, SetIf::Always, 0)
        .unwrap();
    assert_eq!(cache.epoch_begins(of(2, 2)), 2);
    assert!(cache.get(b"lost", 0).is_none());
    assert!(cache.get(b"later-lost", 0).is_none());
    assert!(cache.get(b"shared", 0).is_some(), "read before the fork");
    assert!(cache.get(b"new", 0).is_some(), "of the new history");
    assert!(cache.get(b"by-hand", 0).is_some(), "unversioned");
    assert_eq!(cache.counters().invalidations, 2);
}

#[test]
fn a_new_epoch_refuses_fills_of_an_older_one_from_its_start_until_a_new_history() {
    let mut cache = lru(8, None);
    cache.processed_through(of(1, 1));
    // A new primary's welcome: its log ends at LSN 2, before any entry of its epoch.
    cache.epoch_begins(of(2, 3));
    assert_eq!(cache.processed(), of(1, 1), "nothing applied");
    let fill = |cache: &mut VersionedLru, key: &str, at: Version| {
        cache.fill(bytes(key), bytes("v"), at, None, 0)
    };
    assert_eq!(fill(&mut cache, "lost", of(1, 3)), Fill::Stale);
    assert_eq!(fill(&mut cache, "shared", of(1, 2)), Fill::Stored);
    assert_eq!(fill(&mut cache, "new", of(2, 3)), Fill::Stored);
    // The first entry of epoch 2, at LSN 2, moves the start back; an older epoch learned
    // later moves nothing.
    cache.epoch_begins(of(2, 2));
    cache.epoch_begins(of(1, 1));
    assert_eq!(fill(&mut cache, "lost-too", of(1, 2)), Fill::Stale);
    // Another history (a fork) knows nothing of this one's epochs.
    cache.restart(of(1, 1));
    assert_eq!(fill(&mut cache, "lost", of(1, 3)), Fill::Stored);
}

#[test]
fn a_value_larger_than_the_byte_bound_is_refused_whole() {
    let mut cache = lru(8, Some(200));
    let big = Bytes::from(vec![0u8; 200]);
    assert_eq!(cache.fill(bytes("k"), big, at(1), None, 0), Fill::TooLarge);
    assert!(cache.is_empty());
}

#[test]
fn remove_prefix_drops_only_matching_keys() {
    let mut cache = lru(8, None);
    for key in ["t:s:a", "t:s:b", "u:s:a"] {
        cache.fill(bytes(key), bytes("v"), at(1), None, 0);
    }
    assert_eq!(cache.remove_prefix(b"t:"), 2);
    assert_eq!(cache.len(), 1);
}

#[derive(Debug, Clone)]
enum Step {
    Fill(u8, usize, u64),
    Set(u8, usize),
    Get(u8),
    Written(u8),
    Remove(u8),
    Tick(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..32, 0usize..300, 0u64..50).prop_map(|(k, n, lsn)| Step::Fill(k, n, lsn)),
        (0u8..32, 0usize..300).prop_map(|(k, n)| Step::Set(k, n)),
        (0u8..32).prop_map(Step::Get),
        (0u8..32).prop_map(Step::Written),
        (0u8..32).prop_map(Step::Remove),
        (0u64..100).prop_map(Step::Tick),
    ]
}

proptest! {
    /// Against a model: neither bound is ever exceeded, the byte count is exact, and a
    /// read never returns a value filled from a snapshot older than a write of its key.
    #[test]
    fn bounds_hold_and_no_read_returns_a_value_older_than_a_known_write(
        steps in proptest::collection::vec(step(), 1..200),
        capacity in 1usize..12,
        max_bytes in 150usize..2000,
    ) {
        let mut cache: VersionedLru = VersionedLru::new(
            Bounds { capacity, max_bytes: Some(max_bytes), tombstones: 4 },
            OnWrite::Drop,
        );
        let mut now = 0u64;
        let mut lsn = 0u64;
        let mut last_write = std::collections::HashMap::<u8, u64>::new();
        for step in steps {
            match step {
                Step::Fill(k, n, back) => {
                    let version = at(lsn.saturating_sub(back));
                    cache.fill(Bytes::from(vec![k]), Bytes::from(vec![1; n]), version, Some(50), now);
                }
                Step::Set(k, n) => {
                    let ttl = (n % 3 == 0).then_some(40);
                    let _ = cache.set(Bytes::from(vec![k]), Bytes::from(vec![2; n]), ttl, SetIf::Always, now);
                    if n % 5 == 0 {
                        cache.expire(&[k], (n % 2 == 0).then_some(10), now);
                    }
                }
                Step::Get(k) => {
                    if let Some((_, version)) = cache.get(&[k], now) {
                        if version != Version::default() {
                            prop_assert!(version.lsn >= last_write.get(&k).copied().unwrap_or(0));
                        }
                    }
                }
                Step::Written(k) => {
                    lsn += 1;
                    last_write.insert(k, lsn);
                    cache.written(&Bytes::from(vec![k]), None, at(lsn), now);
                }
                Step::Remove(k) => { cache.remove(&[k]); }
                Step::Tick(ms) => now += ms,
            }
            prop_assert!(cache.len() <= capacity);
            prop_assert!(cache.bytes() <= max_bytes);
            let counted: usize = cache.entries.iter().map(|(k, c)| footprint(k, &c.value)).sum();
            prop_assert_eq!(counted, cache.bytes());
            let expiring = cache.entries.iter().filter(|(_, c)| c.expires_at_ms.is_some()).count();
            prop_assert_eq!(expiring, cache.expiring);
        }
    }
}
