//! How one node stands with a client, as a state machine without sockets or clocks: every
//! event is told the time. A node that fails is out for `retry_after`; after that one
//! caller probes it, and it serves again only once its log position has reached what the
//! client has seen (DESIGN guarantee 7: a node that missed writes while it was away must
//! not hand back the values they replaced).

use std::time::{Duration, Instant};

/// How a node stands with a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It serves its keys.
    Up,
    /// It failed (refused, broke or timed out); its keys go to the next node on the ring.
    Down,
    /// It answers, but its log position is behind what the client has seen.
    CatchingUp,
}

impl Standing {
    /// The name shown to users: `"up"`, `"down"` or `"catching_up"`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Standing::Up => "up",
            Standing::Down => "down",
            Standing::CatchingUp => "catching_up",
        }
    }
}

/// A node's log position, as `RKV.POSITION` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The last LSN it processed.
    pub lsn: u64,
    /// Whether it follows a log at all (a node that follows none has nothing to catch up).
    pub follows_log: bool,
}

/// What a request does with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send it the request.
    Use,
    /// Its time out is over and this caller checks it: ask its position, then
    /// [`Health::checked`] says whether to use it. Other callers skip it meanwhile.
    Probe,
    /// Leave it out.
    Skip,
}

/// One node's standing with the client, and the failures seen so far.
#[derive(Debug, Clone)]
pub struct Health {
    standing: Standing,
    /// When a node that is out may be probed again.
    retry_at: Option<Instant>,
    failures: u64,
    last_error: Option<String>,
    /// Invalidations from this client that did not reach it (it was down, or failed
    /// while they were sent): it may hold what they dropped everywhere else, so it is
    /// flushed before this client uses it again. Counted, so that a flush clears only the
    /// misses from before it.
    missed: u64,
}

impl Default for Health {
    /// Up: a node is trusted until it fails.
    fn default() -> Self {
        Self {
            standing: Standing::Up,
            retry_at: None,
            failures: 0,
            last_error: None,
            missed: 0,
        }
    }
}

impl Health {
    /// How it stands.
    #[must_use]
    pub fn standing(&self) -> Standing {
        self.standing
    }

    /// Times it failed.
    #[must_use]
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Why it last failed or was kept out.
    #[must_use]
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    fn due(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }

    /// Whether a request may go to it at `now`, when the client has seen `observed`.
    /// A probe pushes the next one `retry_after` away, so one caller probes at a time.
    pub fn admit(&mut self, now: Instant, observed: u64, retry_after: Duration) -> Admission {
        match self.standing {
            Standing::Up => Admission::Use,
            _ if !self.due(now) => Admission::Skip,
            // Every position has reached LSN 0: nothing to ask (unless it must be flushed).
            _ if observed == 0 && self.missed == 0 => {
                self.standing = Standing::Up;
                self.retry_at = None;
                Admission::Use
            }
            _ => {
                self.retry_at = Some(now + retry_after);
                Admission::Probe
            }
        }
    }

    /// Whether it can be sent what every reachable node gets (invalidations, INFO): any
    /// node but one that is down and not yet due.
    #[must_use]
    pub fn reachable(&self, now: Instant) -> bool {
        self.standing != Standing::Down || self.due(now)
    }

    /// It failed at `now`: out until `retry_after` has passed.
    pub fn failed(&mut self, now: Instant, retry_after: Duration, error: String) {
        self.standing = Standing::Down;
        self.retry_at = Some(now + retry_after);
        self.failures += 1;
        self.last_error = Some(error);
    }

    /// An invalidation from this client did not reach it.
    pub fn missed_invalidation(&mut self) {
        self.missed += 1;
    }

    /// The invalidations it missed so far: a flush that begins now covers them.
    #[must_use]
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// It was flushed after missing `missed` invalidations (those missed during the flush
    /// still count).
    pub fn flushed(&mut self, missed: u64) {
        self.missed -= missed.min(self.missed);
    }

