//! The simulated world: its events, the run loop that checks the invariants after every
//! step, the writers, and the primary's log with its group-committed fsyncs.

use std::collections::{BTreeMap, VecDeque};

use super::disk::SimDisk;
use super::invariants::{describe, Trace, Violation};
use super::network::{Frame, Network, Side};
use super::peer::Node;
use super::seeded::Seeded;
use super::{Config, Failure, FaultCounts, Report};
use crate::codec::{encode_ops, frame_record, Op, RECORD_HEADER_LEN};
use crate::replication::machine::{LinkId, Micros, PrimaryConfig, PrimaryMachine};
use crate::replication::protocol::PeerKind;

/// The only epoch of a run: promotion is the next issue's simulation.
pub(super) const EPOCH: u64 = 1;

/// Something that happens at a simulated time.
#[derive(Debug, Clone)]
pub(super) enum Event {
    /// A writer commits a write.
    Write { sync: bool },
    /// The primary's fsync of entries up to `lsn` completed.
    PrimaryFsynced { lsn: u64, incarnation: u64 },
    /// The primary is lost: the run ends.
    PrimaryLost,
    /// The primary, which lost power, starts again from its durable log.
    PrimaryRestart,
    /// The primary's end of `generation` asked to be polled at `at`.
    Poll { generation: u64, at: Micros },
    /// A frame arrives at the `to` end of `generation`.
    Deliver {
        generation: u64,
        to: Side,
        frame: Frame,
    },
    /// A copy of a frame of connection `generation` arrives late, maybe after the
    /// connection was replaced; `link` is the primary's id for that connection.
    Stale {
        node: usize,
        generation: u64,
        to: Side,
        link: Option<LinkId>,
        frame: Frame,
    },
    /// The `side` end of `generation` learns that it ended.
    SeeCut {
        node: usize,
        generation: u64,
        side: Side,
    },
    /// Peer `node`'s fsync up to `lsn` completed.
    PeerFsynced {
        node: usize,
        lsn: u64,
        incarnation: u64,
    },
    /// Peer `node` tries to connect.
    Connect { node: usize },
    /// Peer `node` comes back after a crash.
    Restart { node: usize },
    /// The fault injector strikes.
    Fault,
    /// Faults and writes stop; partitions heal.
    Heal,
}

/// The timing of one run, drawn from its seed so that seeds cover calm and stormy worlds.
#[derive(Debug, Clone)]
pub(super) struct Params {
    /// One-way network delays are drawn from 20 us up to this.
    pub max_delay: Micros,
    /// Fsync latencies are drawn from 20 us up to this.
    pub max_fsync: Micros,
    /// The mean time between two writes.
    pub write_gap: Micros,
    /// The share of writes that are sync.
    pub sync_per_mille: u64,
    /// The mean time between two faults.
    pub fault_gap: Micros,
    /// The share of frames of which a copy arrives late, maybe on a replaced connection.
    pub stale_per_mille: u64,
    /// The share of entry frames repeated or reordered within their connection.
    pub misorder_per_mille: u64,
    /// The share of entries shipped in parts, as entries too large for one frame are.
    pub split_per_mille: u64,
    /// The most entries one `Ship` reads.
    pub batch: u64,
    /// The share of replicas that hold entries back from their readers (and so are
    /// shipped entries before the primary's fsync ends).
    pub hold_back_per_mille: u64,
    /// The share of faults that are a power loss of the primary.
    pub primary_crash_per_mille: u64,
    /// Whether the primary ships ahead to replicas that hold back (else they are shipped
    /// durable entries only, and hold back only what a restart hides).
    pub ship_ahead: bool,
}

/// Everything in a run.
pub(super) struct World {
    pub sim: Seeded<Config, Params, Event>,
    pub net: Network,
    pub primary: PrimaryMachine,
    pub log: SimDisk,
    pub nodes: Vec<Node>,
    /// LSNs of sync writes waiting for the quorum, in order.
    pub sync_waiting: VecDeque<u64>,
    /// The highest LSN of a sync write returned to its writer.
    pub sync_returned_lsn: u64,
    pub report: Report,
    pub trace: Trace,
    pub healed: bool,
    /// False while the primary is down after a power loss.
    pub primary_up: bool,
    /// The newest connection when the primary last lost power: frames of it and older
    /// ones belong to a process that is gone.
    pub primary_born_at: u64,
    /// Each counting replica, by the number of counting replicas it made when it first
    /// joined (no replica leaves in a run, so every membership since counts it).
    pub join_rank: BTreeMap<String, u64>,
    /// The primary's durable slots: `(fsync, joining)` by replica name, remembered when
    /// it restarts.
    pub slots: BTreeMap<String, (bool, bool)>,
}

