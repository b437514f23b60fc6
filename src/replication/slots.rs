//! Durable replication slots: for each replica name, the LSN it acknowledged. The primary
//! keeps its log from the oldest slot on (within its retention caps), so a replica that
//! reconnects finds every entry it is missing.
//!
//! The slots file (`replication-slots` in the store's directory) is framed and checksummed:
//!
//! ```text
//! file = magic "RKVSLOTS" | version u8 (4) | len u32 BE | body | crc32c(everything before) u32 BE
//! body = MessagePack [quorum, [[name, acked_lsn, created_ms, fsync, joining, store_id], ...]]
//! ```
//! Version 4 added `store_id` (read as 0, unknown, from version 3 files). Version 3 added
//! `quorum` (the quorum the primary last served with) and `joining`;
//! version 2 files (a bare array of `[name, acked_lsn, created_ms, fsync]`) are read as
//! established slots of an unknown quorum.
//! Files written before the checksum existed (a bare `MessagePack` array of slots) are still
//! read, and rewritten in this format at once: refusing them would stop an upgraded primary
//! from starting, and deleting them would drop the log that absent replicas still need.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_derive::{Deserialize, Serialize};

use super::status::now_ms;
use crate::error::{Result, StoreError};

const FILE: &str = "replication-slots";
const MAGIC: &[u8; 8] = b"RKVSLOTS";
const VERSION: u8 = 4;
/// Magic, version and length before the body; the CRC after it.
const HEADER_BYTES: usize = MAGIC.len() + 1 + 4;
const CRC_BYTES: usize = 4;

/// How the quorum a primary starts with compares with the one it last served with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumChange {
    /// The same, or none was known.
    Same,
    /// Lower: every replica joins again.
    Lowered,
    /// Higher: the lower one, `from`, is announced until the higher one holds everything
    /// written before.
    Raised {
        /// The quorum it last served with.
        from: u64,
    },
}

/// One slot, as [`Slots::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The replica's name.
    pub name: String,
    /// The last LSN it acknowledged as durable.
    pub acked_lsn: u64,
    /// When the slot was created (ms since the Unix epoch).
    pub created_ms: u64,
    /// Set from a snapshot until the replica acks what was committed while it was sent:
    /// retention caps may not cut the log it will stream from, or it would need a
    /// snapshot again, forever.
    pub pinned: bool,
    /// Whether the replica said it fsyncs (only then does it count toward a quorum).
    pub fsync: bool,
    /// Whether it registered while the primary ran and does not count toward the quorum
    /// yet (see the primary machine's `membership.rs`): a primary that restarts then
    /// counts it only once every member has proved it knows it joined.
    pub joining: bool,
    /// The id of the store directory that last held it (0: unknown): a restarted primary
    /// tells a replica that returns from another directory under this name, which joins
    /// anew rather than counting at once.
    pub store_id: u64,
}

/// A slot as the file stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    name: String,
    acked_lsn: u64,
    created_ms: u64,
    /// Whether the replica fsyncs. Absent from older files: taken as not (a replica that
    /// does is counted again once it reconnects). Older builds read it as the pin they
    /// ignore, so a file with it still opens there.
    #[serde(default)]
    fsync: bool,
    /// See [`Slot::joining`]. Absent from version 2 files, whose primaries counted every
    /// replica at once.
    #[serde(default)]
    joining: bool,
    /// See [`Slot::store_id`]. Absent from version 3 files.
    #[serde(default)]
    store_id: u64,
}

/// Encodes the slots file.
fn encode(quorum: u64, records: &[Record]) -> Vec<u8> {
    let body = rmp_serde::to_vec(&(quorum, records))
        .expect("invariant: strings and integers always encode as MessagePack");
    let mut file = Vec::with_capacity(HEADER_BYTES + body.len() + CRC_BYTES);
    file.extend_from_slice(MAGIC);
    file.push(VERSION);
    file.extend_from_slice(
        &u32::try_from(body.len())
            .expect("invariant: replica names are short and slots few")
            .to_be_bytes(),
    );
    file.extend_from_slice(&body);
    let crc = crc32c::crc32c(&file);
    file.extend_from_slice(&crc.to_be_bytes());
    file
}

/// How a slots file decoded.
#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    /// The checksummed format, with the quorum it names (0: unknown, in version 2).
    Current(u64, Vec<Record>),
    /// A file of the first format (no checksum): to be rewritten.
    Legacy(Vec<Record>),
}

