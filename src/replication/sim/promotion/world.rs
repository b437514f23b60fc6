//! The simulated cluster: its events, the run loop that checks the invariants after every
//! step, the network's delivery, and the faults: the first primary's failure (a crash, or
//! a cut that leaves it running), random crashes and partitions, and crashes at chosen
//! points of a promotion.

use super::super::seeded::Seeded;
use super::invariants::{Shadow, Violation};
use super::member::{Member, Role};
use super::network::{Links, Msg};
use super::primary::Leading;
use super::trace::Trace;
use super::{Config, CrashPoint, Failure, Planted, Report};
use crate::replication::machine::Micros;

/// Promotions a run may start after the first ones (retries, and the first primary
/// promoting itself), so that every run ends.
const PROMOTIONS: u64 = 6;

/// Something that happens at a simulated time.
#[derive(Debug, Clone)]
pub(super) enum Event {
    /// A writer writes to a primary.
    Write { sync: bool },
    /// Primary `member` of `epoch` ships to every other member.
    Tick { member: usize, epoch: u64 },
    /// A message arrives.
    Deliver { from: usize, to: usize, msg: Msg },
    /// The first primary crashes or is cut off.
    PrimaryFails,
    /// `member` starts a promotion.
    Promote { member: usize },
    /// The candidate of `epoch` stops waiting for answers.
    AskTimeout {
        member: usize,
        incarnation: u64,
        epoch: u64,
    },
    /// The candidate of `epoch` stops waiting for the entries it fetches.
    FetchTimeout {
        member: usize,
        incarnation: u64,
        epoch: u64,
    },
    /// A random member crashes or is cut off.
    Fault,
    /// `member` comes back after a crash.
    Restart { member: usize },
}

/// The timing of one run, drawn from its seed so that seeds cover calm and stormy worlds.
#[derive(Debug, Clone)]
pub(super) struct Params {
    /// One-way delays are drawn from 20 us up to this.
    pub max_delay: Micros,
    /// The share of messages lost.
    pub loss_per_mille: u64,
    /// The mean time between two writes.
    pub write_gap: Micros,
    /// The share of writes that are sync.
    pub sync_per_mille: u64,
    /// How often a primary ships.
    pub ship_interval: Micros,
    /// The chance of a crash at each step of a promotion.
    pub crash_per_mille: u64,
    /// The mean time between two random faults.
    pub fault_gap: Micros,
    /// The most entries one stream message carries.
    pub batch: u64,
}

/// Everything in a run.
pub(super) struct World {
    pub sim: Seeded<Config, Params, Event>,
    pub links: Links,
    pub members: Vec<Member>,
    /// Write ids handed out so far.
    pub writes: u64,
    /// Promotions left to start (retries included), so that every run ends.
    pub promotions_left: u64,
    pub shadow: Shadow,
    pub report: Report,
    pub trace: Trace,
}

impl World {
    pub fn new(seed: u64, config: Config) -> Self {
        let sim = Seeded::new(seed, config, |rng| Params {
            max_delay: rng.pick(&[200, 1_000, 3_000]),
            loss_per_mille: rng.pick(&[0, 10, 60]),
            write_gap: rng.pick(&[300, 1_000]),
            sync_per_mille: rng.pick(&[300, 1_000]),
            ship_interval: rng.pick(&[500, 2_000]),
            crash_per_mille: rng.pick(&[0, 60, 200]),
            fault_gap: rng.pick(&[8_000, 25_000]),
            batch: rng.pick(&[2, 16]),
        });
        let config = &sim.config;
        let mut members: Vec<Member> = (0..config.members).map(Member::new).collect();
        members[0].role = Role::Primary(Leading::new(1, config.members, 0));
        let mut world = Self {
            links: Links::new(config.members),
            shadow: Shadow::new(&members),
            members,
            writes: 0,
            promotions_left: PROMOTIONS,
            report: Report {
                seed,
                ..Report::default()
            },
            trace: Trace::default(),
            sim,
        };
        world.start();
        world
    }

