//! The handshake's decisions, free of sockets: token proofs, who may connect, and where a
//! peer may resume.

use std::net::IpAddr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::protocol::{PeerKind, RefuseCode};

/// Domain separation: a proof made by one side can never be replayed as the other's.
const PEER_ROLE: &[u8] = b"replikv/1 peer";
const PRIMARY_ROLE: &[u8] = b"replikv/1 primary";

/// Which side proves the token.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// The connecting replica or consumer.
    Peer,
    /// The primary.
    Primary,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Peer => PEER_ROLE,
            Role::Primary => PRIMARY_ROLE,
        }
    }
}

fn mac(token: &[u8], role: Role, nonce: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(token)
        .expect("invariant: HMAC takes keys of any length");
    mac.update(role.label());
    mac.update(nonce);
    mac
}

/// 32 random bytes for a challenge.
///
/// # Panics
/// If the operating system has no randomness to give (nothing sensible can go on).
#[must_use]
pub fn nonce() -> Vec<u8> {
    let mut bytes = vec![0u8; 32];
    getrandom::fill(&mut bytes).expect("invariant: the OS random source is available");
    bytes
}

/// HMAC-SHA256 proof that `role` knows `token`, bound to the other side's `nonce`. The
/// token itself never crosses the wire.
#[must_use]
pub fn prove(token: &[u8], role: Role, nonce: &[u8]) -> Vec<u8> {
    mac(token, role, nonce).finalize().into_bytes().to_vec()
}

/// Checks a proof in constant time.
#[must_use]
pub fn verify(token: &[u8], role: Role, nonce: &[u8], proof: &[u8]) -> bool {
    mac(token, role, nonce).verify_slice(proof).is_ok()
}

/// Why a peer's `proof` of the token (for `nonce`) failed, for a person: a peer that
/// proves the empty token was given none, and a side with no token (`token` empty) was
/// given one by the peer; otherwise the two tokens differ. Says nothing of either token.
#[must_use]
pub fn unproven(token: &[u8], role: Role, nonce: &[u8], proof: &[u8]) -> &'static str {
    if token.is_empty() {
        "wrong token: this side has no token, and the peer gave one"
    } else if verify(b"", role, nonce, proof) {
        "no token was given, and this side requires one (token=, --token or $REPLIKV_TOKEN)"
    } else {
        "wrong token"
    }
}

/// Whether a peer may connect: with a token anyone who proves it may; without one, only
/// peers on this machine (loopback), so that an unconfigured primary is never open to the
/// network.
#[must_use]
pub fn peer_allowed(token_configured: bool, peer: IpAddr) -> bool {
    token_configured || peer.is_loopback() || peer.to_canonical().is_loopback()
}

/// What the primary holds about one LSN of its log, for a resume decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogView {
    /// The oldest LSN the log retains.
    pub oldest_lsn: u64,
    /// The last visible LSN.
    pub last_lsn: u64,
    /// The primary's `(epoch, crc)` at the peer's resume point, if it retains it.
    pub id_at_resume: Option<(u64, u32)>,
    /// Where the peer's epoch history first disagrees with the primary's (see
    /// [`crate::store::fork_lsn`]); `None` if it agrees, or the peer sent no history.
    pub fork_lsn: Option<u64>,
}

impl LogView {
    /// This view of a log whose entries before `lsn` cannot be read (damaged): as if
    /// retention had dropped them, so that a peer that needs them is seeded by a snapshot.
    #[must_use]
    pub fn unreadable_below(self, lsn: u64) -> Self {
        Self {
            oldest_lsn: self.oldest_lsn.max(lsn),
            ..self
        }
    }
}

/// Why a peer may not resume where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The refusal code sent to the peer.
    pub code: RefuseCode,
    /// Why, for a person.
    pub reason: String,
    /// For a divergence: the first LSN the histories disagree on, if known.
    pub fork_lsn: Option<u64>,
}

impl Denied {
    /// A refusal with no fork to report.
    pub fn new(code: RefuseCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            fork_lsn: None,
        }
    }
}