/// Decodes a slots file; the error says what is wrong with it.
fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    if !bytes.starts_with(MAGIC) {
        return decode_legacy(bytes).map(Decoded::Legacy);
    }
    if bytes.len() < HEADER_BYTES + CRC_BYTES {
        return Err(format!("truncated: {} bytes", bytes.len()));
    }
    let (content, crc) = bytes.split_at(bytes.len() - CRC_BYTES);
    let crc = u32::from_be_bytes(crc.try_into().expect("invariant: 4 bytes"));
    if crc32c::crc32c(content) != crc {
        return Err("checksum mismatch".to_owned());
    }
    let version = content[MAGIC.len()];
    if !(2..=VERSION).contains(&version) {
        return Err(format!(
            "format version {version}, this build reads {VERSION}"
        ));
    }
    let len_field = &content[MAGIC.len() + 1..HEADER_BYTES];
    let len = u32::from_be_bytes(len_field.try_into().expect("invariant: 4 bytes")) as usize;
    let body = &content[HEADER_BYTES..];
    if len != body.len() {
        return Err(format!(
            "the header says {len} bytes of slots, the file holds {}",
            body.len()
        ));
    }
    let undecodable = |e: rmp_serde::decode::Error| format!("does not decode: {e}");
    let (quorum, records) = if version == 2 {
        (0, rmp_serde::from_slice(body).map_err(undecodable)?)
    } else {
        rmp_serde::from_slice(body).map_err(undecodable)?
    };
    validate(records).map(|records| Decoded::Current(quorum, records))
}

/// The first format: a bare `MessagePack` array. With no checksum, the best check left is
/// that it re-encodes to exactly the bytes read (nothing trailing, nothing non-canonical).
fn decode_legacy(bytes: &[u8]) -> Result<Vec<Record>, String> {
    let records: Vec<LegacyRecord> = rmp_serde::from_slice(bytes)
        .map_err(|e| format!("is neither a slots file nor one of the first format: {e}"))?;
    if rmp_serde::to_vec(&records).ok().as_deref() != Some(bytes) {
        return Err("a file of the first format with unexpected bytes".to_owned());
    }
    // A pin never outlives the connection that made it (none survives a restart).
    let records = records
        .into_iter()
        .map(|legacy| Record {
            name: legacy.name,
            acked_lsn: legacy.acked_lsn,
            created_ms: legacy.created_ms,
            fsync: false,
            joining: false,
            store_id: 0,
        })
        .collect();
    validate(records)
}

/// A record as the first format wrote it (with its pin).
#[derive(Serialize, Deserialize)]
struct LegacyRecord {
    name: String,
    acked_lsn: u64,
    created_ms: u64,
    pinned: bool,
}

/// Names are replica names (checked at the handshake) and unique.
fn validate(records: Vec<Record>) -> Result<Vec<Record>, String> {
    let mut names = std::collections::BTreeSet::new();
    for record in &records {
        if crate::store::validate_table_name(&record.name).is_err() {
            return Err(format!("invalid replica name {:?}", record.name));
        }
        if !names.insert(record.name.as_str()) {
            return Err(format!("replica {:?} has two slots", record.name));
        }
    }
    Ok(records)
}

#[derive(Debug, Clone)]
struct SlotState {
    acked_lsn: u64,
    created_ms: u64,
    fsync: bool,
    joining: bool,
    store_id: u64,
    /// The pin that holds the log for a snapshot, by its owner's id.
    pin: Option<u64>,
    /// The pin holds until an ack reaches this LSN: the snapshot's at least. An ack below
    /// it (of what the replica held before the snapshot) releases nothing.
    pinned_until: u64,
}

#[derive(Default)]
struct State {
    slots: BTreeMap<String, SlotState>,
    /// The quorum the primary last served with (0: unknown).
    quorum: u64,
    dirty: bool,
    pins: u64,
}

/// The slots of one primary, persisted in a file of its store's directory.
pub struct Slots {
    path: PathBuf,
    state: Mutex<State>,
    /// Held for a whole write, so that files land in the order their contents were taken
    /// and a persist returns only once what it saw is on disk.
    writing: Mutex<()>,
    temporaries: AtomicU64,
}

