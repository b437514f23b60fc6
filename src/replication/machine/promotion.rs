//! Promotion's decisions (DESIGN §1), with no sockets or clocks: a member's answer to a
//! candidate, and the candidate's count of those answers.
//!
//! The rule: a sync write returns once `quorum` of the `members` counting replicas hold it,
//! so any `members - quorum + 1` of them include one that holds every acknowledged write.
//! A candidate asks every member it knows of to raise its epoch to the candidate's new one;
//! a member grants an epoch only if it is newer than every epoch it has seen, and records it
//! durably before it answers, so that no two candidates are ever granted the same epoch by
//! one member. Once enough members granted, the candidate adopts the longest log among
//! them (fetching what it lacks from the member that holds it) and starts its epoch after
//! it.

use std::collections::BTreeMap;

use serde_derive::{Deserialize, Serialize};

use crate::store::{fork_lsn, EpochHistory};

/// The furthest a grant moves a member's epoch: a candidate asks for one more than the
/// newest it has seen, which is at most a few failovers past this member's. A bound keeps
/// a confused or hostile candidate from spending the epochs (at `u64::MAX` no promotion
/// could ever follow).
pub const MAX_EPOCH_STEP: u64 = 1 << 20;

/// Whether a member that has seen `seen` grants `epoch` to a candidate: only a newer one,
/// so that a member grants each epoch at most once, and not past [`MAX_EPOCH_STEP`].
#[must_use]
pub fn grants(seen: u64, epoch: u64) -> bool {
    epoch > seen && epoch - seen <= MAX_EPOCH_STEP
}

/// How many counting members a promotion must reach: `members - quorum + 1`, and never
/// fewer than a majority, or `None` while the primary's `quorum` and `members` are unknown
/// (0).
///
/// `members - quorum + 1` alone makes each promotion meet every quorum that acknowledged
/// a write. The majority makes any two promotions of one epoch meet at a member, which
/// grants that epoch to only one of them: without it (a quorum above half the members)
/// two candidates could each win the same epoch from disjoint members, and two logs under
/// one epoch history are a fork that `fork_lsn` cannot see (the promotion simulator found
/// a member appending one such primary's entries after the other's).
#[must_use]
pub fn needed(quorum: u64, members: u64) -> Option<u64> {
    (quorum > 0 && members > 0).then(|| (members.saturating_sub(quorum) + 1).max(members / 2 + 1))
}

/// The membership a replica last recorded from its primary's heartbeats: what a
/// promotion by it counts on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// The primary's quorum (0: never heard).
    pub quorum: u64,
    /// Its counting members.
    pub members: u64,
    /// Those that listen for a promotion, by name.
    pub names: Vec<String>,
    /// The store directory of each member whose id it heard, `(name, store id)`: a
    /// member counts toward this membership only from that directory.
    #[serde(default)]
    pub ids: Vec<(String, u64)>,
}

impl View {
    /// Whether `name` from the store `store_id` is the member this view names so: an id
    /// that is unknown on either side (0, or not heard) is not told apart.
    #[must_use]
    pub fn names_store(&self, name: &str, store_id: u64) -> bool {
        store_id == 0
            || self
                .ids
                .iter()
                .all(|(named, id)| named != name || *id == 0 || *id == store_id)
    }
}

/// A member's log as it reports it when it grants an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLog {
    /// Its name.
    pub name: String,
    /// The last LSN durable in its log.
    pub flushed_lsn: u64,
    /// The epochs its log went through.
    pub history: EpochHistory,
    /// Whether it counts toward the quorum (it fsyncs, and did when its primary last
    /// counted it).
    pub counted: bool,
    /// The membership it recorded. For the candidate's own, only its `ids` count (the
    /// candidate counts by `needed`): a member that answers from another directory than
    /// they name is not counted.
    pub view: View,
    /// The id of its store directory (0: unknown).
    pub store_id: u64,
}

impl MemberLog {
    /// `(epoch, lsn)` of its last entry: logs compare by it.
    fn last_id(&self) -> (u64, u64) {
        (self.history.epoch_at(self.flushed_lsn), self.flushed_lsn)
    }
}