/// Where a peer that says it holds everything up to `flushed_lsn` (identified by
/// `flushed_id`) may resume: after `flushed_lsn`, or refused with a reason. A fork is
/// found before anything else: a diverged peer is never re-seeded by a snapshot, which
/// would silently drop the entries only it holds.
///
/// # Errors
/// The refusal code and a reason for a person (and the fork LSN of a divergence).
pub fn resume_decision(
    flushed_lsn: u64,
    flushed_id: (u64, u32),
    log: LogView,
) -> Result<u64, Denied> {
    if let Some(fork) = log.fork_lsn {
        return Err(Denied {
            code: RefuseCode::Diverged,
            reason: format!(
                "the peer's history forks from the primary's at LSN {fork}: it holds {} \
                 entries from there that the primary does not have",
                flushed_lsn.saturating_sub(fork) + 1
            ),
            fork_lsn: Some(fork),
        });
    }
    if flushed_lsn > log.last_lsn {
        return Err(Denied {
            code: RefuseCode::Diverged,
            reason: format!(
                "the peer has LSN {flushed_lsn} but the primary's log ends at {}: it holds writes the primary does not",
                log.last_lsn
            ),
            fork_lsn: Some(log.last_lsn + 1),
        });
    }
    if flushed_lsn > 0 && flushed_lsn < log.oldest_lsn {
        return Err(Denied::new(
            RefuseCode::NeedsSnapshot,
            format!(
                "the peer's position {flushed_lsn} is older than the primary's log (oldest retained LSN {})",
                log.oldest_lsn
            ),
        ));
    }
    if flushed_lsn == 0 && log.oldest_lsn > 1 {
        return Err(Denied::new(
            RefuseCode::NeedsSnapshot,
            format!(
                "an empty peer needs a snapshot: the log starts at LSN {}",
                log.oldest_lsn
            ),
        ));
    }
    match log.id_at_resume {
        Some(id) if id == flushed_id => Ok(flushed_lsn),
        Some((epoch, crc)) => Err(Denied::new(
            RefuseCode::Diverged,
            format!(
                "histories fork at LSN {flushed_lsn}: the peer has (epoch {}, crc {:#010x}), the primary (epoch {epoch}, crc {crc:#010x})",
                flushed_id.0, flushed_id.1
            ),
        )),
        None => Err(Denied::new(
            RefuseCode::NeedsSnapshot,
            format!("LSN {flushed_lsn} is not retained"),
        )),
    }
}

/// What a replica that holds back shows its readers, by the entries its hello names
/// (`held`, from its confirmed one on): its confirmed LSN, or nothing if it names none.
/// Entries after it count toward a sync write of a primary that does not ship ahead only
/// once it acks them shown (one that ships ahead counts what it holds durably).
#[must_use]
pub fn shown_of(held: &[(u64, (u64, u32))]) -> u64 {
    held.first().map_or(0, |(lsn, _)| *lsn)
}

/// Where a replica that holds entries back from its readers resumes. `held` names each
/// entry of its log from the last one its primary said was durable (its confirmed LSN) to
/// its end, `(lsn, (epoch, crc))`, in order; `view(lsn)` is the primary's log as of `lsn`.
/// It resumes after the last entry of an unbroken run from the confirmed one that the
/// primary holds the same: the entries after it were shipped before the primary's
/// fdatasync ended and lost with its page cache (or are not written there yet), and no
/// reader saw them, so the replica cuts them. The confirmed entry itself must resume as
/// [`resume_decision`] says, or the replica is refused as it says.
///
/// # Errors
/// As [`resume_decision`] for the confirmed entry; a protocol refusal for an empty `held`.
pub fn resume_holding(
    held: &[(u64, (u64, u32))],
    view: impl Fn(u64) -> LogView,
) -> Result<u64, Denied> {
    let Some(&(confirmed, id)) = held.first() else {
        return Err(Denied::new(RefuseCode::Protocol, "no resume position"));
    };
    let mut resumed = resume_decision(confirmed, id, view(confirmed))?;
    for &(lsn, id) in &held[1..] {
        if lsn != resumed + 1 || resume_decision(lsn, id, view(lsn)).is_err() {
            break;
        }
        resumed = lsn;
    }
    Ok(resumed)
}

/// How an admitted replica or consumer starts (see [`opening`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// With the entries after the LSN it holds.
    Resume,
    /// With a snapshot of every table, then the entries after it.
    Snapshot,
    /// With a snapshot's header alone (where the stream goes on from, no rows), then the
    /// entries after it.
    Header,
}

