use super::*;

#[test]
fn slots_survive_a_reload_and_only_move_forward_on_acks() {
    let dir = tempfile::tempdir().unwrap();
    let slots = Slots::load(dir.path()).unwrap();
    assert_eq!(slots.min_acked(), None);
    slots.ensure("eu-1", 5, true);
    let pin = slots.pin("us-1", 9, false);
    slots.advance("eu-1", 7);
    slots.advance("eu-1", 6);
    slots.advance("unknown", 100);
    assert_eq!(slots.min_acked(), Some(7));
    assert_eq!(slots.min_pinned(), Some(9), "pinned until its first ack");
    slots.persist().unwrap();
    let reloaded = Slots::load(dir.path()).unwrap();
    assert_eq!(reloaded.min_pinned(), None, "no pin survives a restart");
    let unpinned = |list: Vec<Slot>| -> Vec<Slot> {
        list.into_iter()
            .map(|slot| Slot {
                pinned: false,
                ..slot
            })
            .collect()
    };
    assert_eq!(reloaded.list(), unpinned(slots.list()));
    assert!(reloaded.drop_slot("eu-1").unwrap());
    assert!(!reloaded.drop_slot("eu-1").unwrap());
    let last = Slots::load(dir.path()).unwrap();
    assert_eq!(last.min_acked(), Some(9));
    slots.advance("us-1", 9);
    assert_eq!(slots.min_pinned(), None, "an ack unpins");
    drop(pin);
}

#[test]
fn a_pin_is_released_when_its_holder_ends_and_never_releases_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let slots = Slots::load(dir.path()).unwrap();
    let first = slots.pin("eu-1", 5, true);
    first.move_to(8);
    assert_eq!(slots.min_pinned(), Some(8));
    drop(first);
    assert_eq!(slots.min_pinned(), None, "dropping the pin unpins");
    let old = slots.pin("eu-1", 10, true);
    let new = slots.pin("eu-1", 12, true);
    old.move_to(3);
    drop(old);
    assert_eq!(
        slots.min_pinned(),
        Some(12),
        "an older connection's pin cannot unpin or move a newer one"
    );
    drop(new);
    assert_eq!(slots.min_pinned(), None);
}

#[test]
fn a_pin_held_until_an_lsn_keeps_the_log_the_replica_streams_after_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let slots = Slots::load(dir.path()).unwrap();
    let pin = slots.pin("eu-1", 0, true);
    pin.move_to(100); // the snapshot's LSN
    slots.advance("eu-1", 7);
    assert_eq!(
        slots.min_pinned(),
        Some(100),
        "an ack of what it held before, while it installs the snapshot, releases nothing"
    );
    pin.hold_until(140); // committed while its rows went out
    slots.advance("eu-1", 100);
    assert_eq!(
        slots.min_pinned(),
        Some(100),
        "the first ack leaves it pinned"
    );
    slots.advance("eu-1", 139);
    assert_eq!(slots.min_pinned(), Some(139), "pinned where it has acked");
    slots.advance("eu-1", 140);
    assert_eq!(slots.min_pinned(), None, "released once it acks that LSN");
    let again = slots.pin("eu-1", 140, true);
    slots.advance("eu-1", 141);
    assert_eq!(slots.min_pinned(), None, "a new pin starts without a hold");
    drop((pin, again));
}

#[test]
fn a_damaged_slot_file_is_corruption_not_an_empty_list() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE), b"\xc1\xc1 not msgpack").unwrap();
    let err = Slots::load(dir.path()).err().expect("refused");
    assert!(
        matches!(err, crate::Error::Store(StoreError::Corrupt { .. })),
        "{err}"
    );
}

fn two_slots(dir: &Path) {
    let slots = Slots::load(dir).unwrap();
    slots.ensure("eu-1", 1234, true);
    slots.ensure("us-west", 99, false);
    slots.persist().unwrap();
}

#[test]
fn every_single_byte_flip_of_the_slots_file_is_refused_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    two_slots(dir.path());
    let good = std::fs::read(dir.path().join(FILE)).unwrap();
    for at in 0..good.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[at] ^= flip;
            std::fs::write(dir.path().join(FILE), &bad).unwrap();
            match Slots::load(dir.path()) {
                Err(crate::Error::Store(StoreError::Corrupt { reason })) => {
                    assert!(reason.contains("replication slots file"), "{reason}");
                }
                Err(other) => panic!("flip {flip:#x} at {at}: not corruption: {other}"),
                Ok(slots) => panic!("flip {flip:#x} at {at} accepted: {:?}", slots.list()),
            }
        }
    }
    for len in 0..good.len() {
        std::fs::write(dir.path().join(FILE), &good[..len]).unwrap();
        assert!(
            Slots::load(dir.path()).is_err(),
            "truncated to {len} accepted"
        );
    }
}

