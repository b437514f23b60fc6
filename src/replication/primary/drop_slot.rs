//! Dropping a replica's slot: from the primary's owner ([`super::Primary::drop_slot`]), or
//! from an operator over the wire (`replikv drop-slot`), for a primary run by
//! `replikv primary` that no program holds.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::tcp::OwnedReadHalf;

use super::{lock, Links, Shared};
use crate::error::Result;
use crate::replication::handshake::Denied;
use crate::replication::protocol::{read_frame_within, unexpected, Message, RefuseCode};

/// How long an operator has, after its hello, to name the slot to drop.
const INSTRUCTION_WAIT: Duration = Duration::from_secs(5);
/// The most slot names a refusal lists.
const LISTED: usize = 20;

impl Shared {
    /// Drops the slot of `name`: the log is no longer kept for it, and it no longer counts
    /// among the members (a replica that waited for it to learn of its arrival counts now).
    /// Returns whether it existed.
    ///
    /// # Errors
    /// Persisting the change failed.
    pub(super) fn drop_slot(&self, name: &str) -> Result<bool> {
        let existed = self.forget_slot(name, &mut lock(&self.links));
        self.members.forget(name);
        self.slots.persist()?;
        Ok(existed)
    }

    /// Drops the slot of `name` for an operator, unless its replica is connected or being
    /// admitted (it would stream on with no slot), or no slot has that name (most likely
    /// a typo): then why not. Checked and forgotten under one lock, so that no connection
    /// registers in between.
    ///
    /// # Errors
    /// Persisting the change failed.
    fn drop_slot_asked(&self, name: &str) -> Result<Option<String>> {
        {
            let mut links = lock(&self.links);
            if let Some(reason) = self.refuse_drop(name, &links) {
                return Ok(Some(reason));
            }
            self.forget_slot(name, &mut links);
        }
        self.members.forget(name);
        self.slots.persist()?;
        Ok(None)
    }

    /// Forgets `name` in the machine and its slot in memory (on disk at the next persist),
    /// under the links' lock; returns whether the slot existed.
    fn forget_slot(&self, name: &str, links: &mut Links) -> bool {
        links.machine.forget(name);
        // A replica that waited for the one forgotten to know it joined counts now.
        self.settle_slots(&links.machine);
        self.sync.publish(links.machine.quorum_view());
        self.slots.remove(name)
    }

    /// Why an operator may not drop the slot of `name` now, if it may not.
    fn refuse_drop(&self, name: &str, links: &Links) -> Option<String> {
        if crate::store::validate_table_name(name).is_err() {
            // Said back in part: the name came from the wire.
            let said: String = name.chars().take(64).collect();
            return Some(format!("invalid replica name {said:?}"));
        }
        let slots: Vec<String> = self.slots.list().into_iter().map(|s| s.name).collect();
        if !slots.iter().any(|slot| slot == name) {
            let known = match slots.len() {
                0 => "this primary has none".to_owned(),
                n if n <= LISTED => format!("the slots are {}", slots.join(", ")),
                n => format!(
                    "the slots are {} and {} more",
                    slots[..LISTED].join(", "),
                    n - LISTED
                ),
            };
            return Some(format!("no slot is named {name:?}: {known}"));
        }
        let live = links.admitting.contains_key(name)
            || links
                .machine
                .peers()
                .any(|p| p.id.name == name && p.state.is_connected());
        live.then(|| {
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
    let dropping = Arc::clone(shared);
    let dropped = tokio::task::spawn_blocking(move || dropping.drop_slot_asked(&name))
        .await
        .map_err(|e| Denied::new(RefuseCode::Protocol, e.to_string()))?
        .map_err(|e| Denied::new(RefuseCode::Protocol, format!("cannot drop the slot: {e}")))?;
    if let Some(reason) = dropped {
        return Err(Denied::new(RefuseCode::Protocol, reason));
    }
    Ok(shared.report())
}

#[cfg(test)]
mod tests {
    use super::super::{Primary, PrimaryOptions};
    use super::*;
    use crate::store::{Store, StoreOptions};

    fn serving() -> (tempfile::TempDir, Primary) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("p"), StoreOptions::default()).unwrap();
        let primary = Primary::start(store, PrimaryOptions::default()).unwrap();
        (dir, primary)
    }

    #[test]
    fn an_operator_cannot_drop_the_slot_of_a_replica_being_admitted() {
        let (_dir, primary) = serving();
        let shared = &primary.shared;
        shared.slots.ensure("eu-1", 0, true);
        // Its hello is being admitted: it registers once this ends, with no slot if the
        // drop went through.
        lock(&shared.links).admitting.insert("eu-1".into(), 7);
        let refused = shared.drop_slot_asked("eu-1").unwrap();
        assert!(refused.is_some_and(|r| r.contains("eu-1 is connected")));
        assert_eq!(shared.slots.list().len(), 1, "nothing was dropped");
        lock(&shared.links).admitting.clear();
        assert_eq!(shared.drop_slot_asked("eu-1").unwrap(), None);
        assert!(shared.slots.list().is_empty());
    }

    #[test]
    fn a_name_with_no_slot_is_refused_with_at_most_twenty_names_listed() {
        let (_dir, primary) = serving();
        let shared = &primary.shared;
        let none = shared.drop_slot_asked("eu-1").unwrap().unwrap();
        assert_eq!(none, "no slot is named \"eu-1\": this primary has none");
        let long = shared
            .drop_slot_asked(&"x".repeat(100_000))
            .unwrap()
            .unwrap();
        assert!(
            long.starts_with("invalid replica name") && long.len() < 100,
            "{long}"
        );
        for i in 0..25 {
            shared.slots.ensure(&format!("r{i:02}"), 0, true);
        }
        let many = shared.drop_slot_asked("eu-1").unwrap().unwrap();
        assert!(
            many.contains("r00, r01") && many.ends_with("r19 and 5 more"),
            "{many}"
        );
    }
}