    fn start(&mut self) {
        self.sim.timeline.at(0, Event::Write { sync: true });
        self.tick_soon(0, 1);
        self.sim
            .timeline
            .at(self.sim.params.fault_gap, Event::Fault);
        let fails_at = self
            .sim
            .rng
            .between(self.sim.config.run_for / 5, self.sim.config.run_for / 2);
        self.sim.timeline.at(fails_at, Event::PrimaryFails);
        // The candidates notice at about the same time: two promotions overlap.
        let mut candidates: Vec<usize> = (1..self.sim.config.members).collect();
        for _ in 0..self.sim.config.candidates {
            let pick = self.sim.rng.between(0, candidates.len() as u64 - 1) as usize;
            let member = candidates.swap_remove(pick);
            let notice = fails_at + self.sim.rng.between(500, 5 * self.sim.params.max_delay);
            self.sim.timeline.at(notice, Event::Promote { member });
        }
    }

    /// Runs until `config.run_for`; checks after every step.
    pub fn run(mut self) -> Result<Report, Failure> {
        while let Some((sequence, event)) = self.sim.timeline.pop() {
            if self.sim.timeline.now() > self.sim.config.run_for {
                break;
            }
            self.report.steps += 1;
            self.trace
                .record(self.report.steps, self.sim.timeline.now(), &event);
            if let Err(violation) = self.handle(event).and_then(|()| self.check()) {
                return Err(self.fail(violation));
            }
            self.trace
                .fold(self.sim.timeline.now(), sequence, self.digest());
        }
        self.report.trace_hash = self.trace.hash();
        Ok(self.report)
    }

    fn digest(&self) -> [u64; 3] {
        let entries = self.members.iter().map(Member::last_lsn).sum();
        let seen = self.members.iter().map(|m| m.seen).sum();
        [entries, seen, self.report.sync_acked]
    }