/// How a peer of `kind` at `flushed_lsn` (identified by `flushed_id`) starts. A replica
/// whose position left the log is re-seeded by a snapshot. A consumer keeps no data, so
/// when its position left the log, or when it is fresh and the log holds entries, it
/// starts at the primary's current LSN (a header-only snapshot) rather than streaming the
/// whole history. A fork is refused either way (see [`resume_decision`]).
///
/// # Errors
/// As [`resume_decision`], but never [`RefuseCode::NeedsSnapshot`] for a replica or a
/// consumer.
pub fn opening(
    kind: PeerKind,
    flushed_lsn: u64,
    flushed_id: (u64, u32),
    log: LogView,
) -> Result<Opening, Denied> {
    let consumer = kind == PeerKind::Consumer;
    match resume_decision(flushed_lsn, flushed_id, log) {
        Ok(_) if consumer && flushed_lsn == 0 && log.last_lsn > 0 => Ok(Opening::Header),
        Ok(_) => Ok(Opening::Resume),
        Err(Denied {
            code: RefuseCode::NeedsSnapshot,
            ..
        }) if consumer => Ok(Opening::Header),
        Err(Denied {
            code: RefuseCode::NeedsSnapshot,
            ..
        }) if kind == PeerKind::Replica => Ok(Opening::Snapshot),
        Err(denied) => Err(denied),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn a_proof_verifies_only_with_the_same_token_role_and_nonce() {
        let n = nonce();
        let proof = prove(b"secret", Role::Peer, &n);
        assert!(verify(b"secret", Role::Peer, &n, &proof));
        assert!(!verify(b"other", Role::Peer, &n, &proof));
        assert!(
            !verify(b"secret", Role::Primary, &n, &proof),
            "a peer proof is not a primary proof"
        );
        assert!(!verify(b"secret", Role::Peer, &nonce(), &proof));
        assert!(!verify(b"secret", Role::Peer, &n, &proof[..31]));
        assert_ne!(n, nonce(), "nonces are fresh");
    }

    #[test]
    fn without_a_token_only_loopback_peers_are_allowed() {
        assert!(peer_allowed(false, IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(peer_allowed(false, IpAddr::V4(Ipv4Addr::new(127, 8, 0, 1))));
        assert!(peer_allowed(false, IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(peer_allowed(
            false,
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())
        ));
        assert!(!peer_allowed(false, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5))));
        assert!(!peer_allowed(
            false,
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2))
        ));
        assert!(!peer_allowed(
            false,
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
        ));
        assert!(peer_allowed(true, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5))));
    }

    fn view(oldest: u64, last: u64, id: Option<(u64, u32)>) -> LogView {
        LogView {
            oldest_lsn: oldest,
            last_lsn: last,
            id_at_resume: id,
            fork_lsn: None,
        }
    }

    #[test]
    fn a_peer_resumes_where_its_history_matches() {
        assert_eq!(resume_decision(0, (0, 0), view(1, 10, Some((0, 0)))), Ok(0));
        assert_eq!(
            resume_decision(7, (1, 42), view(1, 10, Some((1, 42)))),
            Ok(7)
        );
        assert_eq!(
            resume_decision(10, (1, 42), view(5, 10, Some((1, 42)))),
            Ok(10)
        );
    }

    #[test]
    fn a_fork_or_a_peer_ahead_is_diverged() {
        assert_eq!(
            resume_decision(7, (1, 42), view(1, 10, Some((1, 43))))
                .unwrap_err()
                .code,
            RefuseCode::Diverged
        );
        assert_eq!(
            resume_decision(7, (2, 42), view(1, 10, Some((1, 42))))
                .unwrap_err()
                .code,
            RefuseCode::Diverged
        );
        assert_eq!(
            resume_decision(11, (1, 42), view(1, 10, None)).unwrap_err(),
            Denied {
                code: RefuseCode::Diverged,
                reason: "the peer has LSN 11 but the primary's log ends at 10: it holds writes the primary does not".into(),
                fork_lsn: Some(11),
            }
        );
    }

    #[test]
    fn a_fork_in_the_epoch_histories_wins_over_everything_else() {
        // Even a position the primary no longer retains is refused as diverged, with
        // the fork, rather than re-seeded.
        let forked = LogView {
            fork_lsn: Some(4),
            ..view(5, 10, None)
        };
        let denied = resume_decision(7, (1, 42), forked).unwrap_err();
        assert_eq!(
            (denied.code, denied.fork_lsn),
            (RefuseCode::Diverged, Some(4))
        );
        assert!(
            denied.reason.contains("holds 4 entries"),
            "{}",
            denied.reason
        );
    }

    #[test]
    fn a_replica_holding_entries_the_primary_lost_resumes_where_their_histories_part() {
        // The primary's log: entries 1..=6 of crc 10 + lsn; the replica holds 4..=8,
        // confirmed at 4, and its 6 and 7 were lost by the primary (which wrote another 6).
        let primary = |lsn: u64| view(1, 6, (lsn <= 6).then_some((1, 10 + lsn as u32)));
        let ours = |lsn: u64| (lsn, (1, 10 + lsn as u32 + u32::from(lsn >= 6)));
        let held: Vec<_> = (4..=8).map(ours).collect();
        assert_eq!(resume_holding(&held, primary), Ok(5));
        // Everything it holds matches: it resumes at its end.
        let held: Vec<_> = (2..=5).map(ours).collect();
        assert_eq!(resume_holding(&held, primary), Ok(5));
        // Its confirmed entry differs: a fork, never cut.
        let forked = [(3, (1, 99)), (4, (1, 14))];
        assert_eq!(
            resume_holding(&forked, primary).map_err(|d| d.code),
            Err(RefuseCode::Diverged)
        );
        assert_eq!(
            resume_holding(&[], primary).map_err(|d| d.code),
            Err(RefuseCode::Protocol)
        );
        // A gap in what it names ends the run there.
        let gapped = [(2, (1, 12)), (3, (1, 13)), (5, (1, 15))];
        assert_eq!(resume_holding(&gapped, primary), Ok(3));
    }

    #[test]
    fn a_replica_behind_the_log_gets_a_snapshot_and_a_consumer_a_header() {
        let behind = view(5, 10, None);
        assert_eq!(
            opening(PeerKind::Replica, 3, (1, 42), behind),
            Ok(Opening::Snapshot)
        );
        assert_eq!(
            opening(PeerKind::Consumer, 3, (1, 42), behind),
            Ok(Opening::Header)
        );
        assert_eq!(
            opening(PeerKind::Consumer, 0, (0, 0), behind),
            Ok(Opening::Header)
        );
    }

    #[test]
    fn a_fresh_consumer_starts_at_the_current_lsn_and_a_fresh_replica_from_the_start() {
        let whole = view(1, 10, Some((0, 0)));
        assert_eq!(
            opening(PeerKind::Consumer, 0, (0, 0), whole),
            Ok(Opening::Header)
        );
        assert_eq!(
            opening(PeerKind::Replica, 0, (0, 0), whole),
            Ok(Opening::Resume)
        );
        let empty = view(1, 0, Some((0, 0)));
        assert_eq!(
            opening(PeerKind::Consumer, 0, (0, 0), empty),
            Ok(Opening::Resume),
            "an empty log has nothing to skip"
        );
        assert_eq!(
            opening(PeerKind::Consumer, 7, (1, 42), view(1, 10, Some((1, 42)))),
            Ok(Opening::Resume)
        );
    }

    #[test]
    fn a_consumer_that_forked_is_refused_as_diverged_not_seeded() {
        let denied = opening(PeerKind::Consumer, 7, (1, 42), view(1, 10, Some((1, 43))));
        assert_eq!(denied.unwrap_err().code, RefuseCode::Diverged);
        let ahead = opening(PeerKind::Consumer, 11, (1, 42), view(5, 10, None));
        assert_eq!(ahead.unwrap_err().code, RefuseCode::Diverged);
    }

    #[test]
    fn a_position_older_than_the_log_needs_a_snapshot() {
        assert_eq!(
            resume_decision(3, (1, 42), view(5, 10, None))
                .unwrap_err()
                .code,
            RefuseCode::NeedsSnapshot
        );
        assert_eq!(
            resume_decision(0, (0, 0), view(5, 10, Some((0, 0))))
                .unwrap_err()
                .code,
            RefuseCode::NeedsSnapshot
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The resume decision never panics, and it only lets a peer resume from a position
        /// the primary retains and whose identity matches exactly.
        #[test]
        fn resume_decisions_are_total_and_only_accept_matching_positions(
            flushed in 0u64..50, peer_id: (u64, u32),
            oldest in 1u64..40, extra in 0u64..30, id in proptest::option::of(any::<(u64, u32)>()),
        ) {
            let log = LogView { oldest_lsn: oldest, last_lsn: oldest - 1 + extra, id_at_resume: id, fork_lsn: None };
            if let Ok(from) = resume_decision(flushed, peer_id, log) {
                prop_assert_eq!(from, flushed);
                prop_assert!(flushed <= log.last_lsn);
                prop_assert_eq!(Some(peer_id), id);
            }
        }

        /// Proofs over arbitrary tokens and nonces verify with the same inputs only.
        #[test]
        fn proofs_verify_only_with_their_own_inputs(
            token in proptest::collection::vec(any::<u8>(), 0..64),
            nonce in proptest::collection::vec(any::<u8>(), 0..64),
            other in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let proof = prove(&token, Role::Peer, &nonce);
            prop_assert!(verify(&token, Role::Peer, &nonce, &proof));
            // HMAC pads short keys with zeros, so "k" and "k\0" are one key; any other
            // token must fail.
            let trimmed = |t: &[u8]| t.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            if other[..trimmed(&other)] != token[..trimmed(&token)] {
                prop_assert!(!verify(&other, Role::Peer, &nonce, &proof));
            }
        }
    }
}