#[test]
fn concurrent_persists_each_land_whole_and_the_last_state_wins() {
    let dir = tempfile::tempdir().unwrap();
    let slots = Slots::load(dir.path()).unwrap();
    std::thread::scope(|scope| {
        for thread in 0..8u64 {
            let slots = &slots;
            scope.spawn(move || {
                for step in 0..25 {
                    slots.ensure(&format!("r{thread}"), step, true);
                    slots.persist().unwrap();
                }
            });
        }
    });
    slots.persist().unwrap();
    let reloaded = Slots::load(dir.path()).unwrap();
    assert_eq!(reloaded.list(), slots.list());
    assert_eq!(reloaded.list().len(), 8);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn flags_absent_from_older_files_read_as_what_older_builds_did() {
    /// A record as builds before the `fsync` flag wrote it.
    #[derive(Serialize, Deserialize)]
    struct Older {
        name: String,
        acked_lsn: u64,
        created_ms: u64,
    }
    let older = vec![Older {
        name: "eu-1".into(),
        acked_lsn: 7,
        created_ms: 1,
    }];
    let read: Vec<Record> = rmp_serde::from_slice(&rmp_serde::to_vec(&older).unwrap()).unwrap();
    assert!(
        !read[0].fsync,
        "an older file says nothing: not counted until it reconnects"
    );
    assert!(
        !read[0].joining,
        "its primary counted every replica at once: so does a restart"
    );
}

#[test]
fn a_joining_slot_stays_joining_across_a_reload_until_it_settles() {
    let dir = tempfile::tempdir().unwrap();
    let slots = Slots::load(dir.path()).unwrap();
    slots.ensure("eu-1", 5, true);
    slots.ensure("ap-1", 5, true);
    slots.mark_joining("ap-1");
    slots.persist().unwrap();
    let joining = |slots: &Slots| -> Vec<String> {
        slots
            .list()
            .into_iter()
            .filter(|s| s.joining)
            .map(|s| s.name)
            .collect()
    };
    let reloaded = Slots::load(dir.path()).unwrap();
    assert_eq!(joining(&reloaded), ["ap-1"]);
    reloaded.settle("ap-1");
    reloaded.persist().unwrap();
    assert!(joining(&Slots::load(dir.path()).unwrap()).is_empty());
    // A version 2 file (no flag) still loads.
    let records = vec![Older2 {
        name: "eu-1".into(),
        acked_lsn: 3,
        created_ms: 1,
        fsync: true,
    }];
    std::fs::write(dir.path().join(FILE), framed(2, &records)).unwrap();
    let slots = Slots::load(dir.path()).unwrap().list();
    assert_eq!(
        (slots[0].acked_lsn, slots[0].fsync, slots[0].joining),
        (3, true, false)
    );
}

/// A slots file of format `version` whose body is `body`, checksummed.
fn framed(version: u8, body: &impl serde::Serialize) -> Vec<u8> {
    let body = rmp_serde::to_vec(body).unwrap();
    let mut file = MAGIC.to_vec();
    file.push(version);
    file.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    file.extend_from_slice(&body);
    let crc = crc32c::crc32c(&file);
    file.extend_from_slice(&crc.to_be_bytes());
    file
}

#[test]
fn the_store_that_holds_a_slot_is_kept_across_a_reload_and_unknown_in_older_files() {
    let dir = tempfile::tempdir().unwrap();
    let slots = Slots::load(dir.path()).unwrap();
    slots.ensure("eu-1", 5, true);
    slots.held_by("eu-1", 0xfeed);
    slots.held_by("eu-1", 0);
    slots.held_by("nobody", 7);
    slots.persist().unwrap();
    let ids = |slots: &Slots| -> Vec<(String, u64)> {
        slots
            .list()
            .into_iter()
            .map(|s| (s.name, s.store_id))
            .collect()
    };
    assert_eq!(
        ids(&Slots::load(dir.path()).unwrap()),
        [("eu-1".to_owned(), 0xfeed)]
    );
    // Another directory under the name takes the slot over.
    slots.held_by("eu-1", 0xbeef);
    slots.persist().unwrap();
    assert_eq!(
        ids(&Slots::load(dir.path()).unwrap()),
        [("eu-1".to_owned(), 0xbeef)]
    );
    // A version 3 file (no store id) still loads, with the id unknown.
    let older = (2_u64, vec![("eu-1", 3_u64, 1_u64, true, false)]);
    std::fs::write(dir.path().join(FILE), framed(3, &older)).unwrap();
    let slots = Slots::load(dir.path()).unwrap().list();
    assert_eq!(
        (slots[0].acked_lsn, slots[0].fsync, slots[0].store_id),
        (3, true, 0)
    );
}

/// A record as version 2 files hold it.
#[derive(Serialize, Deserialize)]
struct Older2 {
    name: String,
    acked_lsn: u64,
    created_ms: u64,
    fsync: bool,
}

#[test]
fn a_slots_file_of_the_first_format_loads_and_is_rewritten_with_a_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let first_format = vec![
        LegacyRecord {
            name: "eu-1".into(),
            acked_lsn: 70,
            created_ms: 1_700_000_000_000,
            pinned: true,
        },
        LegacyRecord {
            name: "us-1".into(),
            acked_lsn: 42,
            created_ms: 1_700_000_000_001,
            pinned: false,
        },
    ];
    std::fs::write(
        dir.path().join(FILE),
        rmp_serde::to_vec(&first_format).unwrap(),
    )
    .unwrap();
    let slots = Slots::load(dir.path()).unwrap();
    let listed: Vec<(String, u64)> = slots
        .list()
        .into_iter()
        .map(|s| (s.name, s.acked_lsn))
        .collect();
    assert_eq!(listed, [("eu-1".to_owned(), 70), ("us-1".to_owned(), 42)]);
    assert_eq!(slots.min_pinned(), None, "an old pin is not restored");
    assert!(
        slots.list().iter().all(|s| !s.fsync),
        "an old pin is not read as fsync"
    );
    let rewritten = std::fs::read(dir.path().join(FILE)).unwrap();
    assert!(rewritten.starts_with(MAGIC), "rewritten in the new format");
    assert_eq!(Slots::load(dir.path()).unwrap().list(), slots.list());
}

