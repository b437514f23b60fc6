//! Replication under faults, over real TCP on 127.0.0.1 with real files: peers that die,
//! freeze, stop reading or send garbage mid-snapshot; strangers holding sockets open;
//! heartbeats after the log was cut; a primary dropped while its tasks are busy; a
//! consumer acking as if it were a replica.
//!
//! The misbehaving peers are raw sockets speaking the protocol by hand, so that each fault
//! happens at an exact point of the exchange.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use replikv::codec::{encode_key, KeyRef, Op};
use replikv::error::{Error, ReplicationError};
use replikv::replication::handshake::{self, Role};
use replikv::replication::monitor::fetch_status;
use replikv::replication::primary::{Primary, PrimaryOptions};
use replikv::replication::protocol::{
    check_frame_len, decode_frame_body, encode_frame, Message, PeerKind, RefuseCode,
};
use replikv::replication::replica::{OnDiverge, Replica, ReplicaOptions};
use replikv::replication::status::{LinkState, SyncRole};
use replikv::store::{Durability, Store, StoreOptions};
use serde_bytes::ByteBuf;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TOKEN: &str = "t0ken";
/// A cap far below what the tests write.
const RETAIN_BYTES: u64 = 1 << 20;

fn put(table: &str, key: &str, value: Vec<u8>) -> Vec<Op> {
    vec![Op {
        table: table.to_owned(),
        key: encode_key(KeyRef::Str(key)),
        value: Some(value),
    }]
}

/// Polls `check` for up to 30 s (a bound for a hung test, not a speed target).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A primary with a 1 MiB byte cap and a short stall timeout, serving a store that holds
/// `mib` MiB of rows whose log was cut: a new replica needs a snapshot larger than any
/// socket buffer.
fn primary_needing_snapshots(
    dir: &std::path::Path,
    mib: usize,
) -> Result<(Store, Primary), Box<dyn std::error::Error>> {
    let store = Store::open(
        dir.join("primary"),
        StoreOptions {
            segment_bytes: 256 << 10,
            ..StoreOptions::default()
        },
    )?;
    for i in 0..mib {
        store.commit(
            put("bulk", &format!("row{i:04}"), vec![0x5a; 1 << 20]),
            None,
        )?;
    }
    let primary = Primary::start(
        store.clone(),
        PrimaryOptions {
            token: Some(TOKEN.to_owned()),
            ship_interval: Duration::from_millis(5),
            heartbeat_interval: Duration::from_millis(100),
            retain_bytes: Some(RETAIN_BYTES),
            retention_interval: Duration::from_millis(100),
            ..PrimaryOptions::default()
        },
    )?;
    primary.retain()?;
    assert!(store.oldest_lsn()? > 1, "a new replica needs a snapshot");
    Ok((store, primary))
}

/// Writes a few MiB more and applies retention: the byte cap must hold (whole segments are
/// dropped while the log is over it, all but the last one).
fn assert_the_byte_cap_holds(store: &Store, primary: &Primary) -> TestResult {
    for i in 0..8 {
        store.commit(put("more", &format!("m{i}"), vec![0x11; 512 << 10]), None)?;
    }
    eventually("the byte cap to hold", || {
        primary.retain().is_ok_and(|_| {
            let segments = store.log_segments().unwrap_or_default();
            segments.len() <= 1 || segments.iter().map(|s| s.bytes).sum::<u64>() <= RETAIN_BYTES
        })
    });
    Ok(())
}

/// A store at `dir/primary` and a primary serving it with the test token.
fn serve(
    dir: &std::path::Path,
    store: StoreOptions,
    primary: PrimaryOptions,
) -> Result<(Store, Primary), Box<dyn std::error::Error>> {
    let store = Store::open(dir.join("primary"), store)?;
    let primary = Primary::start(
        store.clone(),
        PrimaryOptions {
            token: Some(TOKEN.to_owned()),
            ..primary
        },
    )?;
    Ok((store, primary))
}