/// The last LSN `log` shares with `adopted`: its end, or, if it went on in an older epoch
/// past where the adopted log forks from it, the LSN before the fork.
fn shared_end(log: &MemberLog, adopted: &MemberLog) -> u64 {
    let end = log.flushed_lsn.min(adopted.flushed_lsn);
    fork_lsn(
        &log.history,
        log.flushed_lsn,
        &adopted.history,
        adopted.flushed_lsn,
    )
    .map_or(end, |fork| end.min(fork.saturating_sub(1)))
}

/// What a promotion does once it has won.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The new epoch.
    pub epoch: u64,
    /// The last LSN of the old epochs: the end of the newest log among the members reached.
    pub adopt_lsn: u64,
    /// Where to fetch the entries after the candidate's own log, up to `adopt_lsn`, from
    /// (`None` when the candidate holds them all).
    pub fetch_from: Option<String>,
    /// The members that granted the epoch, the candidate first.
    pub reached: Vec<String>,
    /// The members that granted and count toward a quorum, but for the candidate, each
    /// with the end of its log as far as the adopted one goes: the new primary expects
    /// them, so that a sync write right after the promotion waits for them to reconnect
    /// (it is refused when too few replicas are known).
    pub followers: Vec<(String, u64)>,
    /// The store directory of each member that granted, `(name, store id)`: the new
    /// primary's heartbeats name them from the start.
    pub ids: Vec<(String, u64)>,
    /// Whether it was forced past the rule.
    pub forced: bool,
}

/// Why a promotion cannot win.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Defeat {
    /// A member has seen `epoch` (not older than the candidate's): another promotion got
    /// there first.
    Outbid {
        /// Who refused.
        member: String,
        /// The epoch it has seen.
        epoch: u64,
    },
    /// Too few counting members granted the epoch, and every answer is in.
    TooFew {
        /// Counting members that granted (the candidate included if it counts).
        counted: u64,
        /// How many the rule asks for (`None`: unknown).
        needed: Option<u64>,
        /// Members that could not be asked, and why.
        unreachable: Vec<(String, String)>,
    },
    /// A member holds a newer log than the candidate's that does not contain it: the
    /// candidate's entries from `fork_lsn` on were never the newer epoch's, and adopting
    /// that log would silently drop them (promote that member instead, or resync this
    /// one).
    Forked {
        /// The member.
        member: String,
        /// The first LSN at which their logs differ.
        fork_lsn: u64,
    },
    /// A member that granted recorded another membership than the candidate's (newer: a
    /// replica joined or left since the candidate last heard, or a promotion changed the
    /// quorum), by which too few of its members granted: a write that membership
    /// acknowledged may be on none of them.
    Unmet {
        /// The member.
        member: String,
        /// Its members that granted.
        counted: u64,
        /// How many of them its membership asks for.
        needed: u64,
        /// That membership names another store directory under the candidate's name: the
        /// candidate's directory was replaced, and it does not count for that membership.
        replaced: bool,
    },
}

/// Where a promotion stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answers that could change the outcome are still out.
    Waiting,
    /// It may promote.
    Won(Plan),
    /// It may not.
    Lost(Defeat),
}

/// A candidate's count of its members' answers.
#[derive(Debug, Clone)]
pub struct Election {
    epoch: u64,
    needed: Option<u64>,
    own: MemberLog,
    /// Every other member asked, and its answer once in.
    answers: BTreeMap<String, Option<Answer>>,
}

/// A member's answer to a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It raised its epoch durably; this is its log.
    Granted(MemberLog),
    /// It has seen `seen`, not older than the candidate's epoch.
    Refused {
        /// The newest epoch it has seen.
        seen: u64,
    },
    /// It could not be asked (unreachable, or it failed): why.
    Unreachable(String),
}

impl Election {
    /// A candidate with log `own`, which has durably raised itself to `epoch`, about to ask
    /// `peers`; `needed` as [`needed`] says.
    #[must_use]
    pub fn new(epoch: u64, needed: Option<u64>, own: MemberLog, peers: &[String]) -> Self {
        let answers = peers
            .iter()
            .filter(|peer| **peer != own.name)
            .map(|peer| (peer.clone(), None))
            .collect();
        Self {
            epoch,
            needed,
            own,
            answers,
        }
    }

