//! Promotion (DESIGN §1): a replica becomes the primary of a new epoch, at run time and
//! without reopening its store.
//!
//! The rule: a sync write is acknowledged once `quorum` of the `members` registered
//! replicas hold it, so any `members - quorum + 1` of them include one that holds every
//! acknowledged write. This build reaches only the promoted replica itself, so it promotes
//! when that suffices (`members <= quorum`, e.g. one replica with quorum 1) and refuses
//! otherwise, unless `force`, which reports the range no reached member holds.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::Replica;
use crate::error::{ReplicationError, Result};
use crate::replication::primary::{Primary, PrimaryOptions};
use crate::store::{Store, StoreOptions};

/// What a promotion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The new epoch.
    pub epoch: u64,
    /// The first LSN of the new epoch.
    pub start_lsn: u64,
    /// The members reached (their names), itself included.
    pub reached: Vec<String>,
    /// How many members the rule asked for (`members - quorum + 1`; 0 if unknown).
    pub needed: u64,
    /// Whether it was forced past the rule.
    pub forced: bool,
    /// Entries the old primary had committed (as last heard from it) that no reached
    /// member holds: lost unless the old primary's directory is recovered (its loss report
    /// lists them). Only async writes are in it, unless the promotion was forced. The old
    /// primary may have committed more after its last heartbeat.
    pub possible_loss: Option<(u64, u64)>,
}

/// The promotion rule for a replica alone: how many members the old primary's
/// `quorum` and `members` ask a promotion to reach (0 if unknown), and why this replica
/// alone is not enough (`None` when it is).
fn rule(quorum: u64, members: u64, counted: bool) -> (u64, Option<String>) {
    let needed = if quorum == 0 || members == 0 {
        0
    } else {
        members.saturating_sub(quorum) + 1
    };
    let refusal = if needed == 0 {
        Some(
            "no heartbeat from the primary told how many members a promotion must reach".to_owned(),
        )
    } else if !counted {
        Some(
            "this replica does not fsync (fsync=False): it may not hold the acknowledged writes"
                .to_owned(),
        )
    } else if needed > 1 {
        Some(format!(
            "the primary had {members} replicas and quorum {quorum}: a promotion must reach \
             {needed} of them, and reaching other members is not built yet"
        ))
    } else {
        None
    };
    (needed, refusal)
}

fn refused(name: &str, reason: &str) -> crate::Error {
    ReplicationError::Refused {
        reason: format!(
            "cannot promote {name:?}: {reason}; force=True promotes anyway and reports the \
             possible loss"
        ),
    }
    .into()
}

/// Makes the store at `path` (a stopped replica's) the primary of a new epoch, by the same
/// rule as [`Replica::promote`] (with what its primary's heartbeats last said), without
/// serving it: serve it next (`replikv primary --data DIR`).
///
/// # Errors
/// As [`Replica::promote`]; [`crate::error::StoreError::Locked`] while a replica runs on
/// it; a store that is not a replica's.
pub fn promote_stopped(path: &Path, force: bool) -> Result<Promotion> {
    // Opened as a plain store: only a replica's store (read-only then) may be promoted.
    let store = Store::open(path, StoreOptions::default())?;
    let heard = (store.primary_quorum()?, store.was_counted()?);
    let promoted = promote_store(&store, &path.display().to_string(), heard, force, None);
    store.close()?;
    promoted
}

/// Applies the rule to `store` (a follower) with what its primary's heartbeats said
/// (`(quorum, members)`, and whether it counted), then switches it to the next epoch.
/// `last_heard` is the old primary's last LSN as a running replica heard it.
fn promote_store(
    store: &Store,
    name: &str,
    ((quorum, members), counted): ((u64, u64), bool),
    force: bool,
    last_heard: Option<u64>,
) -> Result<Promotion> {
    let (needed, refusal) = rule(quorum, members, counted);
    if let (Some(reason), false) = (&refusal, force) {
        return Err(refused(name, reason));
    }
    let flushed = store.last_lsn();
    store.stop_following()?;
    let epoch = store.epoch() + 1;
    store.begin_epoch(epoch)?;
    let promotion = Promotion {
        epoch,
        start_lsn: flushed + 1,
        reached: vec![name.to_owned()],
        needed,
        forced: refusal.is_some(),
        possible_loss: last_heard
            .filter(|&last| last > flushed)
            .map(|last| (flushed + 1, last)),
    };
    tracing::warn!(%name, epoch, start_lsn = flushed + 1, forced = promotion.forced, "promoted");
    Ok(promotion)
}

impl Replica {
    /// Stops following, makes this replica's store the primary of a new epoch (one above
    /// the highest it has seen) and serves it with `options`.
    ///
    /// # Errors
    /// [`ReplicationError::Refused`] when the rule is not met (too many members to reach,
    /// no heartbeat heard yet, or a replica that does not fsync) and `force` is not set:
    /// nothing changes then, and it keeps following. A storage failure, or the primary
    /// cannot listen.
    pub fn promote(&self, options: PrimaryOptions, force: bool) -> Result<(Primary, Promotion)> {
        // Checked first, while it still follows: a refusal changes nothing.
        let state = self.state();
        let heard = (
            (state.primary_quorum, state.primary_members),
            self.shared.consumer.durable(),
        );
        let (_, refusal) = rule(heard.0 .0, heard.0 .1, heard.1);
        if let (Some(reason), false) = (&refusal, force) {
            return Err(refused(self.name(), reason));
        }
        self.stop_task();
        let store = self.store.clone();
        let last = Some(state.primary_last_lsn);
        let promotion = promote_store(&store, self.name(), heard, force, last)?;
        self.promoted.store(true, Ordering::Release);
        let primary = Primary::start(store, options)?;
        // The former primary may only be cut off: it must learn it is deposed.
        primary.depose(self.primary());
        Ok((primary, promotion))
    }
}