fn pinned(primary: &Primary, name: &str) -> bool {
    primary.slots().iter().any(|s| s.name == name && s.pinned)
}

/// A peer speaking the protocol by hand over a blocking socket.
struct RawPeer {
    stream: TcpStream,
}

impl RawPeer {
    fn connect(primary: &Primary) -> Result<Self, Box<dyn std::error::Error>> {
        let stream = TcpStream::connect(primary.address())?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self { stream })
    }

    fn send(&mut self, message: &Message) -> TestResult {
        self.stream.write_all(&encode_frame(message)?)?;
        Ok(())
    }

    fn recv(&mut self) -> Result<Message, Box<dyn std::error::Error>> {
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header)?;
        let mut body = vec![0u8; check_frame_len(header)?];
        self.stream.read_exact(&mut body)?;
        Ok(decode_frame_body(&body)?)
    }

    /// Proves the token as an empty peer of `kind` named `name`; returns the welcome.
    fn hello(
        primary: &Primary,
        kind: PeerKind,
        name: &str,
    ) -> Result<(Self, Message), Box<dyn std::error::Error>> {
        Self::hello_listening(primary, kind, name, None)
    }

    /// As [`RawPeer::hello`], saying it answers other members at `listen`.
    fn hello_listening(
        primary: &Primary,
        kind: PeerKind,
        name: &str,
        listen: Option<String>,
    ) -> Result<(Self, Message), Box<dyn std::error::Error>> {
        let mut peer = Self::connect(primary)?;
        let Message::Challenge { nonce } = peer.recv()? else {
            return Err("expected a challenge".into());
        };
        peer.send(&Message::Hello {
            kind,
            name: name.to_owned(),
            proof: ByteBuf::from(handshake::prove(TOKEN.as_bytes(), Role::Peer, &nonce)),
            nonce: ByteBuf::from(handshake::nonce()),
            epoch: 0,
            flushed_lsn: 0,
            flushed_id: (0, 0),
            lineage: 0,
            fsync: true,
            history: Vec::new(),
            listen,
            store_id: 0,
            held: None,
        })?;
        let welcome = peer.recv()?;
        Ok((peer, welcome))
    }

    /// Proves the token and reads until a snapshot has started.
    fn mid_snapshot(primary: &Primary, name: &str) -> Result<Self, Box<dyn std::error::Error>> {
        let (mut peer, welcome) = Self::hello(primary, PeerKind::Replica, name)?;
        assert!(
            matches!(welcome, Message::Welcome { snapshot: true, .. }),
            "{welcome:?}"
        );
        assert!(matches!(peer.recv()?, Message::SnapshotBegin { .. }));
        assert!(pinned(primary, name), "pinned during its snapshot");
        Ok(peer)
    }
}

#[test]
fn a_peer_that_sends_garbage_and_hangs_up_mid_snapshot_leaves_no_pin_and_the_cap_holds(
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = primary_needing_snapshots(dir.path(), 24)?;
    let mut peer = RawPeer::mid_snapshot(&primary, "garbage")?;
    peer.stream
        .write_all(b"\x00\x00\x00\x09 not a frame at all")?;
    // Unread snapshot bytes are pending here: closing resets the connection.
    drop(peer);
    eventually("the pin to be released", || !pinned(&primary, "garbage"));
    assert_the_byte_cap_holds(&store, &primary)?;
    primary.close();
    Ok(())
}

#[test]
fn a_peer_frozen_mid_snapshot_is_dropped_after_the_stall_timeout_and_the_cap_holds() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = primary_needing_snapshots(dir.path(), 24)?;
    // Connected, silent, reading nothing: what a SIGSTOPped replica looks like.
    let frozen = RawPeer::mid_snapshot(&primary, "frozen")?;
    eventually("the frozen link to be dropped", || {
        primary
            .status()
            .replicas
            .iter()
            .any(|r| r.name == "frozen" && r.state == LinkState::Disconnected)
    });
    assert!(!pinned(&primary, "frozen"));
    assert_the_byte_cap_holds(&store, &primary)?;
    drop(frozen);
    primary.close();
    Ok(())
}