fn io(context: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io {
        context,
        path,
        source,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Slots {
    /// Loads the slots kept in `dir` (none if the file does not exist yet). A file of the
    /// first format is rewritten in the checksummed one.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the file is damaged; I/O failures.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        remove_temporaries(dir);
        let (quorum, records, legacy) = match std::fs::read(&path) {
            Ok(bytes) => match decode(&bytes) {
                Ok(Decoded::Current(quorum, records)) => (quorum, records, false),
                Ok(Decoded::Legacy(records)) => (0, records, true),
                Err(reason) => {
                    return Err(StoreError::Corrupt {
                        reason: format!(
                            "replication slots file {} {reason}; move it aside to start \
                             without slots (replicas behind the retained log are then re-seeded)",
                            path.display()
                        ),
                    }
                    .into())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, Vec::new(), false),
            Err(e) => return Err(io("reading replication slots", &path)(e).into()),
        };
        let slots = records
            .into_iter()
            .map(|record| {
                let state = SlotState {
                    acked_lsn: record.acked_lsn,
                    created_ms: record.created_ms,
                    fsync: record.fsync,
                    joining: record.joining,
                    store_id: record.store_id,
                    pin: None,
                    pinned_until: 0,
                };
                (record.name, state)
            })
            .collect();
        let loaded = Self {
            path,
            state: Mutex::new(State {
                slots,
                quorum,
                dirty: legacy,
                pins: 0,
            }),
            writing: Mutex::new(()),
            temporaries: AtomicU64::new(0),
        };
        if legacy {
            tracing::info!(path = %loaded.path.display(), "rewriting the replication slots with a checksum");
            loaded.persist()?;
        }
        Ok(loaded)
    }

    /// Creates the slot if it is new, or moves it to where the replica says it stands
    /// (on disk at the next [`Slots::persist`]); `fsync` is what the replica said of itself.
    pub fn ensure(&self, name: &str, acked_lsn: u64, fsync: bool) {
        self.place(name, acked_lsn, fsync, None);
    }

    /// Like [`Slots::ensure`], and pins the slot against the retention caps until the
    /// replica acks `acked_lsn` (or the LSN given to [`SlotPin::move_to`] or to
    /// [`SlotPin::hold_until`]) or until the returned pin is dropped, whichever comes
    /// first.
    pub fn pin(&self, name: &str, acked_lsn: u64, fsync: bool) -> SlotPin<'_> {
        let id = {
            let mut state = lock(&self.state);
            state.pins += 1;
            state.pins
        };
        self.place(name, acked_lsn, fsync, Some(id));
        SlotPin {
            slots: self,
            name: name.to_owned(),
            id,
        }
    }

    fn place(&self, name: &str, acked_lsn: u64, fsync: bool, pin: Option<u64>) {
        let mut state = lock(&self.state);
        let slot = state
            .slots
            .entry(name.to_owned())
            .or_insert_with(|| SlotState {
                acked_lsn,
                created_ms: now_ms(),
                fsync,
                joining: false,
                store_id: 0,
                pin: None,
                pinned_until: 0,
            });
        slot.acked_lsn = acked_lsn;
        slot.fsync = fsync;
        if pin.is_some() {
            slot.pin = pin;
            slot.pinned_until = acked_lsn;
        }
        state.dirty = true;
    }

    /// Records an acknowledgement (persisted by the next [`Slots::persist`]): one that
    /// reaches the LSN its pin holds until (the snapshot's, at least) also unpins the
    /// slot.
    pub fn advance(&self, name: &str, acked_lsn: u64) {
        let mut state = lock(&self.state);
        let Some(slot) = state.slots.get_mut(name) else {
            return;
        };
        if acked_lsn > slot.acked_lsn || slot.pin.is_some() {
            slot.acked_lsn = slot.acked_lsn.max(acked_lsn);
            if acked_lsn >= slot.pinned_until {
                slot.pin = None;
            }
            state.dirty = true;
        }
    }

    /// The primary serves with `quorum` from now on (on disk before this returns).
    ///
    /// If it is lower than the quorum it last served with, every replica that fsyncs joins
    /// again: members that recorded the higher quorum would promote by it, reaching too
    /// few for a write the lower one acknowledged, so none counts until all know it.
    ///
    /// If it is higher, the file keeps the lower one until [`Slots::settle_quorum`]: a
    /// promotion by the higher quorum reaches fewer members, which may miss a write the
    /// lower one acknowledged, so the primary announces the lower quorum until `quorum`
    /// replicas hold everything written before.
    ///
    /// # Errors
    /// Persisting failed.
    pub fn serve_with_quorum(&self, quorum: u64) -> Result<QuorumChange> {
        let change = {
            let mut state = lock(&self.state);
            let change = match state.quorum {
                0 => QuorumChange::Same,
                last if quorum < last => QuorumChange::Lowered,
                last if quorum > last => QuorumChange::Raised { from: last },
                _ => QuorumChange::Same,
            };
            if change == QuorumChange::Lowered {
                for slot in state.slots.values_mut().filter(|s| s.fsync) {
                    slot.joining = true;
                }
            }
            if quorum != state.quorum && !matches!(change, QuorumChange::Raised { .. }) {
                state.quorum = quorum;
                state.dirty = true;
            }
            change
        };
        self.persist()?;
        Ok(change)
    }

    /// A raised quorum holds everything written before it: it is the one to remember (on
    /// disk at the next [`Slots::persist`]; until then a restart announces the lower one
    /// again, which is only more careful).
    pub fn settle_quorum(&self, quorum: u64) {
        let mut state = lock(&self.state);
        if state.quorum != quorum {
            state.quorum = quorum;
            state.dirty = true;
        }
    }

    /// Records that the store `store_id` holds the slot of `name` (which must exist) now;
    /// on disk at the next [`Slots::persist`], which the handshake runs before the replica
    /// is welcomed. A store that does not say its id (0) changes nothing.
    pub fn held_by(&self, name: &str, store_id: u64) {
        let mut state = lock(&self.state);
        if let Some(slot) = state
            .slots
            .get_mut(name)
            .filter(|s| store_id != 0 && s.store_id != store_id)
        {
            slot.store_id = store_id;
            state.dirty = true;
        }
    }

    /// Marks the slot of `name` (which must exist) as joining; on disk at the next
    /// [`Slots::persist`], which the handshake runs before the replica is welcomed, and so
    /// before any of its acks could count.
    pub fn mark_joining(&self, name: &str) {
        let mut state = lock(&self.state);
        if let Some(slot) = state.slots.get_mut(name).filter(|s| !s.joining) {
            slot.joining = true;
            state.dirty = true;
        }
    }

    /// The replica `name` counts toward the quorum now: its slot is no longer joining
    /// (on disk at the next [`Slots::persist`]; until then a restart is only more careful).
    pub fn settle(&self, name: &str) {
        let mut state = lock(&self.state);
        if let Some(slot) = state.slots.get_mut(name).filter(|s| s.joining) {
            slot.joining = false;
            state.dirty = true;
        }
    }

    /// Removes a slot; returns whether it existed.
    ///
    /// # Errors
    /// Persisting the change failed.
    pub fn drop_slot(&self, name: &str) -> Result<bool> {
        let existed = self.remove(name);
        self.persist()?;
        Ok(existed)
    }

    /// Removes a slot in memory (on disk at the next [`Slots::persist`]); returns whether
    /// it existed.
    pub fn remove(&self, name: &str) -> bool {
        let mut state = lock(&self.state);
        state.dirty = true;
        state.slots.remove(name).is_some()
    }

    /// Every slot, by name.
    #[must_use]
    pub fn list(&self) -> Vec<Slot> {
        lock(&self.state)
            .slots
            .iter()
            .map(|(name, slot)| Slot {
                name: name.clone(),
                acked_lsn: slot.acked_lsn,
                created_ms: slot.created_ms,
                pinned: slot.pin.is_some(),
                fsync: slot.fsync,
                joining: slot.joining,
                store_id: slot.store_id,
            })
            .collect()
    }

    /// Unpins `name` if `pin` still holds it (a newer connection may have pinned it since).
    fn release(&self, name: &str, pin: u64) {
        let mut state = lock(&self.state);
        if let Some(slot) = state.slots.get_mut(name) {
            if slot.pin == Some(pin) {
                slot.pin = None;
            }
        }
    }

    /// The oldest position among pinned slots (`None` if none is pinned).
    #[must_use]
    pub fn min_pinned(&self) -> Option<u64> {
        lock(&self.state)
            .slots
            .values()
            .filter(|s| s.pin.is_some())
            .map(|s| s.acked_lsn)
            .min()
    }

    /// The oldest acknowledged LSN among the slots (`None` without slots).
    #[must_use]
    pub fn min_acked(&self) -> Option<u64> {
        lock(&self.state).slots.values().map(|s| s.acked_lsn).min()
    }

    /// Writes the slots if they changed: a temporary file of its own, fsync, rename,
    /// directory fsync. A slot on disk is never ahead of the truth, so retention based on
    /// it is safe.
    ///
    /// # Errors
    /// An I/O failure (the old file is left in place).
    pub fn persist(&self) -> Result<()> {
        let _writing = lock(&self.writing);
        let (quorum, records): (u64, Vec<Record>) = {
            let mut state = lock(&self.state);
            if !state.dirty {
                return Ok(());
            }
            state.dirty = false;
            let records = state
                .slots
                .iter()
                .map(|(name, slot)| Record {
                    name: name.clone(),
                    acked_lsn: slot.acked_lsn,
                    created_ms: slot.created_ms,
                    fsync: slot.fsync,
                    joining: slot.joining,
                    store_id: slot.store_id,
                })
                .collect();
            (state.quorum, records)
        };
        let bytes = encode(quorum, &records);
        let temporary = self.path.with_file_name(format!(
            "{FILE}.{}.{}.tmp",
            std::process::id(),
            self.temporaries.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &self.path)?;
            File::open(self.path.parent().unwrap_or(Path::new(".")))?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            lock(&self.state).dirty = true;
            io("writing replication slots", &self.path)(e).into()
        })
    }
}