impl World {
    pub fn new(seed: u64, config: Config) -> Self {
        let mut sim = Seeded::new(seed, config, |rng| Params {
            max_delay: rng.pick(&[200, 1_000, 5_000]),
            max_fsync: rng.pick(&[100, 1_000, 4_000]),
            write_gap: rng.pick(&[200, 1_000, 3_000]),
            sync_per_mille: rng.pick(&[200, 500, 1_000]),
            fault_gap: rng.pick(&[5_000, 20_000, 60_000]),
            stale_per_mille: rng.pick(&[0, 5, 30]),
            misorder_per_mille: rng.pick(&[0, 2, 10]),
            split_per_mille: rng.pick(&[0, 100]),
            batch: rng.pick(&[1, 4, 16]),
            hold_back_per_mille: rng.pick(&[0, 500, 1_000]),
            primary_crash_per_mille: rng.pick(&[0, 30, 150]),
            ship_ahead: rng.pick(&[false, true]),
        });
        let (config, rng) = (&sim.config, &mut sim.rng);
        let primary_config = PrimaryConfig {
            quorum: config.quorum,
            ship_interval: rng.pick(&[0, 500, 2_000]),
            heartbeat_interval: 10_000,
            stall_timeout: 50_000,
            catch_up_entries: rng.pick(&[4, 64]),
        };
        #[allow(unused_mut)] // planted bugs exist in test builds only
        let mut primary = PrimaryMachine::new(primary_config, 0);
        #[cfg(test)]
        {
            primary.planted = config.planted;
        }
        let kinds = std::iter::repeat_n((PeerKind::Replica, true), config.replicas)
            .chain(std::iter::repeat_n(
                (PeerKind::Replica, false),
                config.lazy_replicas,
            ))
            .chain(std::iter::repeat_n(
                (PeerKind::Consumer, false),
                config.consumers,
            ));
        let holding_share = sim.params.hold_back_per_mille;
        #[allow(unused_mut)] // planted bugs exist in test builds only
        let mut nodes: Vec<Node> = kinds
            .enumerate()
            .map(|(index, (kind, fsync))| {
                let holds_back = kind == PeerKind::Replica && sim.rng.chance(holding_share);
                Node::new(index, kind, fsync, holds_back)
            })
            .collect();
        #[cfg(test)]
        for node in &mut nodes {
            node.planted = config.planted;
            node.machine = node.fresh_machine();
        }
        let mut world = Self {
            report: Report {
                seed,
                steps: 0,
                ended_at: 0,
                writes: 0,
                sync_returned: 0,
                primary_lost: false,
                faults: FaultCounts::default(),
                trace_hash: 0,
            },
            sim,
            net: Network::default(),
            primary,
            log: SimDisk::default(),
            nodes,
            sync_waiting: VecDeque::new(),
            sync_returned_lsn: 0,
            trace: Trace::default(),
            healed: false,
            primary_up: true,
            primary_born_at: 0,
            join_rank: BTreeMap::new(),
            slots: BTreeMap::new(),
        };
        world.start();
        world
    }

    fn start(&mut self) {
        for node in 0..self.nodes.len() {
            let at = self.sim.rng.between(0, self.sim.params.max_delay);
            self.sim.timeline.at(at, Event::Connect { node });
        }
        let sync = self.sim.rng.chance(self.sim.params.sync_per_mille);
        self.sim.timeline.at(0, Event::Write { sync });
        self.sim
            .timeline
            .at(self.sim.params.fault_gap, Event::Fault);
        self.sim.timeline.at(self.sim.config.run_for, Event::Heal);
        if self.sim.rng.chance(250) {
            let at = self.sim.rng.between(0, self.sim.config.run_for);
            self.sim.timeline.at(at, Event::PrimaryLost);
        }
    }

    /// Runs until the primary is lost or everyone caught up; checks after every step.
    pub fn run(mut self) -> Result<Report, Failure> {
        let deadline = self.sim.config.run_for + self.sim.config.catch_up_within;
        while let Some((sequence, event)) = self.sim.timeline.pop() {
            self.report.steps += 1;
            self.trace
                .push(self.report.steps, self.sim.timeline.now(), event.clone());
            let outcome = if self.sim.timeline.now() > deadline {
                Err(self.lagging())
            } else {
                self.handle(event).and_then(|()| self.check())
            };
            let outcome = outcome.and_then(|()| {
                if self.report.primary_lost {
                    self.after_primary_loss()
                } else {
                    Ok(())
                }
            });
            if let Err(violation) = outcome {
                return Err(self.fail(violation));
            }
            self.trace
                .fold(self.sim.timeline.now(), sequence, self.outcome_digest());
            if self.report.primary_lost || (self.healed && self.settled()) {
                break;
            }
        }
        self.report.ended_at = self.sim.timeline.now();
        self.report.trace_hash = self.trace.hash();
        Ok(self.report)
    }

    fn outcome_digest(&self) -> [u64; 3] {
        [
            self.log.len(),
            self.primary.quorum_lsn(),
            self.sync_returned_lsn,
        ]
    }

