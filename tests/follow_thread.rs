//! A replica follows on a thread of its own, which `close()` ends. Alone in its test binary:
//! it counts the process's threads by name, which other tests' replicas would change.

use replikv::replication::primary::Primary;
use replikv::replication::replica::Replica;
use replikv::store::{Store, StoreOptions};

mod common;

use common::{eventually, primary_options, put, replica_options, TestResult};

/// Threads of this process named `replikv-follow`.
fn follow_threads() -> Result<usize, std::io::Error> {
    let mut count = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let comm = std::fs::read_to_string(task?.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == "replikv-follow" {
            count += 1;
        }
    }
    Ok(count)
}

#[test]
fn each_replica_follows_on_its_own_thread_which_close_ends() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("primary"), StoreOptions::default())?;
    let primary = Primary::start(store.clone(), primary_options(None))?;
    assert_eq!(follow_threads()?, 0);
    let replicas = ["r1", "r2"]
        .into_iter()
        .map(|name| Replica::start(dir.path().join(name), replica_options(&primary, None, name)))
        .collect::<Result<Vec<_>, _>>()?;
    for i in 0..20 {
        store.commit(put(&format!("k{i}"), vec![0xc0]), None)?;
    }
    for replica in &replicas {
        eventually("the replica to apply every entry", || {
            replica.store().last_lsn() == 20
        });
    }
    assert_eq!(follow_threads()?, 2, "one thread per replica");
    let [first, second] = <[Replica; 2]>::try_from(replicas).map_err(|_| "two replicas")?;
    first.close()?;
    // Joined before close returns: nothing of the first replica still runs.
    assert_eq!(follow_threads()?, 1);
    store.commit(put("after", vec![0xc0]), None)?;
    eventually("the open replica to go on applying", || {
        second.store().last_lsn() == 21
    });
    drop(second);
    assert_eq!(
        follow_threads()?,
        0,
        "dropping a replica ends its thread too"
    );
    primary.close();
    Ok(())
}