#[test]
fn a_peer_that_stops_reading_while_streaming_is_dropped_after_the_stall_timeout() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = serve(
        dir.path(),
        StoreOptions::default(),
        PrimaryOptions {
            heartbeat_interval: Duration::from_millis(100),
            ..PrimaryOptions::default()
        },
    )?;
    let (peer, welcome) = RawPeer::hello(&primary, PeerKind::Replica, "deaf")?;
    assert!(matches!(
        welcome,
        Message::Welcome {
            snapshot: false,
            ..
        }
    ));
    // More than any socket buffer holds, and the peer reads none of it.
    for i in 0..24 {
        store.commit(put("t", &format!("k{i}"), vec![0x33; 1 << 20]), None)?;
    }
    eventually("the deaf link to be dropped", || {
        primary.status().replicas[0].state == LinkState::Disconnected
    });
    drop(peer);
    primary.close();
    Ok(())
}

#[test]
fn a_peer_applying_a_large_entry_has_longer_than_the_stall_timeout_to_ack_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = serve(
        dir.path(),
        StoreOptions::default(),
        PrimaryOptions {
            // A stall timeout of 1.08 s.
            heartbeat_interval: Duration::from_millis(20),
            ..PrimaryOptions::default()
        },
    )?;
    let (mut peer, _) = RawPeer::hello(&primary, PeerKind::Replica, "busy")?;
    // 24 MiB in one entry: three seconds more at the apply rate the primary allows for.
    let mut load = put("t", "half", vec![0x5a; 12 << 20]);
    load.extend(put("t", "other half", vec![0xa5; 12 << 20]));
    store.commit(load, None)?;
    // The peer reads the whole entry, as a replica's reader does, then applies it: it
    // acks nothing for half as long again as the stall timeout after the last byte (so
    // after the primary's last write, which may have waited for the peer to read).
    let mut received = 0;
    while received < 24 << 20 {
        match peer.recv()? {
            Message::EntryPart { data, .. } => received += data.len(),
            Message::Entries { payloads, .. } => {
                received += payloads.iter().map(|p| p.len()).sum::<usize>();
            }
            Message::Heartbeat { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let read_all = Instant::now();
    while read_all.elapsed() < Duration::from_millis(1_600) {
        assert!(matches!(peer.recv()?, Message::Heartbeat { .. }));
    }
    assert_eq!(
        primary.status().replicas[0].state,
        LinkState::Streaming,
        "not dropped while it may still be applying"
    );
    peer.send(&Message::Ack {
        flushed_lsn: 1,
        applied_lsn: 1,
        members_version: 0,
    })?;
    eventually("the ack to count", || {
        primary.status().replicas[0].acked_lsn == 1
    });
    // With nothing in flight any more, silence is judged by the stall timeout alone.
    let acked = Instant::now();
    eventually("the silent link to be dropped", || {
        primary.status().replicas[0].state == LinkState::Disconnected
    });
    assert!(
        acked.elapsed() < Duration::from_secs(10),
        "dropped {:?} after its last ack: with nothing in flight it gets the 1.08 s stall timeout",
        acked.elapsed()
    );
    drop(peer);
    primary.close();
    Ok(())
}

#[test]
fn strangers_holding_sockets_open_never_lock_out_monitors_or_replicas() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = serve(
        dir.path(),
        StoreOptions::default(),
        PrimaryOptions {
            ship_interval: Duration::from_millis(5),
            ..PrimaryOptions::default()
        },
    )?;
    let mut idle: Vec<RawPeer> = (0..300)
        .map(|_| RawPeer::connect(&primary))
        .collect::<Result<_, _>>()?;
    let address = primary.address().to_string();
    let report = fetch_status(&address, Some(TOKEN), Duration::from_secs(10))?;
    assert_eq!(report.last_lsn, 0);
    let replica = Replica::start(
        dir.path().join("replica"),
        ReplicaOptions {
            primary: address,
            token: Some(TOKEN.to_owned()),
            name: "late".to_owned(),
            max_backoff: Duration::from_millis(200),
            store: StoreOptions::default(),
            on_diverge: OnDiverge::Stop,
            listen: None,
        },
    )?;
    store.commit(put("t", "k", vec![0x01]), None)?;
    eventually("the replica to stream", || replica.store().last_lsn() == 1);
    // The oldest strangers were told why they were dropped, not just hung up on.
    // (A stranger displaced before its task ran gets no challenge first.)
    let first = &mut idle[0];
    let refusal = match first.recv()? {
        Message::Challenge { .. } => first.recv()?,
        other => other,
    };
    match refusal {
        Message::Refused { code, reason, .. } => {
            assert_eq!(code, RefuseCode::Busy);
            assert!(reason.contains("waiting to authenticate"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(primary.status().rejected >= 1);
    replica.close()?;
    primary.close();
    Ok(())
}

#[test]
fn a_heartbeat_reports_the_lag_of_entries_in_flight_even_after_the_log_was_cut() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = serve(
        dir.path(),
        StoreOptions {
            segment_bytes: 4096,
            ..StoreOptions::default()
        },
        PrimaryOptions {
            ship_interval: Duration::from_millis(5),
            heartbeat_interval: Duration::from_millis(50),
            retain_bytes: Some(8192),
            ..PrimaryOptions::default()
        },
    )?;
    let (mut peer, _) = RawPeer::hello(&primary, PeerKind::Replica, "slow")?;
    let before = replikv::replication::status::now_ms();
    for i in 0..300 {
        store.commit(put("t", &format!("k{i}"), vec![0xa5; 30]), None)?;
    }
    // Everything is shipped; the peer acks nothing past 0, so entry 1 stays its oldest
    // missing one, and then the cap cuts it from the log.
    let mut received = 0;
    while received < 300 {
        match peer.recv()? {
            Message::Entries { payloads, .. } => received += payloads.len(),
            Message::Heartbeat { .. } => peer.send(&Message::Ack {
                flushed_lsn: 0,
                applied_lsn: 0,
                members_version: 0,
            })?,
            other => panic!("unexpected {other:?}"),
        }
    }
    primary.retain()?;
    assert!(store.oldest_lsn()? > 1, "entry 1 left the log");
    let cut_at = replikv::replication::status::now_ms();
    // Heartbeats sent before the cut may still be queued: take the first one sent after.
    let oldest_missing_ms = loop {
        if let Message::Heartbeat {
            oldest_missing_ms,
            now_ms,
            ..
        } = peer.recv()?
        {
            if now_ms > cut_at {
                break oldest_missing_ms;
            }
        }
    };
    assert!(
        oldest_missing_ms >= before && oldest_missing_ms <= replikv::replication::status::now_ms(),
        "the commit time of entry 1 ({oldest_missing_ms}), not 0 for 'nothing missing'"
    );
    assert!(primary.status().replicas[0].lag_seconds > 0.0);
    primary.close();
    Ok(())
}

#[test]
fn a_damaged_slots_file_stops_the_primary_with_a_corruption_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    let options = || PrimaryOptions {
        token: Some(TOKEN.to_owned()),
        ..PrimaryOptions::default()
    };
    let primary = Primary::start(store.clone(), options())?;
    let (_peer, _) = RawPeer::hello(&primary, PeerKind::Replica, "eu-1")?;
    primary.close();
    let file = dir.path().join("primary").join("replication-slots");
    let good = std::fs::read(&file)?;
    for at in 0..good.len() {
        let mut bad = good.clone();
        bad[at] ^= 0x04;
        std::fs::write(&file, &bad)?;
        match Primary::start(store.clone(), options()) {
            Err(replikv::Error::Store(replikv::error::StoreError::Corrupt { reason })) => {
                assert!(reason.contains("replication-slots"), "{reason}");
            }
            Err(other) => panic!("flip at {at}: {other}"),
            Ok(primary) => panic!("flip at {at} accepted: {:?}", primary.slots()),
        }
    }
    std::fs::write(&file, &good)?;
    let primary = Primary::start(store.clone(), options())?;
    assert_eq!(primary.slots()[0].name, "eu-1");
    primary.close();
    Ok(())
}

#[test]
fn dropping_a_primary_signals_its_tasks_and_returns_without_waiting_for_them() -> TestResult {
    let dir = tempfile::tempdir()?;
    // After each shipment the notifier pauses for ship_interval: a drop that waited for
    // it would take ten minutes.
    let (store, primary) = serve(
        dir.path(),
        StoreOptions::default(),
        PrimaryOptions {
            ship_interval: Duration::from_secs(600),
            ..PrimaryOptions::default()
        },
    )?;
    let address = primary.address();
    let replica = Replica::start(
        dir.path().join("replica"),
        ReplicaOptions {
            primary: address.to_string(),
            token: Some(TOKEN.to_owned()),
            name: "r".to_owned(),
            max_backoff: Duration::from_millis(200),
            store: StoreOptions::default(),
            on_diverge: OnDiverge::Stop,
            listen: None,
        },
    )?;
    eventually("the replica to connect", || {
        replica.state().connections == 1
    });
    store.commit(put("t", "k", vec![0x01]), None)?;
    eventually("the shipment", || replica.store().last_lsn() == 1);
    // The notifier polls every 50 ms: by now it has seen the commit and is pausing.
    std::thread::sleep(Duration::from_millis(500));
    let (dropped, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(primary);
        let _ = dropped.send(());
    });
    done.recv_timeout(Duration::from_secs(60))
        .expect("drop returned (a bound for a hung test, far below the notifier's pause)");
    // The server still stops by itself: its port is free again.
    eventually("the port to be released", || {
        std::net::TcpListener::bind(address).is_ok()
    });
    replica.close()?;
    Ok(())
}

#[test]
fn a_consumers_ack_never_counts_toward_wait_for_or_a_sync_quorum() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = serve(
        dir.path(),
        StoreOptions::default(),
        PrimaryOptions {
            ship_interval: Duration::ZERO,
            ..PrimaryOptions::default()
        },
    )?;
    store.commit(put("t", "k", vec![0x01]), None)?;
    // It even claims to fsync: a consumer keeps no data, so its ack proves nothing.
    let (mut consumer, welcome) = RawPeer::hello(&primary, PeerKind::Consumer, "cache")?;
    // A fresh consumer starts at the current LSN: a snapshot's header, no rows.
    assert!(
        matches!(welcome, Message::Welcome { snapshot: true, .. }),
        "{welcome:?}"
    );
    let begin = consumer.recv()?;
    assert!(
        matches!(&begin, Message::SnapshotBegin { lsn: 1, tables, .. } if tables.is_empty()),
        "{begin:?}"
    );
    assert!(matches!(consumer.recv()?, Message::SnapshotEnd));
    let lsn = store.commit(put("t", "k", vec![0x01]), None)?.lsn;
    while !matches!(consumer.recv()?, Message::Entries { .. }) {}
    consumer.send(&Message::Ack {
        flushed_lsn: lsn,
        applied_lsn: lsn,
        members_version: 0,
    })?;
    eventually("the consumer's ack to be recorded", || {
        primary.status().replicas.iter().any(|r| r.acked_lsn == lsn)
    });
    assert_eq!(primary.wait_for(lsn, 1, Duration::ZERO), 0);
    assert_eq!(primary.status().replicas[0].sync_state, SyncRole::Async);
    let refused = store.commit(put("t", "k", vec![0x02]), Some(Durability::Sync));
    assert!(
        matches!(
            refused,
            Err(Error::Replication(ReplicationError::SyncUnavailable(_)))
        ),
        "{refused:?}"
    );
    assert_eq!(store.last_lsn(), lsn, "a refused sync write takes no LSN");
    primary.close();
    Ok(())
}

#[test]
fn garbage_or_a_stray_message_after_the_handshake_is_refused_counted_and_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = serve(
        dir.path(),
        StoreOptions::default(),
        PrimaryOptions::default(),
    )?;
    let (mut garbler, welcome) = RawPeer::hello(&primary, PeerKind::Consumer, "garbler")?;
    assert!(matches!(welcome, Message::Welcome { .. }), "{welcome:?}");
    garbler
        .stream
        .write_all(b"\x00\x00\x00\x09 not a frame at all")?;
    eventually("the garbage to be counted", || {
        primary.status().rejected == 1
    });
    let refusal = primary.status().last_rejection.unwrap_or_default();
    assert!(refusal.contains("garbler"), "{refusal}");
    let (mut talker, _) = RawPeer::hello(&primary, PeerKind::Replica, "talker")?;
    // A challenge is the primary's to send, never a replica's.
    talker.send(&Message::Challenge {
        nonce: ByteBuf::from(handshake::nonce()),
    })?;
    eventually("the stray message to be counted", || {
        primary.status().rejected == 2
    });
    let refusal = primary.status().last_rejection.unwrap_or_default();
    assert!(refusal.contains("talker"), "{refusal}");
    primary.close();
    store.close()?;
    Ok(())
}

