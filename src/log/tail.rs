//! Reading the log of a store that another process may be writing: no lock is taken and
//! nothing in the directory is written, so a running primary or script keeps its store.
//!
//! What it hands out, and why that is safe against a live writer:
//! * Records are read in LSN order and each must carry the next LSN; a record that is not
//!   whole or fails its CRC is where the writer has not finished (or a torn tail a crashed
//!   writer left, which its next open cuts): the reader stops there and looks again later.
//! * A record can reach the page cache before its writer's `fdatasync`, and only a synced
//!   record is committed (a power loss could take the rest back, and the LSN be reused).
//!   So before handing out entries the reader `fdatasync`s the segments it read them from
//!   (through its read-only descriptor: that writes no byte). Once that succeeds they are
//!   durable, and the writer's recovery keeps every durable valid record, so every entry
//!   handed out is one the store holds, now or once it reopens (an entry whose writer
//!   failed or died before its own sync returned is such an entry too: the store's
//!   recovery replays it).
//! * A segment is complete once the next one exists: the writer names a new segment by the
//!   first LSN it will hold and starts it only after the previous one is full.
//! * Retention removes whole old segments: a segment being read stays readable through its
//!   open descriptor, and LSNs are dense, so the reader goes on into the next one. Only when
//!   retention has removed the next entries too is it [`LogError::Truncated`]. A segment
//!   over a few MiB is cut down before it goes (see `Log::remove_segment`): a reader still
//!   in it meets its cut end, and since the entries there are gone, that is `Truncated` too.
//! * A snapshot install renames a new log directory into place (another history may follow):
//!   the reader keeps the directory it started in open, to tell, and stops with
//!   [`LogError::Replaced`], handing out nothing it read while the swap happened.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::scan::{self, ChunkReader, Next};
use super::{corrupt, io_error, segment_firsts, DirFs, RawEntry, SegmentFile};
use crate::codec;
use crate::error::{LogError, Result};

/// Listings tried when the segment found is removed before it is opened.
const LOCATE_ATTEMPTS: usize = 3;

/// A reader that follows a log directory from an LSN on.
pub struct LogTail {
    dir: PathBuf,
    /// The log directory as it was opened, held so that its inode cannot be reused: a
    /// different inode at `dir` later means the log was replaced.
    held_dir: File,
    next_lsn: u64,
    current: Option<Current>,
}

/// The segment being read and where.
struct Current {
    first_lsn: u64,
    name: String,
    file: Arc<dyn SegmentFile>,
    offset: u64,
    /// The LSN of the record at `offset` (below `next_lsn` while skipping to it).
    lsn_at_offset: u64,
}

fn identity(metadata: &std::fs::Metadata) -> (u64, u64) {
    (metadata.dev(), metadata.ino())
}

impl LogTail {
    /// A reader of the entries after `since` in the log directory `dir`.
    ///
    /// # Errors
    /// The directory cannot be opened; [`LogError::Truncated`] if entries after `since`
    /// are no longer retained.
    pub fn open(dir: &Path, since: u64) -> Result<Self> {
        let held_dir = File::open(dir).map_err(io_error(format!("opening {}", dir.display())))?;
        let mut tail = Self {
            dir: dir.to_path_buf(),
            held_dir,
            next_lsn: since.saturating_add(1),
            current: None,
        };
        tail.current = tail.locate()?;
        Ok(tail)
    }

    /// The LSN of the next entry the reader will hand out.
    #[must_use]
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Up to `max_entries` entries from [`LogTail::next_lsn`] on, as many as are durable in
    /// the log now (none if there are none yet): it never waits.
    ///
    /// # Errors
    /// [`LogError::Truncated`] if retention removed the next entries,
    /// [`LogError::Replaced`] if a snapshot replaced the log, [`LogError::Corrupt`] for a
    /// gap in the LSNs, I/O failures (the sync included).
    pub fn read(&mut self, max_entries: usize) -> Result<Vec<RawEntry>> {
        self.check_same_dir()?;
        if self.current.is_none() {
            self.current = self.locate()?;
        }
        let mut entries = Vec::new();
        let mut read_from: Vec<Arc<dyn SegmentFile>> = Vec::new();
        let mut looked_again = false;
        // Made anew for each call and each look again: a buffer read earlier may hold
        // zeros where records have been written since.
        let mut reader: Option<ChunkReader> = None;
        while entries.len() < max_entries {
            let Some(current) = self.current.as_mut() else {
                break;
            };
            let found = reader
                .get_or_insert_with(|| ChunkReader::new(Arc::clone(&current.file)))
                .next_record(current.offset)
                .map_err(io_error(format!("reading {}", current.name)))?;
            if let Next::Record { payload, end, .. } = found {
                let lsn = codec::payload_lsn(payload).unwrap_or(0);
                if lsn != current.lsn_at_offset {
                    if !entries.is_empty() {
                        break; // hand out what came before: the next call reports this
                    }
                    return Err(corrupt(
                        &current.name,
                        current.offset,
                        format!("found LSN {lsn}, expected {}", current.lsn_at_offset),
                    )
                    .into());
                }
                if lsn == self.next_lsn {
                    entries.push(RawEntry::new(payload.to_vec()));
                    self.next_lsn += 1;
                    if !read_from.iter().any(|f| Arc::ptr_eq(f, &current.file)) {
                        read_from.push(Arc::clone(&current.file));
                    }
                }
                current.lsn_at_offset += 1;
                current.offset = end as u64;
                looked_again = false;
                continue;
            }
            // Zeros or a record not yet whole: the end for now, unless the next segment
            // has started (this one is then complete), or the record is damaged.
            let bad = matches!(found, Next::Bad { .. });
            reader = None;
            if bad && damaged(current).map_err(io_error(format!("reading {}", current.name)))? {
                if !entries.is_empty() {
                    break; // hand out what came before: the next call reports this
                }
                return Err(corrupt(
                    &current.name,
                    current.offset,
                    "a damaged record, with valid records after it".to_owned(),
                )
                .into());
            }
            match self.after_end(looked_again) {
                Ok(AfterEnd::Switched) => looked_again = false,
                Ok(AfterEnd::LookAgain) => looked_again = true,
                Ok(AfterEnd::Wait) => break,
                // The entries read so far are handed out first; the position stays at
                // the end of this segment, so the next call meets the failure again.
                Err(_) if !entries.is_empty() => break,
                Err(failure) => return Err(failure),
            }
        }
        for file in &read_from {
            file.sync_data().map_err(io_error(format!(
                "syncing the log in {} before handing out its entries",
                self.dir.display()
            )))?;
        }
        // A swap while reading may have mixed two logs: hand out none of it.
        self.check_same_dir()?;
        Ok(entries)
    }

