//! How far the log is known to be durable, kept beside its segments.
//!
//! A follower appends without an `fdatasync` per batch, so after a power loss its last
//! segment may keep a later page and lose an earlier one: recovery takes a bad record with
//! valid ones after it for such a hole, and cuts there ([`super::LogOptions::holes_are_torn`]).
//! Only records not synced yet can be torn that way, though: a bad record that a completed
//! sync covered is damage, and cutting there silently dropped every entry after it,
//! acknowledged ones too. So each sync of the log records the last LSN it covered in the
//! file `synced`, and recovery cuts a hole only past it.
//!
//! A primary's log needs it too: its newest segment truncated at a record boundary, or
//! removed, after a crash looked like a log that simply ended there (nothing after the
//! tables' checkpoint is in the tables), and every acknowledged write after the cut was
//! silently gone. A log that ends before the mark is damage.
//!
//! The mark is written after the sync it records has ended, without a sync of its own: a
//! power loss may keep an older mark (recovery is then as lenient as without one), never
//! one ahead of the durable log. A mark that does not read back whole (a torn write) counts
//! as none. Cutting the log back ([`super::Log::cut_after`]) lowers the mark durably first,
//! so that entries appended again after the cut are never taken for synced ones.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::fs::{LogFs, SegmentFile};

/// The mark's file in the log directory (not a segment: segments end in `.seg`).
pub(super) const SYNCED_FILE: &str = "synced";

/// The mark's bytes: the LSN, then the CRC-32C of its eight bytes, little-endian.
pub(super) const MARK_BYTES: usize = 12;

/// `value` as a mark: its 8 bytes (little-endian) and their CRC-32C (little-endian).
pub(super) fn seal(value: u64) -> [u8; MARK_BYTES] {
    let bytes = value.to_le_bytes();
    let mut mark = [0u8; MARK_BYTES];
    mark[..8].copy_from_slice(&bytes);
    mark[8..].copy_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    mark
}

/// The value of a mark [`seal`] wrote, or `None` if its CRC does not match.
pub(super) fn unseal(mark: &[u8; MARK_BYTES]) -> Option<u64> {
    let (value, crc) = mark.split_at(8);
    (crc32c::crc32c(value).to_le_bytes() == crc)
        .then(|| u64::from_le_bytes(value.try_into().expect("invariant: eight bytes")))
}

/// The last LSN a completed sync covered, as recorded in the log directory.
pub(super) struct SyncedMark {
    fs: Arc<dyn LogFs>,
    /// The file, once opened (created by the first mark written).
    file: Mutex<Option<Arc<dyn SegmentFile>>>,
    lsn: AtomicU64,
}

impl std::fmt::Debug for SyncedMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncedMark")
            .field("lsn", &self.lsn.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl SyncedMark {
    /// The mark `fs` holds (0 if none, or if it does not read back whole).
    pub(super) fn open(fs: Arc<dyn LogFs>) -> Self {
        let file = fs.open(SYNCED_FILE, false).ok();
        let lsn = file.as_deref().map_or(0, read_mark);
        Self {
            fs,
            file: Mutex::new(file),
            lsn: AtomicU64::new(lsn),
        }
    }

    /// The last LSN a sync is known to have covered.
    pub(super) fn lsn(&self) -> u64 {
        self.lsn.load(Ordering::Acquire)
    }

    /// A sync covering every record up to `lsn` ended: the mark rises to it. A failure to
    /// write it only leaves the mark lower (recovery is then more lenient), so it is
    /// logged, not returned.
    pub(super) fn synced(&self, lsn: u64) {
        if lsn <= self.lsn() {
            return;
        }
        if let Err(err) = self.write(lsn, false) {
            tracing::warn!(lsn, error = %err, "cannot record how far the log is synced");
        }
    }

    /// The log is about to be cut back to end at `lsn`: the mark comes down to it,
    /// durably, before any entry after it is cut.
    ///
    /// # Errors
    /// The mark cannot be written or synced: nothing may be cut then.
    pub(super) fn lower(&self, lsn: u64) -> std::io::Result<()> {
        if lsn >= self.lsn() {
            return Ok(());
        }
        self.write(lsn, true)
    }

    fn write(&self, lsn: u64, sync: bool) -> std::io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let file = match &mut *file {
            Some(file) => Arc::clone(file),
            none => Arc::clone(none.insert(self.fs.open(SYNCED_FILE, true)?)),
        };
        file.write_at(&seal(lsn), 0)?;
        if sync {
            file.sync_data()?;
        }
        self.lsn.store(lsn, Ordering::Release);
        Ok(())
    }
}

/// The LSN `file` records, or 0 if it does not read back whole.
fn read_mark(file: &dyn SegmentFile) -> u64 {
    let mut mark = [0u8; MARK_BYTES];
    match file.read_at(&mut mark, 0) {
        Ok(MARK_BYTES) => unseal(&mark).unwrap_or(0),
        _ => 0,
    }
}