/// A switchover whose target was told to take over and never answered leaves the primary
/// deposed: its writes are refused as fenced, not paused (a pause says to retry, and no
/// retry would ever succeed).
#[test]
fn a_switchover_whose_target_never_answers_leaves_the_store_fenced_not_paused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = serve(
        dir.path(),
        StoreOptions::default(),
        PrimaryOptions::default(),
    )?;
    let listen = Some("127.0.0.1:9".to_owned());
    let (mut silent, welcome) =
        RawPeer::hello_listening(&primary, PeerKind::Replica, "silent", listen)?;
    assert!(matches!(welcome, Message::Welcome { .. }), "{welcome:?}");
    store.commit(put("t", "k", b"\xc3".to_vec()), None)?;
    while !matches!(silent.recv()?, Message::Entries { .. }) {}
    silent.send(&Message::Ack {
        flushed_lsn: 1,
        applied_lsn: 1,
        members_version: 0,
    })?;
    let err = primary
        .switchover("silent", "old", Duration::from_secs(1))
        .unwrap_err();
    assert!(err.to_string().contains("did not answer"), "{err}");
    let refused = store
        .commit(put("t", "k2", b"\xc3".to_vec()), None)
        .unwrap_err();
    assert!(
        matches!(refused, Error::Replication(ReplicationError::Fenced { .. })),
        "{refused}"
    );
    store.close()?;
    Ok(())
}

