//! Dropping a replica's slot: from the primary's owner ([`super::Primary::drop_slot`]), or
//! from an operator over the wire (`replikv drop-slot`), for a primary run by
//! `replikv primary` that no program holds.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::tcp::OwnedReadHalf;

use super::{lock, Shared};
use crate::error::Result;
use crate::replication::handshake::Denied;
use crate::replication::protocol::{read_frame_within, unexpected, Message, RefuseCode};

/// How long an operator has, after its hello, to name the slot to drop.
const INSTRUCTION_WAIT: Duration = Duration::from_secs(5);

impl Shared {
    /// Drops the slot of `name`: the log is no longer kept for it, and it no longer counts
    /// among the members (a replica that waited for it to learn of its arrival counts now).
    /// Returns whether it existed.
    ///
    /// # Errors
    /// Persisting the change failed.
    pub(super) fn drop_slot(&self, name: &str) -> Result<bool> {
        {
            let mut links = lock(&self.links);
            links.machine.forget(name);
            // A replica that waited for the one forgotten to know it joined counts now.
            self.settle_slots(&links.machine);
            self.sync.publish(links.machine.quorum_view());
        }
        self.members.forget(name);
        self.slots.drop_slot(name)
    }

    /// Why an operator may not drop the slot of `name` now, if it may not: a replica
    /// that is connected would be left streaming with no slot, and a name with no slot
    /// is most likely a typo (the slots there are listed).
    fn refuse_drop(&self, name: &str) -> Option<String> {
        let slots: Vec<String> = self.slots.list().into_iter().map(|s| s.name).collect();
        if !slots.iter().any(|slot| slot == name) {
            let known = if slots.is_empty() {
                "this primary has none".to_owned()
            } else {
                format!("the slots are {}", slots.join(", "))
            };
            return Some(format!("no slot is named {name:?}: {known}"));
        }
        let links = lock(&self.links);
        let connected = links
            .machine
            .peers()
            .any(|p| p.id.name == name && p.state.is_connected());
        connected.then(|| {
            format!(
                "{name} is connected: stop it first (a slot is dropped for a replica that \
                 is gone for good)"
            )
        })
    }
}

/// Answers an operator's request to drop a slot, whose hello came: reads the
/// [`Message::DropSlot`] that follows it, drops the slot, and returns the status report
/// taken after it (the answer).
///
/// # Errors
/// A refusal to send the operator: no slot by that name, its replica is connected, the
/// instruction did not come, or the slots file could not be written.
pub(super) async fn answer_drop(
    shared: &Arc<Shared>,
    reader: &mut OwnedReadHalf,
) -> std::result::Result<Message, Denied> {
    let instruction = read_frame_within(reader, INSTRUCTION_WAIT, "the slot to drop").await?;
    let Message::DropSlot { name } = instruction else {
        return Err(unexpected(instruction, "the slot to drop").into());
    };
    if let Some(reason) = shared.refuse_drop(&name) {
        return Err(Denied::new(RefuseCode::Protocol, reason));
    }
    let dropping = Arc::clone(shared);
    let dropped = tokio::task::spawn_blocking(move || dropping.drop_slot(&name))
        .await
        .map_err(|e| Denied::new(RefuseCode::Protocol, e.to_string()))?;
    dropped.map_err(|e| Denied::new(RefuseCode::Protocol, format!("cannot drop the slot: {e}")))?;
    Ok(shared.report())
}
