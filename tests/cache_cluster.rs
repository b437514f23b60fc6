//! The cache cluster client against real cache nodes on 127.0.0.1: versioned reads and
//! fills on the key's owner, one round trip per node for a batch, a failed node's keys on
//! the next node, and a returning node kept out until it has caught up with the log.

use std::time::Duration;

use replikv::cache::cache_node::{CacheNode, CacheNodeOptions};
use replikv::cache::client::{Cluster, ClusterOptions, Conn, Lookup, Ring, Standing};
use replikv::cache::lru::{OnWrite, Version};
use replikv::error::CacheError;
use replikv::replication::primary::{Primary, PrimaryOptions};
use replikv::store::{Store, StoreOptions};
use replikv::Error;

mod common;

use common::{eventually, primary_options, put, TestResult};

const VNODES: usize = 64;

fn start_node(listen: &str, follow: Option<String>, token: Option<&str>) -> CacheNode {
    CacheNode::start(&CacheNodeOptions {
        listen: listen.to_owned(),
        capacity: 100_000,
        max_bytes: None,
        ttl: None,
        on_write: OnWrite::Drop,
        follow,
        token: token.map(str::to_owned),
        name: None,
    })
    .expect("a cache node starts on 127.0.0.1")
}

fn nodes(count: usize) -> Vec<CacheNode> {
    (0..count)
        .map(|_| start_node("127.0.0.1:0", None, None))
        .collect()
}

fn addresses(nodes: &[CacheNode]) -> Vec<String> {
    nodes.iter().map(|n| n.address().to_string()).collect()
}

fn cluster(addresses: Vec<String>, retry_after: Duration) -> Cluster {
    Cluster::new(ClusterOptions {
        nodes: addresses,
        vnodes: VNODES,
        timeout: Duration::from_secs(2),
        retry_after,
        ..ClusterOptions::default()
    })
    .expect("valid options")
}

/// `count` keys that `node` owns while every node is up.
fn keys_of(addresses: &[String], node: usize, count: usize) -> Vec<Vec<u8>> {
    let ring = Ring::new(addresses, VNODES);
    (0..)
        .map(|i| format!("test:key{i}").into_bytes())
        .filter(|key| ring.owner(key, |_| true) == Some(node))
        .take(count)
        .collect()
}

fn version(lsn: u64) -> Version {
    Version { epoch: 1, lsn }
}

fn hit(value: &[u8], version: Version) -> Lookup {
    Lookup::Hit {
        value: value.to_vec(),
        version,
    }
}

/// Commands the node has answered so far (read in process, so no round trip of its own).
fn commands(node: &CacheNode) -> u64 {
    node.node().commands.0
}

#[test]
fn test_get_fill_and_set_round_trip_with_versions_and_ttls() -> TestResult {
    let running = nodes(2);
    let cache = cluster(addresses(&running), Duration::from_secs(5));
    assert_eq!(
        cache.get(b"test:a")?,
        Lookup::Miss {
            at: Version::default()
        }
    );
    assert!(cache.fill(b"test:a", version(5), b"v5", None)?);
    assert_eq!(cache.get(b"test:a")?, hit(b"v5", version(5)));
    assert!(cache.fill(b"test:a", version(6), b"v6", None)?);
    assert_eq!(cache.get(b"test:a")?, hit(b"v6", version(6)));
    assert_eq!(cache.observed(), 6);

    cache.set(b"test:b", b"plain", None)?;
    assert_eq!(cache.get(b"test:b")?, hit(b"plain", Version::default()));

    cache.set(b"test:c", b"brief", Some(Duration::from_millis(30)))?;
    assert!(cache.fill(
        b"test:d",
        version(7),
        b"brief",
        Some(Duration::from_micros(10))
    )?);
    eventually("the TTLs pass", || {
        cache.get(b"test:c").ok()
            == Some(Lookup::Miss {
                at: Version::default(),
            })
            && cache.get(b"test:d").ok()
                == Some(Lookup::Miss {
                    at: Version::default(),
                })
    });
    Ok(())
}

#[test]
fn test_a_fill_older_than_the_cached_value_is_refused() -> TestResult {
    let running = nodes(2);
    let cache = cluster(addresses(&running), Duration::from_secs(5));
    assert!(cache.fill(b"test:k", version(10), b"new", None)?);
    assert!(!cache.fill(b"test:k", version(9), b"old", None)?);
    assert_eq!(cache.get(b"test:k")?, hit(b"new", version(10)));
    Ok(())
}

