//! The store side of sync writes, against a scripted primary: which durability a commit
//! gets, refusals before anything commits, timeouts that raise or degrade, and one primary
//! per store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use replikv::codec::{encode_key, KeyRef, Op};
use replikv::error::{Error, ReplicationError, StoreError};
use replikv::store::{Durability, OnTimeout, Store, StoreOptions, SyncReplication};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A primary whose one replica, "r1", has acked `acked` and which has `registered` enough
/// replicas for its quorum or not. `consent` is sync by default, every other table async.
struct Scripted {
    acked: AtomicU64,
    registered: AtomicBool,
    on_timeout: OnTimeout,
}

impl Scripted {
    fn new(on_timeout: OnTimeout) -> Arc<Self> {
        Arc::new(Self {
            acked: AtomicU64::new(0),
            registered: AtomicBool::new(true),
            on_timeout,
        })
    }
}

impl SyncReplication for Scripted {
    fn default_for(&self, table: &str) -> Durability {
        if table == "consent" {
            Durability::Sync
        } else {
            Durability::Async
        }
    }

    fn check_sync(&self) -> replikv::Result<()> {
        if self.registered.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(ReplicationError::SyncUnavailable("no replica".into()).into())
        }
    }

    fn will_wait(&self, _lsn: u64) {}

    fn wait_quorum(&self, lsn: u64, patience: Duration) -> replikv::Result<Option<Vec<String>>> {
        if self.acked.load(Ordering::SeqCst) >= lsn {
            return Ok(Some(self.acked_by(lsn)));
        }
        std::thread::sleep(patience);
        Ok(None)
    }

    fn acked_by(&self, lsn: u64) -> Vec<String> {
        if self.acked.load(Ordering::SeqCst) >= lsn {
            vec!["r1".to_owned()]
        } else {
            Vec::new()
        }
    }

    fn sync_timeout(&self) -> Duration {
        Duration::from_millis(50)
    }

    fn on_timeout(&self) -> OnTimeout {
        self.on_timeout
    }
}

fn put(table: &str, key: &str) -> Vec<Op> {
    vec![Op {
        table: table.to_owned(),
        key: encode_key(KeyRef::Str(key)),
        value: Some(vec![0x01]),
    }]
}

fn is_sync_refusal<T>(result: &replikv::Result<T>) -> bool {
    matches!(
        result,
        Err(Error::Replication(ReplicationError::SyncUnavailable(_)))
    )
}

#[test]
fn without_a_primary_writes_are_local_and_sync_is_refused_before_taking_an_lsn() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("db"), StoreOptions::default())?;
    let receipt = store.commit(put("consent", "a"), Some(Durability::Async))?;
    assert_eq!((receipt.lsn, receipt.durability), (1, Durability::Local));
    assert!(is_sync_refusal(
        &store.commit(put("consent", "b"), Some(Durability::Sync))
    ));
    let mut tx = store.begin()?;
    tx.put("consent", encode_key(KeyRef::Str("c")), vec![0x02])?;
    assert!(is_sync_refusal(&tx.commit(Some(Durability::Sync))));
    assert_eq!(store.last_lsn(), 1, "nothing refused took an LSN");
    store.commit(put("t", "d"), None)?; // the refused transaction released the writer lock
    Ok(())
}

#[test]
fn a_commit_gets_the_requested_durability_or_the_strongest_default_of_its_tables() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("db"), StoreOptions::default())?;
    let primary = Scripted::new(OnTimeout::Raise);
    primary.acked.store(u64::MAX, Ordering::SeqCst);
    let _registration = store.serve_replication(primary.clone())?;
    assert_eq!(
        store.commit(put("events", "a"), None)?.durability,
        Durability::Async
    );
    let sync = store.commit(put("consent", "a"), None)?;
    assert_eq!(
        (sync.durability, sync.acked_by),
        (Durability::Sync, vec!["r1".to_owned()])
    );
    let mut both = put("events", "b");
    both.extend(put("consent", "b"));
    assert_eq!(store.commit(both, None)?.durability, Durability::Sync);
    let overridden = store.commit(put("consent", "c"), Some(Durability::Async))?;
    assert_eq!(overridden.durability, Durability::Async);
    let mut tx = store.begin()?;
    tx.put("events", encode_key(KeyRef::Int(1)), vec![0x03])?;
    assert_eq!(
        tx.commit(Some(Durability::Sync))?.durability,
        Durability::Sync
    );
    primary.registered.store(false, Ordering::SeqCst);
    let before = store.last_lsn();
    assert!(is_sync_refusal(&store.commit(put("consent", "d"), None)));
    assert_eq!(store.last_lsn(), before, "refused before it committed");
    Ok(())
}

#[test]
fn a_sync_commit_past_its_timeout_raises_with_its_lsn_or_degrades_visibly() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("db"), StoreOptions::default())?;
    {
        let _registration = store.serve_replication(Scripted::new(OnTimeout::Raise))?;
        match store.commit(put("consent", "a"), None) {
            Err(Error::Replication(ReplicationError::Timeout { lsn, acked_by })) => {
                assert_eq!((lsn, acked_by), (1, Vec::<String>::new()));
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(store.last_lsn(), 1, "committed locally all the same");
    }
    let _registration = store.serve_replication(Scripted::new(OnTimeout::Degrade))?;
    let pending = store.commit_pending(put("consent", "b"), None)?;
    assert!(pending.abandoned().degraded, "not acknowledged yet");
    let receipt = pending.finish()?;
    assert_eq!(
        (receipt.lsn, receipt.durability, receipt.degraded),
        (2, Durability::Sync, true)
    );
    Ok(())
}

#[test]
fn a_store_is_served_by_one_primary_at_a_time() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("db"), StoreOptions::default())?;
    let first = store.serve_replication(Scripted::new(OnTimeout::Raise))?;
    assert!(matches!(
        store.serve_replication(Scripted::new(OnTimeout::Raise)),
        Err(Error::Store(StoreError::AlreadyServed { .. }))
    ));
    drop(first);
    assert_eq!(
        store.commit(put("t", "a"), None)?.durability,
        Durability::Local
    );
    let _second = store.serve_replication(Scripted::new(OnTimeout::Raise))?;
    assert_eq!(
        store.commit(put("t", "b"), None)?.durability,
        Durability::Async
    );
    Ok(())
}
