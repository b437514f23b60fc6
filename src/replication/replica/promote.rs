//! Promotion (DESIGN §1): a replica becomes the primary of a new epoch, at run time and
//! without reopening its store.
//!
//! The rule (see [`crate::replication::machine::promotion`]): a sync write is acknowledged
//! once `quorum` of the `members` counting replicas hold it, so any `members - quorum + 1`
//! of them include one that holds every acknowledged write. A running replica asks the
//! members its primary's heartbeats named; a stopped one (`replikv promote DIR`) reaches
//! only itself. Without enough members it refuses, unless `force`, which reports the
//! possible loss.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::elect::{self, Ballot, Link};
use super::{lock, remembered, Replica};
use crate::error::{ReadOnlyReason, ReplicationError, Result};
use crate::net::runtime;
use crate::replication::handover::HandedMember;
use crate::replication::handover::Settings;
use crate::replication::machine::promotion::{
    needed, Defeat, Election, MemberLog, Outcome, Plan, View,
};
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
    /// The old primary's settings, as its heartbeats last said (`None` if none said): what
    /// the new primary serves with unless told otherwise.
    pub settings: Option<Settings>,
}

/// Why a promotion with what a replica heard (`needed` members, `counted` itself) cannot
/// win however the members answer (`None` when it may try). `peers` is how many other
/// members it can ask; `None` for a stopped replica (`replikv promote DIR`), which asks
/// none, whether or not they listen.
fn hopeless(needed: Option<u64>, counted: bool, peers: Option<usize>) -> Option<String> {
    let Some(needed) = needed else {
        return Some(
            "no heartbeat from the primary told how many members a promotion must reach".to_owned(),
        );
    };
    let reachable = u64::from(counted) + peers.unwrap_or(0) as u64;
    (reachable < needed).then(|| {
        let own = if counted {
            ""
        } else {
            " (this replica does not fsync, so it does not count)"
        };
        match peers {
            Some(_) => format!(
                "a promotion must reach {needed} members that fsync, and only {reachable} \
                 are known{own}: the others do not listen (start replicas with listen=)"
            ),
            None => format!(
                "a promotion must reach {needed} members that fsync, and replikv promote \
                 reaches no member but this stopped replica{own}: run it as a replica with \
                 listen= and promote it running (Replica.promote() asks the members its \
                 primary named, which it keeps in its directory)"
            ),
        }
    })
}

fn refused(name: &str, reason: &str) -> crate::Error {
    ReplicationError::Refused {
        reason: format!(
            "cannot promote '{name}': {reason}; forcing (force=True, replikv promote --force) \
             promotes anyway and reports the possible loss"
        ),
    }
    .into()
}

/// A promotion that lost to another one: forcing would not help (two primaries of one
/// epoch are never made).
fn outbid(name: &str, reason: &str) -> crate::Error {
    ReplicationError::Refused {
        reason: format!(
            "cannot promote '{name}': {reason}; forcing does not override that: follow \
             the primary of that epoch, or, if none serves it (a switchover whose target \
             stopped before it took over), promote that member"
        ),
    }
    .into()
}

/// Makes the store at `path` (a stopped replica's) the primary of a new epoch, by the same
/// rule as [`Replica::promote`] (with what its primary's heartbeats last said), without
/// serving it: serve it next with [`Promotion::settings`] (`replikv primary --data DIR`
/// and the options `replikv promote` prints).
///
/// # Errors
/// As [`Replica::promote`]; [`crate::error::StoreError::Locked`] while a replica runs on
/// it; a store that is not a replica's.
pub fn promote_stopped(path: &Path, force: bool) -> Result<Promotion> {
    // A mistyped path must not become an empty store that is then promoted (or refused
    // only for lacking heartbeats).
    Store::must_exist(path, "no replikv store to promote at")?;
    // Opened as a plain store: only a replica's store (read-only then) may be promoted.
    let store = Store::open(path, StoreOptions::default())?;
    if store.read_only_reason() != Some(ReadOnlyReason::BelongsToReplica) {
        store.close()?;
        return Err(ReplicationError::Refused {
            reason: format!(
                "{} is not a replica's directory (a primary's, or a detached store): it takes \
                 writes already, there is nothing to promote",
                path.display()
            ),
        }
        .into());
    }
    let (quorum, members) = store.primary_quorum()?;
    let needed = needed(quorum, members);
    let refusal = hopeless(needed, store.was_counted()?, None);
    // Named as a replica is by default: by its directory's name.
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    if let (Some(reason), false) = (&refusal, force) {
        return Err(refused(&name, reason));
    }
    // Forced, a promotion goes on without damaged settings (printed as unknown); unforced,
    // it never leaves the operator to serve with defaults weaker than the old primary's.
    let settings = match (remembered::settings(path), force) {
        (Ok(settings), _) => settings,
        (Err(damage), false) => {
            store.close()?;
            return Err(ReplicationError::Refused {
                reason: format!(
                    "cannot promote '{name}': the old primary's settings cannot be read back \
                     ({damage}), so nothing says how to serve it; forcing (force=True, \
                     replikv promote --force) promotes it, to be served with the quorum and \
                     table modes the old primary had"
                ),
            }
            .into());
        }
        (Err(damage), true) => {
            tracing::warn!(%damage, "promoted without the old primary's settings");
            None
        }
    };
    let promoted = begin(&store, &name, needed, refusal.is_some(), settings);
    store.close()?;
    promoted
}

