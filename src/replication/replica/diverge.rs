//! A follower whose history forks from its primary's (DESIGN guarantees 4 and 6): a
//! replica stops with the loss account (the entries only it holds, and the tables and keys
//! they touched), or, only when asked to, writes those entries to a report file, discards
//! everything and follows again from scratch. It never merges silently. A consumer that
//! keeps no data always resyncs: it has nothing to lose.

use std::path::PathBuf;
use std::sync::Arc;

use super::{lock, Shared};
use crate::error::ReplicationError;
use crate::follow::Divergence;

/// What a replica does when its history forks from its primary's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnDiverge {
    /// Stop following, with the loss account (the default: a person decides).
    #[default]
    Stop,
    /// Write the local-only entries to a report file, discard everything, follow again.
    Resync,
}

/// A resync that happened: the loss account and where its entries were kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resynced {
    /// What was discarded.
    pub divergence: Divergence,
    /// The report file holding the discarded entries (always one for a replica; none for
    /// a consumer that keeps no data).
    pub report: Option<PathBuf>,
}

/// Handles a refusal as diverged at `fork_lsn` (unknown: everything it holds is
/// accounted for). Returns `Ok(())` once resynced (following goes on from scratch), or the
/// error to stop with, its reason completed with the loss account.
pub(super) async fn handle(
    shared: &Arc<Shared>,
    fork_lsn: Option<u64>,
    reason: String,
) -> Result<(), ReplicationError> {
    let fork = fork_lsn.unwrap_or(1);
    let consumer = Arc::clone(&shared.consumer);
    let account = tokio::task::spawn_blocking(move || consumer.divergence(fork))
        .await
        .map_err(|e| ReplicationError::Protocol(e.to_string()))?;
    let divergence = match account {
        Ok(divergence) => divergence,
        Err(err) => {
            return Err(ReplicationError::Diverged {
                fork_lsn,
                reason: format!(
                    "{reason}; the local-only entries cannot be accounted for ({err}), so \
                     nothing is discarded: resync this store by hand"
                ),
            })
        }
    };
    if shared.on_diverge == OnDiverge::Stop {
        let reason = format!(
            "{reason}; it holds {}: nothing was merged. Follow again with \
             on_diverge=\"resync\" to keep them in a report file and re-seed",
            divergence.summary()
        );
        lock(&shared.state).diverged = Some(divergence);
        return Err(ReplicationError::Diverged { fork_lsn, reason });
    }
    let consumer = Arc::clone(&shared.consumer);
    let primary = shared.primary();
    let report = tokio::task::spawn_blocking(move || consumer.resync(fork, &primary))
        .await
        .map_err(|e| ReplicationError::Protocol(e.to_string()))?
        .map_err(|err| ReplicationError::Diverged {
            fork_lsn,
            reason: format!("{reason}; the resync failed: {err}"),
        })?;
    if let Some(report) = &report {
        tracing::warn!(
            primary = %shared.primary(),
            report = %report.display(),
            account = %divergence.summary(),
            "diverged: the local-only entries are in the report; re-seeding from the primary"
        );
    } else {
        tracing::warn!(
            primary = %shared.primary(),
            fork_lsn = fork,
            "diverged: discarded everything; following again from scratch"
        );
    }
    let mut state = lock(&shared.state);
    state.resyncs += 1;
    state.last_resync = Some(Resynced { divergence, report });
    state.diverged = None;
    Ok(())
}
