//! Cutting the newest entries off the log: a follower's entries that its primary shipped
//! before they were durable there and then lost (see `store::held`). Rare (a primary's
//! power loss), so it reads rather than keeps where each entry starts.

use std::sync::PoisonError;

use super::{io_error, Log, LogPosition};
use crate::error::{LogError, Result};

impl Log {
    /// Cuts every entry after `lsn` off the log, durably: the next append is LSN
    /// `lsn + 1`. Segments that start after it are removed; the rest of the one it is in
    /// is zeroed.
    ///
    /// # Errors
    /// `lsn` is before the oldest retained entry, the log cannot be read, or an I/O
    /// failure (the log's state is then unknown: the caller must stop writing).
    pub fn cut_after(&self, lsn: u64) -> Result<()> {
        let mut tail = self.lock_tail();
        if lsn + 1 >= tail.next_lsn {
            return Ok(());
        }
        let mut at = None;
        self.read_payloads(
            &mut LogPosition::after(lsn),
            lsn + 1,
            1,
            1,
            |name, offset, _| {
                at = Some((name.to_owned(), offset));
                Ok(())
            },
        )?;
        let Some((name, offset)) = at else {
            return Err(LogError::Truncated {
                requested: lsn + 1,
                oldest: self.oldest_lsn(),
            }
            .into());
        };
        // Entries appended after the cut must never count as synced ones, nor may a sync
        // of entries written before it raise the mark past the cut again.
        self.options
            .unsynced
            .cut_back(lsn, || self.synced.lower(lsn))
            .map_err(io_error("lowering the log's synced mark"))?;
        let mut segments = self
            .segments
            .write()
            .expect("invariant: no panic while holding the segment list");
        let mut end = tail.offset;
        while segments.len() > 1 && segments.last().is_some_and(|s| s.name != name) {
            let newer = segments.pop().expect("invariant: checked above");
            self.fs
                .remove(&newer.name)
                .map_err(io_error(format!("removing {}", newer.name)))?;
            // The one it leaves as the last was full (its last batch may run past its
            // capacity): zero it to the end of its file.
            let last = segments.last().expect("invariant: one is left");
            end = last
                .file
                .size()
                .map_err(io_error(format!("reading the size of {}", last.name)))?;
        }
        let segment = segments
            .last()
            .expect("invariant: the log always has a segment");
        super::fs::write_zeros(segment.file.as_ref(), offset, end)
            .map_err(io_error(format!("cutting {}", segment.name)))?;
        segment
            .file
            .sync_data()
            .map_err(io_error(format!("fdatasync of {}", segment.name)))?;
        self.fs
            .sync_dir()
            .map_err(io_error("syncing the log directory"))?;
        tail.offset = offset;
        tail.next_lsn = lsn + 1;
        self.recent.forget();
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = None;
        Ok(())
    }
}