    fn fail(&self, violation: Violation) -> Failure {
        violation.failure(
            self.sim.seed,
            (self.report.steps, self.sim.timeline.now()),
            self.trace.tail(describe),
            self.sim.config.replay_command(self.sim.seed),
        )
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Write { sync } => self.write(sync),
            Event::PrimaryFsynced { lsn, incarnation } => {
                if !self.log.fsynced(lsn, incarnation) {
                    return Ok(());
                }
                self.primary.visible(lsn);
                self.release()?;
                self.start_primary_fsync();
                self.drive_all();
            }
            Event::PrimaryLost => self.report.primary_lost = true,
            Event::PrimaryRestart => self.primary_restart(),
            Event::Poll { generation, at } => {
                let due = self
                    .net
                    .conn_mut(generation)
                    .filter(|c| c.wake_at == Some(at));
                if let Some(conn) = due {
                    conn.wake_at = None;
                    self.drive(generation);
                }
            }
            Event::Deliver {
                generation,
                to: Side::Primary,
                frame,
            } => return self.primary_receives(generation, frame),
            Event::Deliver {
                generation,
                to: Side::Peer,
                frame,
            } => return self.peer_receives(generation, frame),
            Event::Stale {
                node,
                generation,
                to,
                link,
                frame,
            } => return self.stale(node, generation, to, link, frame),
            Event::SeeCut {
                node,
                generation,
                side,
            } => self.see_cut(node, generation, side),
            Event::PeerFsynced {
                node,
                lsn,
                incarnation,
            } => return self.peer_fsynced(node, lsn, incarnation),
            Event::Connect { node } => self.connect(node),
            Event::Restart { node } => self.restart(node),
            Event::Fault => self.fault(),
            Event::Heal => self.heal(),
        }
        Ok(())
    }

    fn write(&mut self, sync: bool) {
        // Writers of a primary that is down get an error and try again later.
        if self.primary_up {
            let lsn = self.log.len() + 1;
            let payload = self.entry(lsn);
            self.log.append(payload);
            self.report.writes += 1;
            if sync {
                // As the real glue does: the machine learns of the wait before the entry
                // is visible.
                self.sync_waiting.push_back(lsn);
                self.primary.sync_wanted(lsn);
            }
            self.start_primary_fsync();
            // Written, not durable: links to peers that hold back ship it now.
            self.primary.written(lsn);
            self.drive_all();
        }
        if !self.healed {
            let gap = self.sim.rng.between(1, 2 * self.sim.params.write_gap);
            let sync = self.sim.rng.chance(self.sim.params.sync_per_mille);
            self.sim.timeline.after(gap, Event::Write { sync });
        }
    }

    /// A real entry payload (the codec's framing with a header stripped), so the replica
    /// machine reads its LSN and epoch as it would from the wire.
    fn entry(&mut self, lsn: u64) -> Vec<u8> {
        let table = if self.sim.rng.chance(500) {
            "subscribers"
        } else {
            "events"
        };
        let key = self.sim.rng.next_u64().to_be_bytes().to_vec();
        let value = self
            .sim
            .rng
            .chance(900)
            .then(|| vec![0x80; self.sim.rng.between(0, 40) as usize]);
        let body = encode_ops(&[Op {
            table: table.to_owned(),
            key,
            value,
        }]);
        let mut record = Vec::new();
        let now_ms = self.sim.timeline.now() / 1_000;
        frame_record(
            &mut record,
            lsn,
            EPOCH,
            now_ms,
            &body,
            crc32c::crc32c(&body),
        );
        record.split_off(RECORD_HEADER_LEN)
    }

    fn start_primary_fsync(&mut self) {
        if let Some((lsn, incarnation)) = self.log.start_fsync() {
            let latency = self.sim.rng.between(20, self.sim.params.max_fsync);
            self.sim
                .timeline
                .after(latency, Event::PrimaryFsynced { lsn, incarnation });
        }
    }

    /// Returns sync writes the quorum now covers and that are visible here, in LSN order
    /// (a replica that holds back acks entries the primary has not made durable yet). From
    /// a primary that does not ship ahead, each must be shown to readers on at least
    /// `quorum` counting replicas as it returns (promise 3: durably applied), which is
    /// checked here: a replica that restarts later may hide it again for a while, until
    /// its primary confirms it. From one that ships ahead, it must be durable on them (as
    /// always, see [`World::check`]); they show it once told it is durable here.
    pub(super) fn release(&mut self) -> Result<(), Violation> {
        let covered = self.primary.quorum_lsn().min(self.primary.visible_lsn());
        while let Some(lsn) = self.sync_waiting.front().copied().filter(|l| *l <= covered) {
            self.sync_waiting.pop_front();
            self.sync_returned_lsn = lsn;
            self.report.sync_returned += 1;
            if !self.sim.params.ship_ahead {
                self.shown_on_quorum(lsn)?;
            }
        }
        Ok(())
    }

    /// A network delay of this run.
    pub(super) fn delay(&mut self) -> Micros {
        self.sim.rng.between(20, self.sim.params.max_delay)
    }

    /// The `side` of `node`'s connection `generation` notices it was cut, a network delay
    /// from now.
    pub(super) fn tell_cut(&mut self, node: usize, generation: u64, side: Side) {
        let delay = self.delay();
        let event = Event::SeeCut {
            node,
            generation,
            side,
        };
        self.sim.timeline.after(delay, event);
    }
}