/// Removes temporary files that a crash left behind mid-write.
fn remove_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&format!("{FILE}.")) && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Holds a slot pinned against the retention caps; dropping it unpins the slot, whichever
/// way the connection that took it ends.
pub struct SlotPin<'a> {
    slots: &'a Slots,
    name: String,
    id: u64,
}

impl SlotPin<'_> {
    /// Moves the pinned slot to `acked_lsn` (where a snapshot was taken), if still pinned
    /// by this pin: an ack of that LSN, once the snapshot is installed, releases it.
    pub fn move_to(&self, acked_lsn: u64) {
        let mut state = lock(&self.slots.state);
        if let Some(slot) = state.slots.get_mut(&self.name) {
            if slot.pin == Some(self.id) {
                slot.acked_lsn = acked_lsn;
                slot.pinned_until = acked_lsn;
                state.dirty = true;
            }
        }
    }

    /// Keeps the slot pinned until the replica acks `lsn` (what was committed while its
    /// snapshot was sent), not only its first ack: under a byte cap smaller than the
    /// writes of one snapshot's transfer, the log the replica streams next would otherwise
    /// be cut at once, and it would need a snapshot again, for ever.
    pub fn hold_until(&self, lsn: u64) {
        let mut state = lock(&self.slots.state);
        if let Some(slot) = state.slots.get_mut(&self.name) {
            if slot.pin == Some(self.id) {
                slot.pinned_until = lsn;
            }
        }
    }
}