    /// A probe's answer: up if it follows no log or has reached `observed`, and missed no
    /// invalidation it was not flushed for, else out for another `retry_after`. Returns
    /// whether it is up.
    pub fn checked(
        &mut self,
        now: Instant,
        retry_after: Duration,
        position: Position,
        observed: u64,
    ) -> bool {
        if self.missed > 0 {
            self.retry_at = Some(now + retry_after);
            self.last_error = Some("missed an invalidation: to be flushed first".into());
            false
        } else if !position.follows_log || position.lsn >= observed {
            self.standing = Standing::Up;
            self.retry_at = None;
            true
        } else {
            self.standing = Standing::CatchingUp;
            self.retry_at = Some(now + retry_after);
            self.last_error = Some(format!(
                "at LSN {} of the log, behind LSN {observed} seen by this client",
                position.lsn
            ));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Duration = Duration::from_secs(5);

    fn following(lsn: u64) -> Position {
        Position {
            lsn,
            follows_log: true,
        }
    }

    /// A node that failed at `t0`.
    fn failed_at(t0: Instant) -> Health {
        let mut health = Health::default();
        health.failed(t0, RETRY, "connection refused".into());
        health
    }

    #[test]
    fn test_a_node_is_used_until_it_fails_then_skipped_until_retry_after() {
        let t0 = Instant::now();
        let mut health = Health::default();
        assert_eq!(health.admit(t0, 10, RETRY), Admission::Use);
        health.failed(t0, RETRY, "timed out".into());
        assert_eq!(health.standing(), Standing::Down);
        assert_eq!(health.failures(), 1);
        assert_eq!(health.last_error(), Some("timed out"));
        assert_eq!(health.admit(t0 + RETRY / 2, 10, RETRY), Admission::Skip);
        assert!(!health.reachable(t0 + RETRY / 2));
        assert!(health.reachable(t0 + RETRY));
    }

    #[test]
    fn test_a_node_that_missed_an_invalidation_is_probed_and_kept_out_until_flushed() {
        let t0 = Instant::now();
        let mut health = failed_at(t0);
        health.missed_invalidation();
        let t1 = t0 + RETRY;
        // Even with nothing observed (no log followed), it is probed, not simply used.
        assert_eq!(health.admit(t1, 0, RETRY), Admission::Probe);
        assert!(!health.checked(t1, RETRY, following(0), 0));
        let before_flush = health.missed();
        health.missed_invalidation(); // one more while the flush ran: still owed
        health.flushed(before_flush);
        assert_eq!(health.missed(), 1);
        let t2 = t1 + RETRY;
        assert_eq!(health.admit(t2, 0, RETRY), Admission::Probe);
        health.flushed(health.missed());
        assert!(health.checked(t2, RETRY, following(0), 0));
        assert_eq!(health.admit(t2, 0, RETRY), Admission::Use);
    }

    #[test]
    fn test_one_caller_probes_a_returning_node_and_the_others_skip_it() {
        let t0 = Instant::now();
        let mut health = failed_at(t0);
        let t1 = t0 + RETRY;
        assert_eq!(health.admit(t1, 10, RETRY), Admission::Probe);
        assert_eq!(health.admit(t1, 10, RETRY), Admission::Skip);
        assert_eq!(health.standing(), Standing::Down);
    }

    #[test]
    fn test_a_returning_node_behind_the_observed_lsn_stays_out_until_it_catches_up() {
        let t0 = Instant::now();
        let mut health = failed_at(t0);
        let t1 = t0 + RETRY;
        assert_eq!(health.admit(t1, 10, RETRY), Admission::Probe);
        assert!(!health.checked(t1, RETRY, following(9), 10));
        assert_eq!(health.standing(), Standing::CatchingUp);
        // Still answering, so invalidations reach it; reads do not.
        assert!(health.reachable(t1));
        assert_eq!(health.admit(t1 + RETRY / 2, 10, RETRY), Admission::Skip);
        let t2 = t1 + RETRY;
        assert_eq!(health.admit(t2, 10, RETRY), Admission::Probe);
        assert!(health.checked(t2, RETRY, following(10), 10));
        assert_eq!(health.standing(), Standing::Up);
        assert_eq!(health.admit(t2, 11, RETRY), Admission::Use);
    }

    #[test]
    fn test_a_returning_node_that_follows_no_log_is_used_at_once() {
        let t0 = Instant::now();
        let mut health = failed_at(t0);
        assert_eq!(health.admit(t0 + RETRY, 10, RETRY), Admission::Probe);
        let standalone = Position {
            lsn: 0,
            follows_log: false,
        };
        assert!(health.checked(t0 + RETRY, RETRY, standalone, 10));
        assert_eq!(health.standing(), Standing::Up);
    }

    #[test]
    fn test_nothing_observed_needs_no_probe() {
        let t0 = Instant::now();
        let mut health = failed_at(t0);
        assert_eq!(health.admit(t0 + RETRY, 0, RETRY), Admission::Use);
        assert_eq!(health.standing(), Standing::Up);
        assert_eq!(health.failures(), 1);
    }

    #[test]
    fn test_a_failed_probe_keeps_the_node_down_for_another_retry_after() {
        let t0 = Instant::now();
        let mut health = failed_at(t0);
        let t1 = t0 + RETRY;
        assert_eq!(health.admit(t1, 10, RETRY), Admission::Probe);
        health.failed(t1, RETRY, "connection refused".into());
        assert_eq!(health.failures(), 2);
        assert_eq!(health.admit(t1 + RETRY / 2, 10, RETRY), Admission::Skip);
        assert_eq!(health.admit(t1 + RETRY, 10, RETRY), Admission::Probe);
    }
}