#[test]
fn test_get_many_takes_one_round_trip_per_node_and_answers_in_the_order_asked() -> TestResult {
    let running = nodes(3);
    let cache = cluster(addresses(&running), Duration::from_secs(5));
    let keys: Vec<Vec<u8>> = (0..90)
        .map(|i| format!("test:many{i}").into_bytes())
        .collect();
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| i % 3 != 0) {
        assert!(cache.fill(key, version(i as u64), &key[5..], None)?);
    }
    let ring = Ring::new(&addresses(&running), VNODES);
    let owned: Vec<u64> = (0..running.len())
        .map(|node| {
            let owns = |key: &&Vec<u8>| ring.owner(key, |_| true) == Some(node);
            keys.iter().filter(owns).count() as u64
        })
        .collect();
    assert!(owned.iter().all(|&count| count > 0));

    let trips_before: Vec<u64> = cache.nodes().iter().map(|n| n.round_trips).collect();
    let commands_before: Vec<u64> = running.iter().map(commands).collect();
    let lookups = cache.get_many(&keys)?;
    let commands_after: Vec<u64> = running.iter().map(commands).collect();
    let trips_after: Vec<u64> = cache.nodes().iter().map(|n| n.round_trips).collect();

    for node in 0..running.len() {
        assert_eq!(commands_after[node] - commands_before[node], owned[node]);
        // The batch's round trip, and the INFO of the second report.
        assert_eq!(trips_after[node] - trips_before[node], 2);
    }
    for (i, (key, lookup)) in keys.iter().zip(&lookups).enumerate() {
        if i % 3 == 0 {
            assert!(matches!(lookup, Lookup::Miss { .. }), "{i}: {lookup:?}");
        } else {
            assert_eq!(*lookup, hit(&key[5..], version(i as u64)));
        }
    }
    assert!(cache.get_many(&[])?.is_empty());
    Ok(())
}

#[test]
fn test_a_closed_node_is_marked_down_and_only_its_keys_move() -> TestResult {
    let mut running = nodes(3);
    let all = addresses(&running);
    let cache = cluster(all.clone(), Duration::from_secs(60));
    let keys: Vec<Vec<Vec<u8>>> = (0..3).map(|node| keys_of(&all, node, 5)).collect();
    for key in keys.iter().flatten() {
        assert!(cache.fill(key, version(1), key, None)?);
    }

    running[1].close();
    for key in &keys[1] {
        // Its keys are answered by another node, which does not hold them.
        assert_eq!(
            cache.get(key)?,
            Lookup::Miss {
                at: Version::default()
            }
        );
    }
    for key in keys[0].iter().chain(&keys[2]) {
        assert_eq!(cache.get(key)?, hit(key, version(1)));
    }
    let reports = cache.nodes();
    assert_eq!(reports[1].standing, Standing::Down);
    // It cost one failure: the other reads skipped it.
    assert_eq!(reports[1].failures, 1);
    assert!(reports[1].last_error.is_some());
    assert!(reports[1].info.is_none());
    for node in [0, 2] {
        assert_eq!(reports[node].standing, Standing::Up);
        assert_eq!(reports[node].failures, 0);
        let info = reports[node]
            .info
            .as_ref()
            .expect("an up node answers INFO");
        assert_eq!(info["role"], "cache");
    }

    // Its keys are now filled and read on their next node.
    assert!(cache.fill(&keys[1][0], version(2), b"moved", None)?);
    assert_eq!(cache.get(&keys[1][0])?, hit(b"moved", version(2)));
    let lookups = cache.get_many(&[keys[0][0].clone(), keys[1][0].clone()])?;
    assert_eq!(lookups[0], hit(&keys[0][0], version(1)));
    assert_eq!(lookups[1], hit(b"moved", version(2)));
    assert_eq!(cache.nodes()[1].failures, 1);
    Ok(())
}

#[test]
fn test_a_node_failing_during_a_batch_has_its_keys_read_from_the_next_node() -> TestResult {
    let mut running = nodes(3);
    let all = addresses(&running);
    let cache = cluster(all.clone(), Duration::from_secs(60));
    // Connections are pooled now: the next batch finds the node gone mid-use.
    cache.get_many(
        &(0..3)
            .map(|n| keys_of(&all, n, 1).remove(0))
            .collect::<Vec<_>>(),
    )?;
    running[2].close();
    let keys: Vec<Vec<u8>> = (0..3).flat_map(|node| keys_of(&all, node, 4)).collect();
    let lookups = cache.get_many(&keys)?;
    assert!(lookups.iter().all(|lookup| *lookup
        == Lookup::Miss {
            at: Version::default()
        }));
    assert_eq!(cache.nodes()[2].standing, Standing::Down);
    Ok(())
}

