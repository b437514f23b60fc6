//! A promotion as messages: the candidate durably grants itself a new epoch, asks every
//! member to raise theirs, lets the real [`Election`] decide (stopping to wait at a
//! timeout), fetches what it lacks from the plan's source, and begins its epoch after
//! the adopted log. It may crash at each of those steps, and so may each member it asks,
//! before or after raising its epoch durably.

use super::invariants::Violation;
use super::member::Role;
use super::network::Msg;
use super::primary::Leading;
use super::world::{Event, World};
use super::CrashPoint;
use crate::replication::machine::promotion::{needed, Answer, Defeat, Election, Outcome, Plan};

/// A promotion under way (lost in a crash).
#[derive(Debug, Clone)]
pub(super) struct Candidacy {
    pub epoch: u64,
    election: Election,
    /// The plan it won with, once it fetches what it lacks.
    fetching: Option<Plan>,
}

impl World {
    fn candidacy(&mut self, member: usize, epoch: u64) -> Option<&mut Candidacy> {
        match self.role_in(member, epoch)? {
            Role::Candidate(candidacy) => Some(candidacy),
            _ => None,
        }
    }

    /// Schedules `timeout`, made for `member`'s current incarnation, for when a candidate
    /// stops waiting for answers or entries.
    fn time_out(&mut self, member: usize, timeout: impl FnOnce(u64) -> Event) {
        let incarnation = self.members[member].incarnation;
        let wait = 6 * self.sim.params.max_delay + 2_000;
        self.sim.timeline.after(wait, timeout(incarnation));
    }

    /// `member` starts a promotion, for the epoch after the newest it has seen.
    pub(super) fn promote(&mut self, member: usize) -> Result<(), Violation> {
        if !self.members[member].up {
            self.retry_later(member, 0);
            return Ok(());
        }
        if !matches!(self.members[member].role, Role::Follower) {
            return Ok(());
        }
        if self.crash_at(member, CrashPoint::BeforeOwnEpoch) {
            self.retry_later(member, 20_000);
            return Ok(());
        }
        let planted = self.planted();
        let epoch = self.members[member].seen + 1;
        // It grants itself as any member would: durably, and only a newer epoch.
        let Answer::Granted(own) = self.members[member].grant(epoch, planted.grant_equal) else {
            return Ok(());
        };
        let mut needed = needed(
            self.sim.config.quorum as u64,
            self.sim.config.members as u64,
        );
        if planted.one_grant_short {
            needed = needed.map(|count| count - 1);
        }
        let peers: Vec<String> = self.members.iter().map(|m| m.name.clone()).collect();
        let candidacy = Candidacy {
            epoch,
            election: Election::new(epoch, needed, own, &peers),
            fetching: None,
        };
        self.members[member].role = Role::Candidate(Box::new(candidacy));
        if self.crash_at(member, CrashPoint::AfterOwnEpoch) {
            return Ok(());
        }
        for other in 0..self.members.len() {
            if other == member {
                continue;
            }
            self.send(member, other, Msg::Raise { epoch });
            if self.crash_at(member, CrashPoint::WhileAsking) {
                return Ok(());
            }
        }
        self.time_out(member, |incarnation| Event::AskTimeout {
            member,
            incarnation,
            epoch,
        });
        // Alone, its own grant may already decide.
        self.decide(member, epoch, false)
    }

    /// Member `member` is asked by `candidate` to raise its epoch to `epoch`.
    pub(super) fn asked(&mut self, member: usize, candidate: usize, epoch: u64) {
        if self.crash_at(member, CrashPoint::BeforeGrant) {
            return;
        }
        let was_primary = self.members[member].leads().is_some();
        let grant_equal = self.planted().grant_equal;
        let answer = self.members[member].grant(epoch, grant_equal);
        if was_primary && self.members[member].leads().is_none() {
            self.report.deposed += 1;
        }
        if self.crash_at(member, CrashPoint::AfterGrant) {
            return;
        }
        self.send(member, candidate, Msg::Answer { epoch, answer });
    }

    /// The candidate of `epoch` hears `from`'s answer.
    pub(super) fn answered(
        &mut self,
        member: usize,
        from: usize,
        epoch: u64,
        answer: Answer,
    ) -> Result<(), Violation> {
        let name = self.members[from].name.clone();
        let Some(candidacy) = self.candidacy(member, epoch) else {
            return Ok(());
        };
        candidacy.election.answer(&name, answer);
        self.decide(member, epoch, false)
    }

