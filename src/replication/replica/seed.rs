//! Seeding from a snapshot: rows received into a staging area and swapped in, while the
//! replica tells its primary it is alive. A snapshot is acked once it is installed: the
//! rows still crossing a slow link when the primary has written the last, and then the
//! install (seconds for a large store), passed there for a stalled link, which was
//! dropped; with writes cutting the log behind it, the next connection took a new
//! snapshot, and a replica of a large store never finished joining.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::tcp::OwnedReadHalf;
use tokio::time::Instant;

use super::connect::{Writer, HANDSHAKE_TIMEOUT};
use super::{lock, Shared, IDLE_TIMEOUT};
use crate::error::ReplicationError;
use crate::follow::SnapshotStart;
use crate::replication::machine::ReplicaMachine;
use crate::replication::protocol::{read_frame_idle, read_frame_within, write_frame, Message};

/// How often a replica says it is alive while it takes a snapshot: well within the
/// shortest stall timeout a primary has (a second and four heartbeats).
const KEEPALIVE: Duration = Duration::from_millis(250);

/// How long one batch of rows may take to apply, and the install a base time, before the
/// replica stops saying it is alive: a hung disk then loses the link (and the log its
/// slot held) as a silent replica does, never holding them forever.
const APPLY_PATIENCE: Duration = Duration::from_secs(30);

/// The install gets a second more per this many bytes of rows (its checks and fsync).
const INSTALLED_PER_SECOND: u64 = 8 << 20;

/// Until when the work on a snapshot counts as alive: moved on by each batch of rows and
/// by the install, for as long as each may take.
struct Alive(Mutex<Instant>);

impl Alive {
    fn for_next(&self, patience: Duration) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now() + patience;
    }

    fn now(&self) -> bool {
        Instant::now() < *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Receives a snapshot into a staging area and swaps it in; returns its LSN and epoch.
/// Meanwhile the primary hears from this replica every [`KEEPALIVE`], for as long as the
/// work moves on.
pub(super) async fn receive_snapshot(
    shared: &Arc<Shared>,
    reader: &mut OwnedReadHalf,
    writer: &mut Writer,
    accept: impl FnOnce(&SnapshotStart) -> Result<(), ReplicationError>,
) -> Result<(u64, u64), ReplicationError> {
    let alive = Alive(Mutex::new(Instant::now() + HANDSHAKE_TIMEOUT));
    let _shown = Arriving(shared);
    keeping_alive(writer, &alive, receive(shared, reader, &alive, accept)).await
}

/// Shows no snapshot arriving once the receiving ends, however it ends (installed, failed,
/// or dropped with its link): a failed one went on showing its last progress.
struct Arriving<'a>(&'a Shared);

impl Drop for Arriving<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).snapshot = None;
    }
}

/// Runs `phase`, writing a keepalive to the primary every [`KEEPALIVE`] while `alive` says
/// it moves on.
async fn keeping_alive<T>(
    writer: &mut Writer,
    alive: &Alive,
    phase: impl Future<Output = Result<T, ReplicationError>>,
) -> Result<T, ReplicationError> {
    let keepalive = ReplicaMachine::keepalive();
    tokio::pin!(phase);
    let mut ticks = tokio::time::interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
    loop {
        tokio::select! {
            done = &mut phase => return done,
            _ = ticks.tick() => {
                if alive.now() {
                    write_frame(writer, &keepalive).await?;
                }
            }
        }
    }
}

async fn receive(
    shared: &Arc<Shared>,
    reader: &mut OwnedReadHalf,
    alive: &Alive,
    accept: impl FnOnce(&SnapshotStart) -> Result<(), ReplicationError>,
) -> Result<(u64, u64), ReplicationError> {
    let failed =
        |e: crate::Error| ReplicationError::Protocol(format!("cannot install the snapshot: {e}"));
    let joined = |e: tokio::task::JoinError| ReplicationError::Protocol(e.to_string());
    let Message::SnapshotBegin {
        lsn,
        epoch,
        id,
        lineage,
        tables,
        history,
    } = read_frame_within(reader, HANDSHAKE_TIMEOUT, "a snapshot").await?
    else {
        return Err(ReplicationError::Protocol("expected a snapshot".into()));
    };
    let start = SnapshotStart {
        lsn,
        epoch,
        id,
        lineage,
        history,
    };
    accept(&start)?;
    let total: u64 = tables.iter().map(|(_, rows, _)| rows).sum();
    tracing::info!(lsn, rows = total, "receiving a snapshot");
    {
        let mut state = lock(&shared.state);
        state.snapshot = Some((0, total));
    }
    let consumer = Arc::clone(&shared.consumer);
    alive.for_next(APPLY_PATIENCE);
    let mut installer = tokio::task::spawn_blocking(move || consumer.begin_snapshot(start))
        .await
        .map_err(joined)?
        .map_err(failed)?;
    let mut bytes = 0u64;
    loop {
        match read_frame_idle(reader, IDLE_TIMEOUT, "snapshot rows").await? {
            Message::SnapshotRows { table, rows } => {
                let rows: Vec<(Vec<u8>, Vec<u8>)> = rows
                    .into_iter()
                    .map(|(k, v)| (k.into_vec(), v.into_vec()))
                    .collect();
                bytes += rows
                    .iter()
                    .map(|(k, v)| (k.len() + v.len()) as u64)
                    .sum::<u64>();
                alive.for_next(APPLY_PATIENCE);
                installer = tokio::task::spawn_blocking(move || {
                    installer.add(&table, rows).map(|()| installer)
                })
                .await
                .map_err(joined)?
                .map_err(failed)?;
                lock(&shared.state).snapshot = Some((installer.rows(), total));
            }
            Message::SnapshotEnd => break,
            _ => {
                return Err(ReplicationError::Protocol(
                    "unexpected message in a snapshot".into(),
                ))
            }
        }
    }
    alive.for_next(APPLY_PATIENCE + Duration::from_secs(bytes / INSTALLED_PER_SECOND));
    tokio::task::spawn_blocking(move || installer.finish(&tables))
        .await
        .map_err(joined)?
        .map_err(failed)?;
    lock(&shared.state).snapshots += 1;
    Ok((lsn, epoch))
}