impl Drop for SlotPin<'_> {
    fn drop(&mut self) {
        self.slots.release(&self.name, self.id);
    }
}

#[cfg(test)]
#[path = "slots_tests.rs"]
mod tests;

/// Fuzz targets of the slots-file decoder, on stable Rust with proptest. `cargo test`
/// runs a few hundred cases; a longer run:
/// `PROPTEST_CASES=100000 cargo test --release --no-default-features fuzz_`.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = Record> {
        (
            "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}",
            any::<u64>(),
            any::<u64>(),
            any::<(bool, bool, u64)>(),
        )
            .prop_map(
                |(name, acked_lsn, created_ms, (fsync, joining, store_id))| Record {
                    name,
                    acked_lsn,
                    created_ms,
                    fsync,
                    joining,
                    store_id,
                },
            )
    }

    fn records() -> impl Strategy<Value = Vec<Record>> {
        proptest::collection::btree_map("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", record(), 0..8).prop_map(
            |by_name| {
                by_name
                    .into_iter()
                    .map(|(name, record)| Record { name, ..record })
                    .collect()
            },
        )
    }

    proptest! {
        /// Arbitrary bytes are refused or decode; they never panic.
        #[test]
        fn fuzz_slots_decoder_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let _ = decode(&bytes);
        }

        /// Arbitrary bytes behind a valid header and checksum: still no panic.
        #[test]
        fn fuzz_slots_decoder_never_panics_inside_a_valid_frame(
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut file = MAGIC.to_vec();
            file.push(VERSION);
            file.extend_from_slice(&(body.len() as u32).to_be_bytes());
            file.extend_from_slice(&body);
            let crc = crc32c::crc32c(&file);
            file.extend_from_slice(&crc.to_be_bytes());
            let _ = decode(&file);
        }

        /// Valid encodings round-trip, and any single flipped byte is refused.
        #[test]
        fn fuzz_slots_files_round_trip_and_refuse_any_flip(
            quorum in any::<u64>(),
            records in records(),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let file = encode(quorum, &records);
            prop_assert_eq!(decode(&file), Ok(Decoded::Current(quorum, records)));
            let mut bad = file.clone();
            bad[at.index(file.len())] ^= flip;
            prop_assert!(decode(&bad).is_err());
        }
    }
}