/// Makes `store` (a stopped replica's, which alone holds enough) the primary of the next
/// epoch.
fn begin(
    store: &Store,
    name: &str,
    needed: Option<u64>,
    forced: bool,
    settings: Option<Settings>,
) -> Result<Promotion> {
    store.stop_following()?;
    let flushed = store.last_lsn();
    let epoch = store.epoch() + 1;
    store.begin_epoch(epoch)?;
    tracing::info!(%name, epoch, start_lsn = flushed + 1, forced, "promoted");
    Ok(Promotion {
        epoch,
        start_lsn: flushed + 1,
        reached: vec![name.to_owned()],
        needed: needed.unwrap_or(0),
        forced,
        possible_loss: None,
        settings,
    })
}

/// Why a promotion lost, for a person.
fn defeat_reason(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Lost(Defeat::Outbid { member, epoch }) => {
            format!(
                "member {member:?} has seen epoch {epoch}: another promotion or a switchover \
                 got there first"
            )
        }
        Outcome::Lost(Defeat::TooFew {
            counted,
            needed,
            unreachable,
        }) => {
            let missing: Vec<String> = unreachable
                .iter()
                .map(|(name, why)| format!("{name} ({why})"))
                .collect();
            format!(
                "only {counted} of the {} members a promotion must reach granted its epoch; \
                 not reached: {}",
                needed.unwrap_or(0),
                if missing.is_empty() {
                    "none".to_owned()
                } else {
                    missing.join(", ")
                }
            )
        }
        Outcome::Lost(Defeat::Unmet {
            member,
            replaced: true,
            ..
        }) => format!(
            "member {member:?} recorded another store directory under this replica's name: \
             this directory was replaced by another one since, which counts in its place; \
             promote {member:?} instead"
        ),
        Outcome::Lost(Defeat::Unmet {
            member,
            counted,
            needed,
            replaced: false,
        }) => format!(
            "member {member:?} recorded a membership this replica never heard of (a replica \
             joined or left, or a promotion changed the quorum), by which only {counted} of \
             the {needed} members a promotion must reach granted: promote {member:?} \
             instead, or bring its members back"
        ),
        Outcome::Lost(Defeat::Forked { member, fork_lsn }) => format!(
            "member {member:?} holds a newer log that forked from this replica's at LSN \
             {fork_lsn}: promote {member:?} instead, or resync this replica"
        ),
        Outcome::Won(_) | Outcome::Waiting => "the promotion did not finish".to_owned(),
    }
}