    /// The epoch it stands for.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Records `member`'s answer (answers from members not asked are ignored, as are
    /// second answers). A grant from another store directory than the one the
    /// candidate's membership names under `member` is not that member's: it counts as
    /// unreachable (the directory was replaced, and the old one started again).
    pub fn answer(&mut self, member: &str, answer: Answer) {
        let answer = match answer {
            Answer::Granted(log) if !self.own.view.names_store(member, log.store_id) => {
                Answer::Unreachable(format!(
                    "{member} answered from another store directory (id {:016x}) than the \
                     one its primary counted under that name",
                    log.store_id
                ))
            }
            answer => answer,
        };
        if let Some(slot @ None) = self.answers.get_mut(member) {
            *slot = Some(answer);
        }
    }

    /// The members that granted, the candidate first.
    fn granted(&self) -> impl Iterator<Item = &MemberLog> {
        std::iter::once(&self.own).chain(self.answers.values().filter_map(|a| match a {
            Some(Answer::Granted(log)) => Some(log),
            _ => None,
        }))
    }

    fn counted(&self) -> u64 {
        self.granted().filter(|log| log.counted).count() as u64
    }

    /// The first member that granted whose recorded membership is not met: fewer of its
    /// members granted than its rule asks. Every membership a member reports counts, not
    /// only the candidate's: the candidate's may be older than a join, a departure or a
    /// promotion it never heard of, and a write acknowledged since is on members of the
    /// newer one only.
    fn unmet(&self) -> Option<Defeat> {
        self.granted().skip(1).find_map(|log| {
            let view = &log.view;
            let needed = needed(view.quorum, view.members)?;
            let counted = self
                .granted()
                .filter(|g| {
                    g.counted
                        && view.names.contains(&g.name)
                        && view.names_store(&g.name, g.store_id)
                })
                .count() as u64;
            (counted < needed).then(|| Defeat::Unmet {
                member: log.name.clone(),
                counted,
                needed,
                replaced: !view.names_store(&self.own.name, self.own.store_id),
            })
        })
    }

    /// Where it stands. `finished`: no more answers will come (all are in, or the caller
    /// stopped waiting). While enough members granted but answers are still out, it waits
    /// (a later answer may hold a longer log, which loses fewer async writes); `force`
    /// wins with whoever granted once `finished`, reporting the possible loss.
    #[must_use]
    pub fn outcome(&self, finished: bool, force: bool) -> Outcome {
        if let Some((member, seen)) = self.answers.iter().find_map(|(name, a)| match a {
            Some(Answer::Refused { seen }) if *seen >= self.epoch => Some((name, *seen)),
            _ => None,
        }) {
            return Outcome::Lost(Defeat::Outbid {
                member: member.clone(),
                epoch: seen,
            });
        }
        let all_in = self.answers.values().all(Option::is_some);
        let enough = self.needed.is_some_and(|needed| self.counted() >= needed);
        if !(all_in || finished) {
            return Outcome::Waiting;
        }
        let unmet = self.unmet();
        if let (Some(defeat), true, false) = (unmet.clone(), enough, force) {
            return Outcome::Lost(defeat);
        }
        if !enough && !force {
            return Outcome::Lost(Defeat::TooFew {
                counted: self.counted(),
                needed: self.needed,
                unreachable: self
                    .answers
                    .iter()
                    .filter_map(|(name, a)| match a {
                        Some(Answer::Unreachable(why)) => Some((name.clone(), why.clone())),
                        None => Some((name.clone(), "no answer".to_owned())),
                        _ => None,
                    })
                    .collect(),
            });
        }
        self.plan(!enough || unmet.is_some())
    }