    /// The candidate of `epoch` stops waiting for answers.
    pub(super) fn stop_asking(&mut self, member: usize, epoch: u64) -> Result<(), Violation> {
        self.decide(member, epoch, true)
    }

    /// Where the candidate of `epoch` stands, as its election says, and what it does.
    fn decide(&mut self, member: usize, epoch: u64, finished: bool) -> Result<(), Violation> {
        let force = self.sim.config.force;
        let Some(candidacy) = self.candidacy(member, epoch) else {
            return Ok(());
        };
        if candidacy.fetching.is_some() {
            return Ok(());
        }
        match candidacy.election.outcome(finished, force) {
            Outcome::Waiting => {}
            Outcome::Won(plan) => return self.won(member, plan),
            Outcome::Lost(defeat) => {
                match defeat {
                    Defeat::Outbid { epoch: seen, .. } => {
                        self.report.outbid += 1;
                        self.members[member].hear(seen);
                    }
                    Defeat::TooFew { .. } | Defeat::Unmet { .. } => self.report.too_few += 1,
                    Defeat::Forked { .. } => self.report.forked += 1,
                }
                self.members[member].role = Role::Follower;
                self.retry_later(member, 0);
            }
        }
        Ok(())
    }

    fn won(&mut self, member: usize, plan: Plan) -> Result<(), Violation> {
        if self.crash_at(member, CrashPoint::AfterWinning) {
            return Ok(());
        }
        let Some(source) = plan.fetch_from.as_ref() else {
            return self.begin(member, &plan);
        };
        let source = self
            .members
            .iter()
            .position(|m| &m.name == source)
            .expect("the plan names a member that was asked");
        let (epoch, from, to) = (
            plan.epoch,
            self.members[member].last_lsn() + 1,
            plan.adopt_lsn,
        );
        if let Some(candidacy) = self.candidacy(member, epoch) {
            candidacy.fetching = Some(plan);
        }
        self.send(member, source, Msg::Fetch { epoch, from, to });
        self.time_out(member, |incarnation| Event::FetchTimeout {
            member,
            incarnation,
            epoch,
        });
        Ok(())
    }

    /// The candidate of `epoch` receives the entries it fetched: it appends them (maybe
    /// crashing half way) and begins its epoch once it holds the adopted log.
    pub(super) fn fetched(
        &mut self,
        member: usize,
        epoch: u64,
        entries: &[super::member::Entry],
    ) -> Result<(), Violation> {
        let Some(plan) = self
            .candidacy(member, epoch)
            .and_then(|c| c.fetching.clone())
        else {
            return Ok(());
        };
        let crash_after = self.sim.rng.between(0, entries.len() as u64) as usize;
        for (index, entry) in entries.iter().enumerate() {
            if index == crash_after && self.crash_at(member, CrashPoint::MidFetch) {
                return Ok(());
            }
            let own = &mut self.members[member];
            if entry.lsn == own.last_lsn() + 1 && entry.lsn <= plan.adopt_lsn && !own.append(*entry)
            {
                // Its history ends in an epoch it began and wrote nothing in: the store
                // refuses the older entries, and this promotion cannot finish.
                self.report.diverged += 1;
                self.fetch_failed(member, epoch);
                return Ok(());
            }
        }
        if self.members[member].last_lsn() >= plan.adopt_lsn {
            return self.begin(member, &plan);
        }
        Ok(())
    }

    /// The candidate of `epoch` gives up on the entries it fetches.
    pub(super) fn fetch_failed(&mut self, member: usize, epoch: u64) {
        if self.candidacy(member, epoch).is_some() {
            self.members[member].role = Role::Follower;
            self.retry_later(member, 0);
        }
    }

    /// The winner begins its epoch after the adopted log, durably, and leads it.
    fn begin(&mut self, member: usize, plan: &Plan) -> Result<(), Violation> {
        if self.crash_at(member, CrashPoint::BeforeBegin) {
            return Ok(());
        }
        let own = &mut self.members[member];
        let last = own.last_lsn();
        own.history.begin(plan.epoch, last + 1);
        own.role = Role::Primary(Leading::new(plan.epoch, self.sim.config.members, last));
        self.report.promotions += 1;
        self.began(member, plan.epoch, plan.forced)?;
        if self.crash_at(member, CrashPoint::AfterBegin) {
            return Ok(());
        }
        self.tick_soon(member, plan.epoch);
        Ok(())
    }
}