#[test]
fn test_invalidations_reach_every_node_that_is_up() -> TestResult {
    let running = nodes(2);
    let all = addresses(&running);
    let cache = cluster(all.clone(), Duration::from_secs(5));
    let key = keys_of(&all, 0, 1).remove(0);
    assert!(cache.fill(&key, version(3), b"owner's", None)?);
    // A copy on the other node, as when it stood in for the owner.
    let mut other = Conn::connect(&all[1], None, Duration::from_secs(2))?;
    other.pipeline(&[[b"RKV.FILL".as_slice(), &key, b"1", b"2", b"stand-in's"]])?;
    assert_eq!(cache.invalidate(std::slice::from_ref(&key))?, 2);
    assert_eq!(
        cache.get(&key)?,
        Lookup::Miss {
            at: Version::default()
        }
    );
    assert_eq!(cache.invalidate(&[])?, 0);

    let many: Vec<Vec<u8>> = (0..3000)
        .map(|i| format!("test:p{i}").into_bytes())
        .collect();
    for key in &many {
        cache.set(key, b"x", None)?;
    }
    assert_eq!(cache.invalidate(&many[..2500])?, 2500);
    assert_eq!(cache.invalidate_prefix(b"test:p")?, 500);
    Ok(())
}

#[test]
fn test_a_refusal_is_a_reply_error_and_does_not_mark_the_node_down() -> TestResult {
    let running = vec![start_node("127.0.0.1:0", None, Some("right"))];
    let cache = Cluster::new(ClusterOptions {
        nodes: addresses(&running),
        token: Some("wrong".to_owned()),
        ..ClusterOptions::default()
    })?;
    match cache.get(b"test:k") {
        Err(Error::Cache(CacheError::Reply { reason, .. })) => {
            assert!(reason.starts_with("WRONGPASS"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let report = &cache.nodes()[0];
    assert_eq!(report.standing, Standing::Up);
    assert_eq!(report.failures, 0);
    assert!(report
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("WRONGPASS")));

    let authenticated = Cluster::new(ClusterOptions {
        nodes: addresses(&running),
        token: Some("right".to_owned()),
        ..ClusterOptions::default()
    })?;
    authenticated.set(b"test:k", b"v", None)?;
    assert_eq!(authenticated.get(b"test:k")?, hit(b"v", Version::default()));
    Ok(())
}

#[test]
fn test_with_every_node_down_reads_are_unavailable_and_writes_fail() -> TestResult {
    let mut running = nodes(2);
    let cache = cluster(addresses(&running), Duration::from_secs(60));
    for node in &mut running {
        node.close();
    }
    assert_eq!(cache.get(b"test:k")?, Lookup::Unavailable);
    assert_eq!(
        cache.get_many(&[b"test:k".to_vec(), b"test:l".to_vec()])?,
        vec![Lookup::Unavailable, Lookup::Unavailable]
    );
    assert!(!cache.fill(b"test:k", version(1), b"v", None)?);
    assert!(matches!(
        cache.set(b"test:k", b"v", None),
        Err(Error::Cache(CacheError::Unavailable(_)))
    ));
    assert!(matches!(
        cache.invalidate(&[b"test:k".to_vec()]),
        Err(Error::Cache(CacheError::Unavailable(_)))
    ));
    assert!(cache
        .nodes()
        .iter()
        .all(|n| n.standing == Standing::Down && n.failures == 1));
    Ok(())
}

#[test]
fn test_invalid_options_are_refused() {
    let refused = |options: ClusterOptions| {
        matches!(
            Cluster::new(options),
            Err(Error::Cache(CacheError::Invalid(_)))
        )
    };
    let one = vec!["127.0.0.1:1".to_owned()];
    assert!(refused(ClusterOptions::default()));
    assert!(refused(ClusterOptions {
        nodes: vec!["127.0.0.1:1".to_owned(); 2],
        ..ClusterOptions::default()
    }));
    assert!(refused(ClusterOptions {
        nodes: one.clone(),
        vnodes: 0,
        ..ClusterOptions::default()
    }));
    assert!(refused(ClusterOptions {
        nodes: one.clone(),
        timeout: Duration::ZERO,
        ..ClusterOptions::default()
    }));
    assert!(!refused(ClusterOptions {
        nodes: one,
        ..ClusterOptions::default()
    }));
}

/// Writes one entry to `store`; returns its LSN.
fn write(store: &Store, key: &str) -> replikv::Result<u64> {
    Ok(store.commit(put(key, b"v".to_vec()), None)?.lsn)
}

#[test]
fn test_a_returning_node_behind_the_log_serves_again_only_once_caught_up() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    let primary = Primary::start(store.clone(), primary_options(None))?;
    let log = primary.address().to_string();
    for i in 0..3 {
        write(&store, &format!("before{i}"))?;
    }
    let mut owner = start_node("127.0.0.1:0", Some(log.clone()), None);
    let other = start_node("127.0.0.1:0", Some(log.clone()), None);
    let first_lsn = store.last_lsn();
    eventually("both nodes follow the log", || {
        owner.node().processed().lsn == first_lsn && other.node().processed().lsn == first_lsn
    });
    let all = vec![owner.address().to_string(), other.address().to_string()];
    let retry_after = Duration::from_millis(100);
    let cache = cluster(all.clone(), retry_after);
    let key = keys_of(&all, 0, 1).remove(0);
    assert!(matches!(cache.get(&key)?, Lookup::Miss { at } if at.lsn == first_lsn));

    // The owner goes away; the log moves on while no node can follow it.
    owner.close();
    primary.close();
    for i in 0..3 {
        write(&store, &format!("after{i}"))?;
    }
    let last_lsn = store.last_lsn();
    cache.observe(last_lsn);
    cache.set(&key, b"stand-in", None)?;
    assert_eq!(cache.nodes()[0].standing, Standing::Down);
    assert_eq!(cache.get(&key)?, hit(b"stand-in", Version::default()));

    // The owner comes back at its address, but cannot reach the log yet.
    let returned = start_node(&all[0], Some(log.clone()), None);
    eventually("the returning node is probed and kept out", || {
        cache.get(&key).ok() == Some(hit(b"stand-in", Version::default()))
            && cache.nodes()[0].standing == Standing::CatchingUp
    });
    std::thread::sleep(retry_after * 3);
    assert_eq!(cache.get(&key)?, hit(b"stand-in", Version::default()));
    assert_eq!(cache.nodes()[0].standing, Standing::CatchingUp);

    // The log is back: the node catches up, and takes its keys again.
    let _primary = Primary::start(
        store.clone(),
        PrimaryOptions {
            listen: log,
            ..primary_options(None)
        },
    )?;
    eventually("the returning node catches up", || {
        returned.node().processed().lsn >= last_lsn
    });
    eventually(
        "the returning node serves its keys again",
        || matches!(cache.get(&key), Ok(Lookup::Miss { at }) if at.lsn >= last_lsn),
    );
    assert_eq!(cache.nodes()[0].standing, Standing::Up);
    Ok(())
}

#[test]
fn test_concurrent_callers_never_mix_up_replies() -> TestResult {
    let running = nodes(3);
    let cache = cluster(addresses(&running), Duration::from_secs(5));
    std::thread::scope(|scope| {
        let callers: Vec<_> = (0..8u64)
            .map(|thread| {
                let cache = &cache;
                scope.spawn(move || -> replikv::Result<()> {
                    for round in 0..200u64 {
                        let key = format!("test:t{thread}:{}", round % 10).into_bytes();
                        let value = format!("{thread}:{round}").into_bytes();
                        let version = version(round + 1);
                        assert!(cache.fill(&key, version, &value, None)?);
                        assert_eq!(cache.get(&key)?, hit(&value, version));
                        let many = cache.get_many(&[key.clone(), b"test:absent".to_vec()])?;
                        assert_eq!(many[0], hit(&value, version));
                    }
                    Ok(())
                })
            })
            .collect();
        callers
            .into_iter()
            .try_for_each(|caller| caller.join().expect("a caller thread panicked"))
    })?;
    assert!(cache.nodes().iter().all(|n| n.failures == 0));
    Ok(())
}

#[test]
fn test_a_node_that_follows_a_log_never_reports_following_none() -> TestResult {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let nowhere = listener.local_addr()?.to_string();
    drop(listener);
    // Asked at once, before its link has reported any state.
    let node = start_node("127.0.0.1:0", Some(nowhere), None);
    let mut conn = Conn::connect(&node.address().to_string(), None, Duration::from_secs(2))?;
    let reply = conn.pipeline(&[["RKV.POSITION"]])?.remove(0);
    let replikv::cache::client::Value::Array(items) = reply else {
        panic!("RKV.POSITION answers an array: {reply:?}")
    };
    // Nothing listens there: the first attempt may have failed already.
    let linked = [b"connecting".as_slice(), b"disconnected"]
        .map(|state| replikv::cache::client::Value::Bulk(state.to_vec()));
    assert!(linked.contains(&items[2]), "{:?}", items[2]);
    Ok(())
}