    fn fail(&self, violation: Violation) -> Failure {
        violation.failure(
            self.sim.seed,
            (self.report.steps, self.sim.timeline.now()),
            self.trace.tail(),
            self.sim.config.replay_command(self.sim.seed),
        )
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Write { sync } => return self.write(sync),
            Event::Tick { member, epoch } => self.ship_all(member, epoch),
            Event::Deliver { from, to, msg } => {
                let now = self.sim.timeline.now();
                if self.members[to].up && !self.links.cut(from, to, now) {
                    return self.deliver(from, to, msg);
                }
            }
            Event::PrimaryFails => self.primary_fails(),
            Event::Promote { member } => return self.promote(member),
            Event::AskTimeout {
                member,
                incarnation,
                epoch,
            } => {
                if self.members[member].incarnation == incarnation {
                    return self.stop_asking(member, epoch);
                }
            }
            Event::FetchTimeout {
                member,
                incarnation,
                epoch,
            } => {
                if self.members[member].incarnation == incarnation {
                    self.fetch_failed(member, epoch);
                }
            }
            Event::Fault => self.fault(),
            Event::Restart { member } => self.members[member].up = true,
        }
        Ok(())
    }

    fn deliver(&mut self, from: usize, to: usize, msg: Msg) -> Result<(), Violation> {
        match msg {
            Msg::Raise { epoch } => self.asked(to, from, epoch),
            Msg::Answer { epoch, answer } => return self.answered(to, from, epoch, answer),
            Msg::Ship(ship) => {
                let no_fork_check = self.planted().skip_fork_check;
                let was_primary = self.members[to].leads().is_some();
                let reply = self.members[to].follow(&ship, no_fork_check);
                self.note_follow(to, was_primary, reply);
                let msg = Msg::Shipped {
                    epoch: ship.epoch,
                    reply,
                };
                self.send(to, from, msg);
            }
            Msg::Shipped { epoch, reply } => return self.shipped(to, from, epoch, reply),
            Msg::Fetch {
                epoch,
                from: lo,
                to: hi,
            } => {
                let log = &self.members[to].log;
                let end = (hi as usize).min(log.len());
                let entries = log.get(lo as usize - 1..end).unwrap_or_default().to_vec();
                self.send(to, from, Msg::Fetched { epoch, entries });
            }
            Msg::Fetched { epoch, entries } => return self.fetched(to, epoch, &entries),
        }
        Ok(())
    }

    /// Sends `msg` over `from -> to`: lost if the link is cut or by chance, else FIFO
    /// after a random delay.
    pub fn send(&mut self, from: usize, to: usize, msg: Msg) {
        let now = self.sim.timeline.now();
        if self.links.cut(from, to, now) || self.sim.rng.chance(self.sim.params.loss_per_mille) {
            return;
        }
        let delay = self.sim.rng.between(20, self.sim.params.max_delay);
        let at = self.links.arrival(from, to, now, delay);
        self.sim.timeline.at(at, Event::Deliver { from, to, msg });
    }

    /// Schedules the next shipment of `member` as primary of `epoch`.
    pub fn tick_soon(&mut self, member: usize, epoch: u64) {
        let at = self.sim.rng.between(1, self.sim.params.ship_interval);
        self.sim.timeline.after(at, Event::Tick { member, epoch });
    }

    /// The first primary crashes, or is cut off from some or all members and keeps
    /// writing: a split brain until it hears of the newer epoch.
    fn primary_fails(&mut self) {
        // Back (or deposed), it may try to promote itself, on a log a newer epoch may
        // have forked from; not beside a forced promotion, which must run alone.
        if !self.sim.config.force && self.sim.rng.chance(500) {
            let at = self.sim.rng.between(5_000, self.sim.config.run_for);
            self.sim.timeline.after(at, Event::Promote { member: 0 });
        }
        if self.sim.rng.chance(500) {
            self.crash(0, CrashPoint::PrimaryFails);
            return;
        }
        self.report.split_brain = true;
        let until = self.sim.timeline.now() + self.sim.rng.between(5_000, self.sim.config.run_for);
        let everyone = self.sim.rng.chance(500);
        for other in 1..self.members.len() {
            if everyone || self.sim.rng.chance(600) {
                self.links.cut_between(0, other, until);
            }
        }
    }

    /// Crashes `member` with chance `crash_per_mille`, noting `point` in the trace.
    /// Returns whether it crashed.
    pub fn crash_at(&mut self, member: usize, point: CrashPoint) -> bool {
        if !self.sim.rng.chance(self.sim.params.crash_per_mille) {
            return false;
        }
        self.crash(member, point);
        true
    }

    /// Crashes `member`: it keeps its durable state and restarts a while later; a
    /// candidate may try again once back.
    fn crash(&mut self, member: usize, point: CrashPoint) {
        self.trace
            .note(self.report.steps, self.sim.timeline.now(), member, point);
        *self.report.crashes.entry(point).or_default() += 1;
        let was_candidate = matches!(self.members[member].role, Role::Candidate(_));
        self.members[member].crash();
        if self.planted().volatile_seen {
            let own = self.members[member].history.last_epoch();
            self.members[member].seen = own;
        }
        let back = self.sim.rng.between(1_000, 20_000);
        self.sim.timeline.after(back, Event::Restart { member });
        if was_candidate {
            self.retry_later(member, back);
        }
    }

    /// A random member crashes or is cut off from the others for a while.
    fn fault(&mut self) {
        let member = self.sim.rng.between(0, self.members.len() as u64 - 1) as usize;
        if self.members[member].up && self.sim.rng.chance(400) {
            self.crash(member, CrashPoint::Random);
        } else {
            self.report.partitions += 1;
            let until = self.sim.timeline.now() + self.sim.rng.between(2_000, 20_000);
            for other in 0..self.members.len() {
                if other != member {
                    self.links.cut_between(member, other, until);
                }
            }
        }
        let gap = self.sim.params.fault_gap;
        let next = self.sim.rng.between(gap / 2, gap * 3 / 2);
        self.sim.timeline.after(next, Event::Fault);
    }

    /// Schedules another promotion by `member`, `after` from now or later, while the run
    /// has promotions left.
    pub fn retry_later(&mut self, member: usize, after: Micros) {
        if self.promotions_left == 0 || !self.sim.rng.chance(700) {
            return;
        }
        self.promotions_left -= 1;
        let at = after + self.sim.rng.between(1_000, 10_000);
        self.sim.timeline.after(at, Event::Promote { member });
    }

    /// `member`'s role, while it is a candidate or primary of `epoch`.
    pub fn role_in(&mut self, member: usize, epoch: u64) -> Option<&mut Role> {
        let role = &mut self.members[member].role;
        let of_epoch = match role {
            Role::Follower => None,
            Role::Candidate(candidacy) => Some(candidacy.epoch),
            Role::Primary(leading) => Some(leading.epoch),
        };
        (of_epoch == Some(epoch)).then_some(role)
    }

    /// The bugs planted in this run (none outside tests).
    #[cfg_attr(not(test), allow(clippy::unused_self))] // tests plant them in the config
    pub fn planted(&self) -> Planted {
        #[cfg(test)]
        return self.sim.config.planted;
        #[cfg(not(test))]
        Planted::default()
    }
}
