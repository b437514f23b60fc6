//! Durable replication slots: for each replica name, the LSN it acknowledged. The primary
//! keeps its log from the oldest slot on (within its retention caps), so a replica that
//! reconnects finds every entry it is missing.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_derive::{Deserialize, Serialize};

use super::status::now_ms;
use crate::error::{ReplicationError, Result};

const FILE: &str = "replication-slots";

/// One slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The replica's name.
    pub name: String,
    /// The last LSN it acknowledged as durable.
    pub acked_lsn: u64,
    /// When the slot was created (ms since the Unix epoch).
    pub created_ms: u64,
    /// Set while a snapshot is sent to the replica, until its first ack: retention caps may
    /// not cut the log it will stream from, or it would need a snapshot again, forever.
    #[serde(default)]
    pub pinned: bool,
}

#[derive(Default)]
struct State {
    slots: BTreeMap<String, Slot>,
    dirty: bool,
}

/// The slots of one primary, persisted in a file of its store's directory.
pub struct Slots {
    path: PathBuf,
    state: Mutex<State>,
}

fn io(context: &str, path: &Path) -> impl FnOnce(std::io::Error) -> ReplicationError {
    let context = format!("{context} {}", path.display());
    move |source| ReplicationError::Io { context, source }
}

impl Slots {
    /// Loads the slots kept in `dir` (none if the file does not exist yet).
    ///
    /// # Errors
    /// The file exists but cannot be read or does not decode.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        let slots = match std::fs::read(&path) {
            Ok(bytes) => rmp_serde::from_slice::<Vec<Slot>>(&bytes)
                .map_err(|e| {
                    ReplicationError::Protocol(format!("{} does not decode: {e}", path.display()))
                })?
                .into_iter()
                .map(|slot| (slot.name.clone(), slot))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io("reading", &path)(e).into()),
        };
        Ok(Self {
            path,
            state: Mutex::new(State {
                slots,
                dirty: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates the slot if it is new, or moves it to where the replica says it stands.
    /// A new slot is persisted before this returns.
    ///
    /// # Errors
    /// Persisting a new slot failed.
    pub fn ensure(&self, name: &str, acked_lsn: u64, pinned: bool) -> Result<()> {
        let created = {
            let mut state = self.lock();
            let created = !state.slots.contains_key(name);
            let slot = state.slots.entry(name.to_owned()).or_insert_with(|| Slot {
                name: name.to_owned(),
                acked_lsn,
                created_ms: now_ms(),
                pinned,
            });
            slot.acked_lsn = acked_lsn;
            slot.pinned = pinned;
            state.dirty = true;
            created
        };
        if created {
            self.persist()?;
        }
        Ok(())
    }

    /// Records an acknowledgement (persisted by the next [`Slots::persist`]).
    pub fn advance(&self, name: &str, acked_lsn: u64) {
        let mut state = self.lock();
        if let Some(slot) = state.slots.get_mut(name) {
            if acked_lsn > slot.acked_lsn || slot.pinned {
                slot.acked_lsn = slot.acked_lsn.max(acked_lsn);
                slot.pinned = false;
                state.dirty = true;
            }
        }
    }

    /// Removes a slot; returns whether it existed.
    ///
    /// # Errors
    /// Persisting the change failed.
    pub fn drop_slot(&self, name: &str) -> Result<bool> {
        let existed = {
            let mut state = self.lock();
            state.dirty = true;
            state.slots.remove(name).is_some()
        };
        self.persist()?;
        Ok(existed)
    }

    /// Every slot, by name.
    #[must_use]
    pub fn list(&self) -> Vec<Slot> {
        self.lock().slots.values().cloned().collect()
    }

    /// Unpins a slot whose replica went away before it acknowledged its snapshot: the caps
    /// apply to it again (it will get a new snapshot when it returns).
    pub fn unpin(&self, name: &str) {
        let mut state = self.lock();
        if let Some(slot) = state.slots.get_mut(name) {
            if slot.pinned {
                slot.pinned = false;
                state.dirty = true;
            }
        }
    }

    /// The oldest position among pinned slots (`None` if none is pinned).
    #[must_use]
    pub fn min_pinned(&self) -> Option<u64> {
        self.lock()
            .slots
            .values()
            .filter(|s| s.pinned)
            .map(|s| s.acked_lsn)
            .min()
    }

    /// The oldest acknowledged LSN among the slots (`None` without slots).
    #[must_use]
    pub fn min_acked(&self) -> Option<u64> {
        self.lock().slots.values().map(|s| s.acked_lsn).min()
    }

    /// Writes the slots if they changed: a temporary file, fsync, rename, directory fsync.
    /// A slot on disk is never ahead of the truth, so retention based on it is safe.
    ///
    /// # Errors
    /// An I/O failure (the old file is left in place).
    pub fn persist(&self) -> Result<()> {
        let slots: Vec<Slot> = {
            let mut state = self.lock();
            if !state.dirty {
                return Ok(());
            }
            state.dirty = false;
            state.slots.values().cloned().collect()
        };
        let bytes =
            rmp_serde::to_vec(&slots).map_err(|e| ReplicationError::Protocol(e.to_string()))?;
        let temporary = self.path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &self.path)?;
            File::open(self.path.parent().unwrap_or(Path::new(".")))?.sync_all()
        };
        write().map_err(|e| {
            self.lock().dirty = true;
            io("writing", &self.path)(e).into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_survive_a_reload_and_only_move_forward_on_acks() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::load(dir.path()).unwrap();
        assert_eq!(slots.min_acked(), None);
        slots.ensure("eu-1", 5, false).unwrap();
        slots.ensure("us-1", 9, true).unwrap();
        slots.advance("eu-1", 7);
        slots.advance("eu-1", 6);
        slots.advance("unknown", 100);
        assert_eq!(slots.min_acked(), Some(7));
        assert_eq!(slots.min_pinned(), Some(9), "pinned until its first ack");
        slots.persist().unwrap();
        let reloaded = Slots::load(dir.path()).unwrap();
        assert_eq!(reloaded.list(), slots.list());
        assert!(reloaded.drop_slot("eu-1").unwrap());
        assert!(!reloaded.drop_slot("eu-1").unwrap());
        let last = Slots::load(dir.path()).unwrap();
        assert_eq!(last.min_acked(), Some(9));
        last.advance("us-1", 9);
        assert_eq!(last.min_pinned(), None, "an ack unpins");
    }

    #[test]
    fn a_damaged_slot_file_is_an_error_not_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"\xc1\xc1 not msgpack").unwrap();
        assert!(Slots::load(dir.path()).is_err());
    }
}