/// What a peer may send is bounded: a hello whose `listen` is not an address is refused
/// (every member's address goes into every heartbeat), and a frame after the handshake
/// larger than a peer ever needs (4 MiB) is refused and counted before it is read.
#[test]
fn a_listen_that_is_no_address_and_a_peer_frame_past_4_mib_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, primary) = serve(
        dir.path(),
        StoreOptions::default(),
        PrimaryOptions::default(),
    )?;
    let nowhere = Some("x".repeat(60_000));
    let (_, refused) = RawPeer::hello_listening(&primary, PeerKind::Replica, "far", nowhere)?;
    assert!(
        matches!(&refused, Message::Refused { code: RefuseCode::Protocol, reason, .. }
            if reason.contains("not an IP address and port")),
        "{refused:?}"
    );
    let (mut big, welcome) = RawPeer::hello(&primary, PeerKind::Consumer, "big")?;
    assert!(matches!(welcome, Message::Welcome { .. }), "{welcome:?}");
    big.stream.write_all(&(5u32 << 20).to_be_bytes())?;
    eventually("the large frame to be counted", || {
        primary.status().rejected == 2
    });
    let refusal = primary.status().last_rejection.unwrap_or_default();
    assert!(refusal.contains("at most 4194304 bytes"), "{refusal}");
    primary.close();
    store.close()?;
    Ok(())
}
