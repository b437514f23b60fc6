//! A replica that holds back restarts while this primary's fdatasync of an entry it was
//! shipped ahead still runs: its log holds more than this one's durable part, all of it
//! written here alike, and it must resume, not be refused as diverged.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::super::{Primary, PrimaryOptions};
use crate::codec::{encode_key, KeyRef, Op};
use crate::replication::replica::{OnDiverge, Replica, ReplicaOptions};
use crate::replication::status::LinkState;
use crate::store::{Durability, Store, StoreOptions};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Where the leading writer waits, between its write and its fdatasync, while closed.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while !*open {
            open = self
                .opened
                .wait(open)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn open(&self) {
        *self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.opened.notify_all();
    }
}

/// Opens the gate when dropped: a failing test leaves no writer stuck at it.
struct OpensOnDrop(Arc<Gate>);

impl Drop for OpensOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

fn key(i: u32) -> Vec<u8> {
    encode_key(KeyRef::Str(&format!("user{i}")))
}

fn put(i: u32) -> Vec<Op> {
    vec![Op {
        table: "consent".into(),
        key: key(i),
        value: Some(b"\xc3".to_vec()),
    }]
}

/// Polls `check` for up to 30 s (a bound for a hung test, not a speed target).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_replica_that_holds_back_resumes_while_the_primary_syncs_what_it_was_shipped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    let primary = Primary::start(
        store.clone(),
        PrimaryOptions {
            ship_interval: Duration::ZERO,
            ship_ahead: true,
            ..PrimaryOptions::default()
        },
    )?;
    let options = || ReplicaOptions {
        primary: primary.address().to_string(),
        token: None,
        name: "r1".into(),
        max_backoff: Duration::from_millis(50),
        store: StoreOptions::default(),
        on_diverge: OnDiverge::Stop,
        listen: None,
    };
    let replica = Replica::start(dir.path().join("r1"), options())?;
    eventually("the replica to register", || {
        store.commit(put(0), Some(Durability::Sync)).is_ok()
    });
    // Entries are shipped ahead as the primary's own listener does, then the writer
    // stops before its fdatasync until the gate opens.
    let gate = Arc::new(Gate::default());
    let _opens = OpensOnDrop(Arc::clone(&gate));
    let (shared, waiting) = (Arc::clone(&primary.shared), Arc::clone(&gate));
    let _listening = store.on_written(move |lsn| {
        shared.entries_written(lsn);
        waiting.pass();
    });
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || store.commit(put(1), Some(Durability::Sync)))
    };
    let durable = store.last_lsn();
    eventually("the replica to hold the entry durably", || {
        replica.store().synced_lsn() > durable
    });
    assert_eq!(store.last_lsn(), durable, "not durable here yet");
    replica.close()?;
    let replica = Replica::start(dir.path().join("r1"), options())?;
    eventually("the restarted replica to stream or stop", || {
        matches!(
            replica.state().state,
            LinkState::Streaming | LinkState::CatchingUp | LinkState::Failed
        )
    });
    let state = replica.state();
    assert_ne!(state.state, LinkState::Failed, "{:?}", state.last_error);
    gate.open();
    let receipt = writer.join().map_err(|_| "the writer panicked")??;
    assert_eq!(receipt.acked_by, vec!["r1".to_owned()], "{receipt:?}");
    eventually("the replica to show the write", || {
        replica
            .store()
            .contains("consent", &key(1))
            .unwrap_or(false)
    });
    replica.close()?;
    primary.close();
    store.close()?;
    Ok(())
}
