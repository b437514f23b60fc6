//! Promotion (DESIGN §1): a replica becomes the primary of a new epoch, at run time and
//! without reopening its store.
//!
//! The rule: a sync write is acknowledged once `quorum` of the `members` registered
//! replicas hold it, so any `members - quorum + 1` of them include one that holds every
//! acknowledged write. This build reaches only the promoted replica itself, so it promotes
//! when that suffices (`members <= quorum`, e.g. one replica with quorum 1) and refuses
//! otherwise, unless `force`, which reports the range no reached member holds.

use std::sync::atomic::Ordering;

use super::Replica;
use crate::error::{ReplicationError, Result};
use crate::replication::primary::{Primary, PrimaryOptions};

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
        let state = self.state();
        let (quorum, members) = (state.primary_quorum, state.primary_members);
        let needed = if quorum == 0 || members == 0 {
            0
        } else {
            members.saturating_sub(quorum) + 1
        };
        let durable = self.shared.consumer.durable();
        let refusal = if needed == 0 {
            Some(
                "no heartbeat from the primary told how many members a promotion must reach"
                    .to_owned(),
            )
        } else if !durable {
            Some("this replica does not fsync (fsync=False): it may not hold the acknowledged writes".to_owned())
        } else if needed > 1 {
            Some(format!(
                "the primary had {members} replicas and quorum {quorum}: a promotion must reach \
                 {needed} of them, and reaching other members is not built yet"
            ))
        } else {
            None
        };
        if let (Some(reason), false) = (&refusal, force) {
            return Err(ReplicationError::Refused {
                reason: format!("cannot promote {:?}: {reason}; force=True promotes anyway and reports the possible loss", self.name()),
            }
            .into());
        }
        self.stop_task();
        let store = self.store.clone();
        let flushed = store.last_lsn();
        store.stop_following()?;
        let epoch = store.epoch() + 1;
        store.begin_epoch(epoch)?;
        self.promoted.store(true, Ordering::Release);
        let possible_loss =
            (state.primary_last_lsn > flushed).then_some((flushed + 1, state.primary_last_lsn));
        let promotion = Promotion {
            epoch,
            start_lsn: flushed + 1,
            reached: vec![self.name().to_owned()],
            needed,
            forced: refusal.is_some(),
            possible_loss,
        };
        tracing::warn!(replica = %self.name(), epoch, start_lsn = flushed + 1, forced = promotion.forced, "promoted");
        let primary = Primary::start(store, options)?;
        // The former primary may only be cut off: it must learn it is deposed.
        primary.depose(self.primary());
        Ok((primary, promotion))
    }
}
