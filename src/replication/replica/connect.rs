//! Joining a primary: connect, prove the token both ways, say where this store stands, and
//! take a snapshot first when the primary no longer has the log after it.

use std::sync::Arc;
use std::time::Duration;

use serde_bytes::ByteBuf;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::seed::receive_snapshot;
use super::{lock, Shared, IDLE_TIMEOUT};
use crate::error::ReplicationError;
use crate::follow::{self, SnapshotStart};
use crate::net::stall::StallWriter;
use crate::replication::handshake::{self, Role};
use crate::replication::machine::ReplicaMachine;
use crate::replication::monitor::dial;
use crate::replication::protocol::{read_handshake_frame, write_frame, Message, PeerKind};
use crate::replication::status::LinkState;

/// How long connecting, each handshake step and a snapshot's first frame may take.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The writing half of the link: a primary that stops reading fails the write.
pub(super) type Writer = StallWriter<OwnedWriteHalf>;

/// Connects and runs the handshake (and a snapshot, if one is needed); returns the stream
/// halves and the protocol state, welcomed and positioned after what the store holds.
pub(super) async fn connect(
    shared: &Arc<Shared>,
) -> Result<(OwnedReadHalf, Writer, ReplicaMachine), ReplicationError> {
    let options = &shared.options;
    let token = options.token.as_deref().unwrap_or("").as_bytes();
    let (mut reader, mut writer, nonce) =
        dial(&shared.primary(), HANDSHAKE_TIMEOUT, IDLE_TIMEOUT).await?;
    let consumer = Arc::clone(&shared.consumer);
    let position = tokio::task::spawn_blocking(move || consumer.position())
        .await
        .map_err(|e| ReplicationError::Protocol(e.to_string()))?
        .map_err(|e| ReplicationError::Protocol(format!("cannot read the local log: {e}")))?;
    let my_nonce = handshake::nonce();
    let kind = match shared.consumer.role() {
        follow::Role::Replica => PeerKind::Replica,
        follow::Role::Consumer => PeerKind::Consumer,
    };
    let hello = Message::Hello {
        kind,
        name: options.name.clone(),
        proof: ByteBuf::from(handshake::prove(token, Role::Peer, &nonce)),
        nonce: ByteBuf::from(my_nonce.clone()),
        epoch: position.epoch,
        flushed_lsn: position.flushed_lsn,
        flushed_id: position.id,
        lineage: position.lineage,
        fsync: shared.consumer.durable(),
        history: position.history.clone(),
        listen: shared.listen.map(|address| address.to_string()),
        store_id: position.store_id,
        held: position.held.clone(),
    };
    write_frame(&mut writer, &hello).await?;
    match read_handshake_frame(&mut reader, HANDSHAKE_TIMEOUT, "welcome").await? {
        Message::Welcome {
            proof,
            epoch,
            last_lsn,
            snapshot,
            lineage: primary_lineage,
            matched_lsn,
        } => {
            if !handshake::verify(token, Role::Primary, &my_nonce, &proof) {
                return Err(ReplicationError::Auth(
                    "the primary could not prove the token".into(),
                ));
            }
            if position.flushed_lsn == 0 && position.lineage != primary_lineage {
                // An empty replica joins its primary's history.
                let consumer = Arc::clone(&shared.consumer);
                tokio::task::spawn_blocking(move || consumer.join_lineage(primary_lineage))
                    .await
                    .map_err(|e| ReplicationError::Protocol(e.to_string()))?
                    .map_err(|e| {
                        ReplicationError::Protocol(format!("cannot record the lineage: {e}"))
                    })?;
            }
            let mut machine = ReplicaMachine::new(
                position.flushed_lsn,
                position.applied_lsn,
                position.epoch,
                position.id.0,
            );
            if position.held.is_some() {
                machine = machine.holding_back(position.applied_lsn);
            }
            machine.welcomed(epoch, last_lsn, snapshot)?;
            if let Some(cut) = matched_lsn.and_then(|lsn| machine.resume_at(lsn)) {
                cut_lost(shared, cut).await?;
            }
            if epoch > position.epoch {
                // Remembered durably before anything of the new epoch is taken: this
                // replica never goes back to a primary of an older epoch.
                let consumer = Arc::clone(&shared.consumer);
                tokio::task::spawn_blocking(move || consumer.raise_epoch(epoch, last_lsn))
                    .await
                    .map_err(|e| ReplicationError::Protocol(e.to_string()))?
                    .map_err(|e| {
                        ReplicationError::Protocol(format!("cannot record epoch {epoch}: {e}"))
                    })?;
            }
            welcomed(shared, epoch, last_lsn, machine.state());
            if snapshot {
                let accept = |start: &SnapshotStart| {
                    machine.snapshot_begins(start.lsn, start.epoch, start.lineage, position.lineage)
                };
                let (lsn, epoch) =
                    receive_snapshot(shared, &mut reader, &mut writer, accept).await?;
                machine.installed(lsn, epoch);
                lock(&shared.state).state = machine.state();
            }
            Ok((reader, writer, machine))
        }
        other => Err(other
            .refusal(position.epoch)
            .unwrap_or_else(|| ReplicationError::Protocol("expected a welcome".into()))),
    }
}

/// Cuts the log after `lsn`: entries shipped before they were durable at the primary,
/// which lost them (its readers never saw them).
async fn cut_lost(shared: &Arc<Shared>, lsn: u64) -> Result<(), ReplicationError> {
    tracing::warn!(after_lsn = lsn, "cutting entries the primary no longer has");
    let consumer = Arc::clone(&shared.consumer);
    tokio::task::spawn_blocking(move || consumer.cut(lsn))
        .await
        .map_err(|e| ReplicationError::Protocol(e.to_string()))?
        .map_err(|e| ReplicationError::Protocol(format!("cannot cut the log after {lsn}: {e}")))
}

/// Records a welcome from a primary of `epoch` whose log ends at `last_lsn`: it checked
/// this store's history, so what the store holds is that primary's.
fn welcomed(shared: &Shared, epoch: u64, last_lsn: u64, link: LinkState) {
    let mut state = lock(&shared.state);
    state.primary_epoch = epoch;
    state.primary_last_lsn = last_lsn;
    state.connections += 1;
    state.matched = true;
    state.last_error = None;
    state.state = link;
}