    fn plan(&self, forced: bool) -> Outcome {
        let own = &self.own;
        // The newest log: the one whose last entry has the highest epoch, then the longest
        // (a log that went on in a newer epoch holds what that epoch's primary acknowledged);
        // among equals the candidate's own, then the first by name.
        let longest = self.granted().fold(own, |best, log| {
            if log.last_id() > best.last_id() {
                log
            } else {
                best
            }
        });
        if longest.name != own.name {
            let fork = fork_lsn(
                &own.history,
                own.flushed_lsn,
                &longest.history,
                longest.flushed_lsn,
            );
            if let Some(fork_lsn) = fork.filter(|&lsn| lsn <= own.flushed_lsn) {
                return Outcome::Lost(Defeat::Forked {
                    member: longest.name.clone(),
                    fork_lsn,
                });
            }
        }
        Outcome::Won(Plan {
            epoch: self.epoch,
            adopt_lsn: longest.flushed_lsn,
            fetch_from: (longest.name != own.name).then(|| longest.name.clone()),
            reached: self.granted().map(|log| log.name.clone()).collect(),
            followers: self
                .granted()
                .skip(1)
                .filter(|log| log.counted)
                .map(|log| (log.name.clone(), shared_end(log, longest)))
                .collect(),
            ids: self
                .granted()
                .skip(1)
                .map(|log| (log.name.clone(), log.store_id))
                .collect(),
            forced,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(name: &str, flushed_lsn: u64, history: &[(u64, u64)]) -> MemberLog {
        MemberLog {
            name: name.into(),
            flushed_lsn,
            history: EpochHistory::new(history.to_vec()).unwrap(),
            counted: true,
            view: View::default(),
            store_id: 0,
        }
    }

    fn peers(names: &[&str]) -> Vec<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    #[test]
    fn a_member_grants_only_an_epoch_newer_than_any_it_has_seen() {
        assert!(grants(3, 4));
        assert!(!grants(4, 4));
        assert!(!grants(5, 4));
        assert!(grants(1, 1 + MAX_EPOCH_STEP));
        assert!(
            !grants(1, u64::MAX),
            "a hostile epoch would leave no next one"
        );
    }

    #[test]
    fn the_rule_asks_for_members_minus_quorum_plus_one() {
        assert_eq!(needed(1, 2), Some(2));
        assert_eq!(needed(2, 3), Some(2));
        assert_eq!(needed(1, 5), Some(5));
        assert_eq!(needed(0, 2), None);
    }

    #[test]
    fn the_rule_asks_for_a_majority_so_that_one_epoch_has_one_winner() {
        // A quorum of every member would need only the candidate itself: two candidates
        // could both win the same epoch, each granted by itself alone.
        assert_eq!(needed(2, 2), Some(2));
        assert_eq!(needed(3, 3), Some(2));
        assert_eq!(needed(3, 4), Some(3));
        assert_eq!(needed(4, 5), Some(3));
        assert_eq!(needed(1, 1), Some(1));
        for members in 1..=9 {
            for quorum in 1..=members {
                let needed = needed(quorum, members).unwrap();
                assert!(
                    2 * needed > members,
                    "two winners of one epoch would share a member"
                );
                assert!(
                    needed + quorum > members,
                    "a promotion meets every write quorum"
                );
            }
        }
    }

    #[test]
    fn it_waits_for_every_answer_then_adopts_the_longest_log() {
        let mut e = Election::new(
            2,
            Some(2),
            log("a", 10, &[(1, 1)]),
            &peers(&["a", "b", "c"]),
        );
        assert_eq!(e.outcome(false, false), Outcome::Waiting);
        let mut b = log("b", 12, &[(1, 1)]);
        b.store_id = 0xb;
        e.answer("b", Answer::Granted(b));
        assert_eq!(e.outcome(false, false), Outcome::Waiting, "c may hold more");
        e.answer("c", Answer::Unreachable("refused".into()));
        let Outcome::Won(plan) = e.outcome(false, false) else {
            panic!("two of three granted")
        };
        assert_eq!(plan.adopt_lsn, 12);
        assert_eq!(plan.fetch_from.as_deref(), Some("b"));
        assert_eq!(plan.reached, peers(&["a", "b"]));
        assert_eq!(plan.followers, vec![("b".to_owned(), 12)]);
        assert_eq!(
            plan.ids,
            vec![("b".to_owned(), 0xb)],
            "the new primary names b's directory"
        );
        assert!(!plan.forced);
    }

    #[test]
    fn the_new_primary_expects_the_members_that_granted_and_count_each_at_its_log_end() {
        let mut e = Election::new(
            2,
            Some(1),
            log("a", 10, &[(1, 1)]),
            &peers(&["b", "c", "d"]),
        );
        e.answer("b", Answer::Granted(log("b", 7, &[(1, 1)])));
        let mut lazy = log("c", 10, &[(1, 1)]);
        lazy.counted = false;
        e.answer("c", Answer::Granted(lazy));
        e.answer("d", Answer::Unreachable("refused".into()));
        let Outcome::Won(plan) = e.outcome(true, false) else {
            panic!("the candidate alone is enough")
        };
        assert_eq!(plan.reached, peers(&["a", "b", "c"]));
        assert_eq!(
            plan.followers,
            vec![("b".to_owned(), 7)],
            "c does not fsync, d did not grant, a is the candidate"
        );
    }

    #[test]
    fn a_member_whose_log_went_on_in_an_older_epoch_is_expected_from_before_its_fork() {
        // b took entries 9 to 12 from the epoch-1 primary; a, the newest log, began
        // epoch 2 at 9 after a promotion b did not see.
        let mut e = Election::new(3, Some(1), log("a", 10, &[(1, 1), (2, 9)]), &peers(&["b"]));
        e.answer("b", Answer::Granted(log("b", 12, &[(1, 1)])));
        let Outcome::Won(plan) = e.outcome(true, false) else {
            panic!("a's log is the newest")
        };
        assert_eq!(plan.adopt_lsn, 10);
        assert_eq!(plan.followers, vec![("b".to_owned(), 8)]);
    }

    #[test]
    fn too_few_lose_unless_forced_and_a_newer_epoch_always_loses() {
        let mut e = Election::new(2, Some(2), log("a", 10, &[(1, 1)]), &peers(&["b"]));
        e.answer("b", Answer::Unreachable("timed out".into()));
        assert!(matches!(
            e.outcome(true, false),
            Outcome::Lost(Defeat::TooFew { counted: 1, .. })
        ));
        let Outcome::Won(plan) = e.outcome(true, true) else {
            panic!("force wins")
        };
        assert!(plan.forced);
        let mut e = Election::new(2, Some(1), log("a", 10, &[(1, 1)]), &peers(&["b"]));
        e.answer("b", Answer::Refused { seen: 2 });
        assert!(matches!(
            e.outcome(true, true),
            Outcome::Lost(Defeat::Outbid { epoch: 2, .. })
        ));
    }

    fn viewing(mut log: MemberLog, quorum: u64, names: &[&str]) -> MemberLog {
        log.view = View {
            quorum,
            members: names.len() as u64,
            names: peers(names),
            ids: Vec::new(),
        };
        log
    }

    #[test]
    fn a_membership_a_member_recorded_and_the_candidate_never_heard_of_must_be_met_too() {
        // The candidate last heard of a, b and c with quorum 1 (it must reach all three).
        // b and c since heard that c left and d joined: a write only d acknowledged may
        // be on none of a, b and c.
        let newer = |name: &str| viewing(log(name, 10, &[(1, 1)]), 1, &["a", "b", "d"]);
        let mut e = Election::new(2, Some(3), log("c", 10, &[(1, 1)]), &peers(&["a", "b"]));
        e.answer("a", Answer::Granted(newer("a")));
        e.answer("b", Answer::Granted(newer("b")));
        assert_eq!(
            e.outcome(true, false),
            Outcome::Lost(Defeat::Unmet {
                member: "a".into(),
                counted: 2,
                needed: 3,
                replaced: false,
            })
        );
        let Outcome::Won(plan) = e.outcome(true, true) else {
            panic!("force wins")
        };
        assert!(plan.forced, "and says it was forced");
        // The same membership as the candidate's, or one never heard (quorum 0), is met.
        let mut e = Election::new(2, Some(2), log("a", 10, &[(1, 1)]), &peers(&["b"]));
        e.answer(
            "b",
            Answer::Granted(viewing(log("b", 10, &[(1, 1)]), 1, &["a", "b"])),
        );
        assert!(matches!(
            e.outcome(true, false),
            Outcome::Won(Plan { forced: false, .. })
        ));
        let mut e = Election::new(2, Some(2), log("a", 10, &[(1, 1)]), &peers(&["b"]));
        e.answer(
            "b",
            Answer::Granted(viewing(log("b", 10, &[(1, 1)]), 0, &[])),
        );
        assert!(matches!(e.outcome(true, false), Outcome::Won(_)));
    }

    /// `log` from the store directory `store_id`, naming each member's directory as `ids`.
    fn from_store(mut log: MemberLog, store_id: u64, ids: &[(&str, u64)]) -> MemberLog {
        log.store_id = store_id;
        log.view.ids = ids.iter().map(|&(n, id)| (n.to_owned(), id)).collect();
        log
    }

    #[test]
    fn a_grant_from_another_directory_than_the_one_a_membership_names_does_not_count() {
        // Members a, b, c (quorum 1: reach all three). c's directory was replaced by c2,
        // and the old one, started again, answers as c.
        let ids = [("a", 0xa), ("b", 0xb), ("c", 0xc2)];
        let own = from_store(log("a", 10, &[(1, 1)]), 0xa, &ids);
        let mut e = Election::new(2, Some(3), own, &peers(&["b", "c"]));
        let member = |name, id| {
            from_store(
                viewing(log(name, 10, &[(1, 1)]), 1, &["a", "b", "c"]),
                id,
                &ids,
            )
        };
        e.answer("b", Answer::Granted(member("b", 0xb)));
        e.answer("c", Answer::Granted(member("c", 0xc)));
        let Outcome::Lost(Defeat::TooFew {
            counted,
            unreachable,
            ..
        }) = e.outcome(true, false)
        else {
            panic!("the old directory is not c")
        };
        assert_eq!(counted, 2);
        assert!(
            unreachable[0].1.contains("another store directory"),
            "{unreachable:?}"
        );
        // The old directory as the candidate: b's membership names c2 under c.
        let stale = [("a", 0xa), ("b", 0xb), ("c", 0xc)];
        let own = from_store(log("c", 10, &[(1, 1)]), 0xc, &stale);
        let mut e = Election::new(2, Some(3), own, &peers(&["a", "b"]));
        e.answer("a", Answer::Granted(member("a", 0xa)));
        e.answer("b", Answer::Granted(member("b", 0xb)));
        assert!(matches!(
            e.outcome(true, false),
            Outcome::Lost(Defeat::Unmet {
                counted: 2,
                needed: 3,
                replaced: true,
                ..
            })
        ));
        // Ids unknown on either side tell nothing apart (as before they were heard).
        let own = from_store(log("c", 10, &[(1, 1)]), 0, &[]);
        let mut e = Election::new(2, Some(3), own, &peers(&["a", "b"]));
        e.answer("a", Answer::Granted(member("a", 0xa)));
        e.answer("b", Answer::Granted(member("b", 0xb)));
        assert!(matches!(e.outcome(true, false), Outcome::Won(_)));
    }

    #[test]
    fn a_candidate_that_does_not_count_needs_others_to_count() {
        let mut own = log("lazy", 10, &[(1, 1)]);
        own.counted = false;
        let e = Election::new(2, Some(1), own, &[]);
        assert!(matches!(
            e.outcome(true, false),
            Outcome::Lost(Defeat::TooFew { .. })
        ));
    }

    #[test]
    fn a_log_that_went_on_in_a_newer_epoch_wins_over_a_longer_older_one() {
        let mut e = Election::new(4, Some(1), log("a", 11, &[(1, 1), (2, 8)]), &peers(&["b"]));
        e.answer(
            "b",
            Answer::Granted(log("b", 10, &[(1, 1), (2, 8), (3, 10)])),
        );
        assert!(matches!(
            e.outcome(true, false),
            Outcome::Lost(Defeat::Forked { fork_lsn: 10, .. })
        ));
    }

    #[test]
    fn a_longer_log_that_forked_from_the_candidates_is_never_adopted() {
        let mut e = Election::new(4, Some(1), log("a", 10, &[(1, 1), (2, 8)]), &peers(&["b"]));
        e.answer("b", Answer::Granted(log("b", 12, &[(1, 1), (3, 8)])));
        assert_eq!(
            e.outcome(true, false),
            Outcome::Lost(Defeat::Forked {
                member: "b".into(),
                fork_lsn: 8
            })
        );
    }
}