#[test]
fn a_lowered_quorum_makes_every_replica_that_fsyncs_join_again_durably() {
    let dir = tempfile::tempdir().unwrap();
    let slots = Slots::load(dir.path()).unwrap();
    let same = QuorumChange::Same;
    assert_eq!(
        slots.serve_with_quorum(2).unwrap(),
        same,
        "nothing known before"
    );
    slots.ensure("eu-1", 5, true);
    slots.ensure("lazy", 5, false);
    slots.persist().unwrap();
    let reloaded = Slots::load(dir.path()).unwrap();
    assert_eq!(
        reloaded.serve_with_quorum(1).unwrap(),
        QuorumChange::Lowered
    );
    let joining = |slots: &Slots| -> Vec<(String, bool)> {
        slots
            .list()
            .into_iter()
            .map(|s| (s.name, s.joining))
            .collect()
    };
    let expected = [("eu-1".to_owned(), true), ("lazy".to_owned(), false)];
    assert_eq!(joining(&Slots::load(dir.path()).unwrap()), expected);
    let again = Slots::load(dir.path()).unwrap();
    assert_eq!(again.serve_with_quorum(1).unwrap(), same);
}

#[test]
fn a_raised_quorum_is_remembered_only_once_it_settles() {
    let dir = tempfile::tempdir().unwrap();
    let slots = Slots::load(dir.path()).unwrap();
    slots.serve_with_quorum(1).unwrap();
    let raised = QuorumChange::Raised { from: 1 };
    let reloaded = Slots::load(dir.path()).unwrap();
    assert_eq!(reloaded.serve_with_quorum(2).unwrap(), raised);
    assert!(
        reloaded.list().iter().all(|s| !s.joining),
        "a higher quorum joins no one"
    );
    // Not settled: a restart is raised from the same lower quorum again.
    let restarted = Slots::load(dir.path()).unwrap();
    assert_eq!(restarted.serve_with_quorum(2).unwrap(), raised);
    restarted.settle_quorum(2);
    restarted.persist().unwrap();
    let settled = Slots::load(dir.path()).unwrap();
    assert_eq!(settled.serve_with_quorum(2).unwrap(), QuorumChange::Same);
}