impl Replica {
    /// Promotes this replica by the rule of DESIGN §1: asks every member its primary's
    /// heartbeats named to raise its epoch to a new one, and once `members - quorum + 1`
    /// members that fsync granted it (itself included), adopts the newest log among them
    /// (fetching what it lacks), begins its epoch after it and serves it with `options`.
    /// The members that granted then follow it; the old primary is told it is deposed.
    ///
    /// # Errors
    /// [`ReplicationError::Refused`] when the rule cannot be met (too few members known or
    /// answering, no heartbeat heard yet) and `force` is not set, when another promotion
    /// got a member first, or when a member holds a newer log that forked from this one.
    /// A refusal before any member was asked changes nothing; after, the members that
    /// granted keep the raised epoch (the old primary is deposed for them), and this
    /// replica follows again. `options.listen` cannot be listened on (found before any
    /// member is asked, so nothing changes). A storage failure.
    pub fn promote(&self, options: PrimaryOptions, force: bool) -> Result<(Primary, Promotion)> {
        let state = self.state();
        let needed = needed(state.primary_quorum, state.primary_members);
        let counted = self.shared().consumer.counted_member();
        let peers: Vec<(String, String)> = state
            .primary_peers
            .iter()
            .filter(|(name, _)| name != self.name())
            .cloned()
            .collect();
        // Checked first, while it still follows: a refusal changes nothing.
        if let (Some(reason), false) = (hopeless(needed, counted, Some(peers.len())), force) {
            return Err(refused(self.name(), &reason));
        }
        // So is where it will serve: found out after the members granted, a bad address
        // left them and this store in the new epoch with no primary.
        crate::net::server::check_can_listen(&options.listen, self.listen_address())?;
        let store_id = self.store().store_id()?;
        self.follower.pause();
        let epoch = self.store().epoch() + 1;
        if !self.grant_self(epoch)? {
            self.follower.restart();
            return Err(outbid(
                self.name(),
                "another promotion raised its epoch first",
            ));
        }
        let own = MemberLog {
            name: self.name().to_owned(),
            flushed_lsn: self.store().synced_lsn(),
            history: self.store().epoch_history(),
            counted,
            // Its own membership is what `needed` counts by; it names each member's
            // directory.
            view: View {
                ids: state.primary_member_ids.clone(),
                ..View::default()
            },
            store_id,
        };
        let names: Vec<String> = peers.iter().map(|(name, _)| name.clone()).collect();
        let election = Election::new(epoch, needed, own, &names);
        let token = self.shared().options.token.clone().unwrap_or_default();
        let ballot = Ballot {
            token: token.as_bytes(),
            name: self.name(),
            epoch,
        };
        let (outcome, links) = runtime().block_on(elect::run(election, peers, &ballot, force));
        let Outcome::Won(plan) = outcome else {
            self.follower.restart();
            let reason = defeat_reason(&outcome);
            return Err(match outcome {
                Outcome::Lost(Defeat::Outbid { .. }) => outbid(self.name(), &reason),
                _ => refused(self.name(), &reason),
            });
        };
        let promotion = Promotion {
            epoch,
            start_lsn: plan.adopt_lsn + 1,
            reached: plan.reached.clone(),
            needed: needed.unwrap_or(0),
            forced: plan.forced,
            possible_loss: (state.primary_last_lsn > plan.adopt_lsn)
                .then_some((plan.adopt_lsn + 1, state.primary_last_lsn)),
            settings: state.primary_settings.clone().ok().flatten(),
        };
        let primary = self.take_over(&plan, links, options)?;
        tracing::info!(name = %self.name(), epoch, start_lsn = promotion.start_lsn, reached = ?promotion.reached, forced = promotion.forced, "promoted");
        Ok((primary, promotion))
    }

    /// Raises its own epoch to `epoch` as a member would for a candidate (nothing more is
    /// appended from an older primary); false if it had seen that epoch already.
    fn grant_self(&self, epoch: u64) -> Result<bool> {
        let mut granted = lock(&self.shared().granted);
        let rose = self.store().raise_epoch(epoch)?;
        if rose {
            *granted = epoch;
        }
        Ok(rose)
    }

    /// After winning: fetches what the adopted log holds beyond this one, begins the epoch,
    /// serves it, and tells the members that granted to follow.
    fn take_over(
        &self,
        plan: &Plan,
        mut links: BTreeMap<String, Link>,
        options: PrimaryOptions,
    ) -> Result<Primary> {
        if let Some(from) = &plan.fetch_from {
            let fetched = match links.get_mut(from) {
                Some(link) => {
                    runtime().block_on(link.fetch(self.store(), plan.epoch, plan.adopt_lsn))
                }
                None => Err(ReplicationError::Protocol(format!("no link to {from:?}"))),
            };
            if let Err(err) = fetched {
                self.follower.restart();
                // Forcing would adopt the same log, and fetch the same way.
                return Err(ReplicationError::Refused {
                    reason: format!(
                        "cannot promote '{}': it must adopt {from:?}'s newer log, and fetching \
                         it up to LSN {} failed: {err}; forcing does not help: promote \
                         {from:?}, which holds it (the members that granted keep epoch {}: \
                         the old primary is deposed for them)",
                        self.name(),
                        plan.adopt_lsn,
                        plan.epoch
                    ),
                }
                .into());
            }
        }
        // Another promotion may have asked this replica meanwhile (its member server still
        // answers): then it lost, and it stays a replica.
        if self.store().epoch() > plan.epoch {
            self.follower.restart();
            return Err(refused(
                self.name(),
                &format!(
                    "epoch {} was granted to another promotion while this one ran",
                    self.store().epoch()
                ),
            ));
        }
        // A primary answers no promotion: its member address may be the one it serves at.
        self.side.stop_member_server();
        self.store().stop_following()?;
        self.store().begin_epoch(plan.epoch)?;
        self.promoted.store(true, Ordering::Release);
        let primary = Primary::start(self.store().clone(), options)?;
        self.shared()
            .became_primary(plan.epoch, &primary.address().to_string());
        for (name, flushed_lsn) in &plan.followers {
            let store_id = plan
                .ids
                .iter()
                .find(|(of, _)| of == name)
                .map(|(_, id)| *id);
            // Every member a promotion reached granted it: none is still joining.
            let member = HandedMember {
                name: name.clone(),
                store_id: store_id.unwrap_or(0),
                joining: false,
            };
            primary.expect(&[member], *flushed_lsn);
        }
        let address = primary.address().to_string();
        runtime().block_on(async {
            for link in links.into_values() {
                link.lead(&address).await;
            }
        });
        // The former primary may only be cut off: it must learn it is deposed.
        primary.depose(self.primary());
        Ok(primary)
    }
}