    /// What to do at the end of the written part of the current segment.
    fn after_end(&mut self, looked_again: bool) -> Result<AfterEnd> {
        let current = self
            .current
            .as_ref()
            .expect("invariant: called while reading a segment");
        let (firsts, expected) = (self.list()?, current.lsn_at_offset);
        if expected > current.first_lsn && firsts.contains(&expected) {
            self.current = match self.open_segment(expected)? {
                Some(next) => Some(next),
                // Retention removed it since the listing.
                None => self.locate()?,
            };
            return Ok(AfterEnd::Switched);
        }
        if firsts
            .last()
            .is_none_or(|&newest| newest <= current.first_lsn)
        {
            return Ok(AfterEnd::Wait);
        }
        // A later segment exists but none starts at `expected`: the writer may have
        // finished this one since it was read, so read it once more before judging.
        if !looked_again {
            return Ok(AfterEnd::LookAgain);
        }
        match firsts.first() {
            // Retention removed what follows this segment: start again from the next
            // LSN wanted (truncated unless it was still being skipped to).
            Some(&oldest) if oldest > expected => {
                self.current = self.locate()?;
                Ok(AfterEnd::Switched)
            }
            _ => Err(corrupt(
                &current.name,
                current.offset,
                format!("the segment ends before LSN {expected} and no segment starts there"),
            )
            .into()),
        }
    }

    /// The segment holding `next_lsn` (`None` while the log has no segment).
    fn locate(&self) -> Result<Option<Current>> {
        // Retention may remove a segment between the listing and its opening: list again.
        for _ in 0..LOCATE_ATTEMPTS {
            let firsts = self.list()?;
            let Some(&oldest) = firsts.first() else {
                return Ok(None);
            };
            if self.next_lsn < oldest {
                return Err(LogError::Truncated {
                    requested: self.next_lsn - 1,
                    oldest,
                }
                .into());
            }
            let first = firsts
                .into_iter()
                .rfind(|&first| first <= self.next_lsn)
                .expect("invariant: the oldest segment starts at or before next_lsn");
            if let Some(current) = self.open_segment(first)? {
                return Ok(Some(current));
            }
        }
        Err(LogError::Io {
            context: format!(
                "opening the segment of LSN {} in {}: each one listed was removed before it \
                 could be opened",
                self.next_lsn,
                self.dir.display()
            ),
            source: std::io::ErrorKind::NotFound.into(),
        }
        .into())
    }

    /// The segment starting at `first_lsn`, from its start; `None` if it no longer exists.
    fn open_segment(&self, first_lsn: u64) -> Result<Option<Current>> {
        let name = super::segment_name(first_lsn);
        let file = match File::open(self.dir.join(&name)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(io_error(format!("opening {name} in {}", self.dir.display()))(e).into())
            }
        };
        Ok(Some(Current {
            first_lsn,
            name,
            file: Arc::new(file),
            offset: 0,
            lsn_at_offset: first_lsn,
        }))
    }

    /// The first LSNs of the segments in the directory, oldest first.
    fn list(&self) -> Result<Vec<u64>> {
        segment_firsts(&DirFs::new(&self.dir))
    }

    fn check_same_dir(&self) -> Result<()> {
        let held = self
            .held_dir
            .metadata()
            .map_err(io_error(format!("reading {}", self.dir.display())))?;
        let same = std::fs::metadata(&self.dir).is_ok_and(|now| identity(&now) == identity(&held));
        if same {
            Ok(())
        } else {
            Err(LogError::Replaced {
                dir: self.dir.clone(),
                next_lsn: self.next_lsn,
            }
            .into())
        }
    }
}

enum AfterEnd {
    /// The next segment was opened.
    Switched,
    /// Read the current segment once more.
    LookAgain,
    /// Nothing more is written yet.
    Wait,
}

/// Whether the bad record at `current`'s offset is damage rather than a record still being
/// written: read afresh it is still bad, and a valid record follows it. The log is written
/// in order, a batch at a time, so nothing valid is ever written after a record that is
/// still incomplete.
///
/// Only a window after the record is looked at, up to its last written byte, so that a
/// reader polling a torn tail (zeros after it) pays little on each look. A damaged record
/// longer than the window is taken for the end for now, as any bad record used to be.
fn damaged(current: &Current) -> std::io::Result<bool> {
    const WINDOW: usize = 1 << 20;
    let mut window = vec![0u8; WINDOW];
    let read = current.file.read_at(&mut window, current.offset)?;
    let written = window[..read]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |at| at + 1);
    let window = &window[..written];
    Ok(matches!(scan::next_record(window, 0), Next::Bad { .. })
        && scan::valid_record_after(window, 1, current.lsn_at_offset))
}
