//! The replica side of a planned switchover: once it holds everything the old primary
//! wrote (writes are paused there), it becomes the primary of the next epoch with the old
//! primary's settings, on its own member address, at run time.

use std::sync::Arc;
use std::time::Duration;

use super::{lock, Shared, StoreSide};
use crate::error::ReplicationError;
use crate::replication::handover::{HandedMember, Settings};
use crate::replication::machine::ReplicaMachine;
use crate::replication::monitor::request_follow;
use crate::replication::primary::Primary;

/// How long telling one member to follow the new primary may take.
const LEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// What the old primary handed over (see [`crate::replication::protocol::Message`]).
pub(super) struct Handover {
    pub epoch: u64,
    pub last_lsn: u64,
    pub settings: Settings,
    pub members: Vec<HandedMember>,
}

/// Takes over from the primary that sent the handover; returns the address it serves at
/// (the follow task ends then).
pub(super) async fn take_over(
    shared: &Arc<Shared>,
    machine: &ReplicaMachine,
    handover: Handover,
) -> Result<String, ReplicationError> {
    let (epoch, last_lsn) = (handover.epoch, handover.last_lsn);
    let refused = |reason: String| ReplicationError::Refused { reason };
    if machine.flushed_lsn() != last_lsn {
        return Err(refused(format!(
            "a switchover needs LSN {last_lsn} here, which holds {}",
            machine.flushed_lsn()
        )));
    }
    let side = shared.store_side.clone().ok_or_else(|| {
        refused("a switchover needs a replica, with a store of its own".to_owned())
    })?;
    let listen = shared
        .listen
        .ok_or_else(|| refused("a switchover needs a replica that listens (listen=)".to_owned()))?;
    // Starting a primary blocks on the runtime (it binds, and waits for the member server
    // to free the address): a thread of its own, not a runtime worker.
    let (done, outcome) = tokio::sync::oneshot::channel();
    let (taking, taker) = (Arc::clone(shared), Arc::clone(&side));
    std::thread::spawn(move || {
        let _ = done.send(become_primary(&taking, &taker, &handover, listen));
    });
    let primary = outcome
        .await
        .map_err(|_| refused("the switchover's thread ended".to_owned()))?
        .map_err(|err| refused(format!("cannot take over as the primary: {err}")))?;
    tracing::info!(replica = %shared.options.name, epoch, from_lsn = last_lsn + 1, address = %primary.address(), "took over as the primary");
    let address = primary.address().to_string();
    *lock(&side.handed_over) = Some(primary);
    shared.became_primary(epoch, &address);
    lead_members(shared, &address);
    Ok(address)
}

/// Tells every other member the old primary's heartbeats named to follow the new primary
/// at `address`, on a thread of its own (best effort, as the old primary's own leads):
/// the old primary leads only the replicas connected to it when the switchover ends, and
/// none at all if it dies right after the takeover. A member told twice reconnects once
/// more, from its own position.
fn lead_members(shared: &Shared, address: &str) {
    let members: Vec<(String, String)> = lock(&shared.state)
        .primary_peers
        .iter()
        .filter(|(name, _)| *name != shared.options.name)
        .cloned()
        .collect();
    let (token, address) = (shared.options.token.clone(), address.to_owned());
    let spawned = std::thread::Builder::new()
        .name("replikv-lead".into())
        .spawn(move || {
            for (name, member) in members {
                if let Err(err) = request_follow(&member, &address, token.as_deref(), LEAD_TIMEOUT) {
                    tracing::warn!(member = %name, at = %member, %err, "could not tell a member to follow the new primary");
                }
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(%err, "could not start telling the members to follow the new primary");
    }
}

fn become_primary(
    shared: &Shared,
    side: &StoreSide,
    handover: &Handover,
    listen: std::net::SocketAddr,
) -> crate::Result<Primary> {
    let epoch = handover.epoch;
    side.stop_member_server();
    {
        let mut granted = lock(&shared.granted);
        side.store.raise_epoch(epoch)?;
        *granted = epoch;
    }
    side.store.stop_following()?;
    side.store.begin_epoch(epoch)?;
    let options = handover
        .settings
        .options(listen.to_string(), shared.options.token.clone());
    let primary = Primary::start(side.store.clone(), options)?;
    primary.expect(&handover.members, handover.last_lsn);
    Ok(primary)
}
