//! Reading entries back: from the batches kept in memory when they cover the range asked
//! for, else from the segment files.

use std::sync::{Arc, PoisonError};

use super::recent::Appended;
use super::scan::{self, ChunkReader, Next};
use super::{corrupt, io_error, segment_name, Log, LogPosition, RawEntry};
use crate::codec::{self, Entry};
use crate::error::{LogError, Result};

impl Log {
    /// The identity `(epoch, crc)` of the entry at `lsn` if it is the last one written:
    /// known without a read (the entry a snapshot of the current state starts at, which
    /// may be a bulk load of hundreds of MiB).
    pub fn last_entry_id(&self, lsn: u64) -> Option<(u64, u32)> {
        // Not the tail's lock: an append holds that through its fdatasync.
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .filter(|last| last.lsn == lsn)
            .map(|last| (last.epoch, last.crc))
    }

    /// The commit time of the newest entry of the segment that starts at `first_lsn`, or
    /// `None` for the last segment (still written) or one no longer retained. Known without
    /// a read for a segment this log filled; read once for one from before it opened
    /// (reading means reading the segment up to that entry: a bulk load's segment is one
    /// entry of 100 MB).
    ///
    /// # Errors
    /// Corruption, I/O.
    pub fn newest_ms(&self, first_lsn: u64) -> Result<Option<u64>> {
        let (segment, newest) = {
            let segments = self
                .segments
                .read()
                .expect("invariant: no panic while holding the segment list");
            let Some(index) = segments.iter().position(|s| s.first_lsn == first_lsn) else {
                return Ok(None);
            };
            let Some(next) = segments.get(index + 1) else {
                return Ok(None);
            };
            (Arc::clone(&segments[index]), next.first_lsn - 1)
        };
        if let Some(ms) = segment.newest_ms.get() {
            return Ok(Some(*ms));
        }
        let mut found = None;
        let mut position = LogPosition::after(newest.saturating_sub(1));
        self.read_payloads(&mut position, newest, 1, usize::MAX, |_, _, payload| {
            found = codec::payload_timestamp(payload);
            Ok(())
        })?;
        if let Some(ms) = found {
            let _ = segment.newest_ms.set(ms);
        }
        Ok(found)
    }

    /// Reads entries from `position` up to `up_to` (inclusive), at most `max_entries`, and
    /// stops after the entry that crosses `max_bytes`. Advances `position`.
    ///
    /// # Errors
    /// [`LogError::Truncated`] if the position is before the oldest retained entry,
    /// [`LogError::Corrupt`] for a damaged record, I/O failures.
    pub fn read(
        &self,
        position: &mut LogPosition,
        up_to: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        self.read_payloads(
            position,
            up_to,
            max_entries,
            max_bytes,
            |segment, offset, payload| {
                let entry = codec::decode_entry(payload)
                    .map_err(|e| corrupt(segment, offset, e.to_string()))?;
                entries.push(entry);
                Ok(())
            },
        )?;
        Ok(entries)
    }

    /// Like [`Log::read`], but hands out each entry's payload as stored, for shipping.
    ///
    /// # Errors
    /// As [`Log::read`].
    pub fn read_raw(
        &self,
        position: &mut LogPosition,
        up_to: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<RawEntry>> {
        let mut entries = Vec::new();
        self.read_payloads(position, up_to, max_entries, max_bytes, |_, _, payload| {
            entries.push(RawEntry::new(payload.to_vec()));
            Ok(())
        })?;
        Ok(entries)
    }

    pub(super) fn read_payloads(
        &self,
        position: &mut LogPosition,
        up_to: u64,
        max_entries: usize,
        max_bytes: usize,
        mut deliver: impl FnMut(&str, u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        if position.next_lsn > up_to || max_entries == 0 {
            return Ok(());
        }
        let segments = self
            .segments
            .read()
            .expect("invariant: no panic while holding the segment list")
            .clone();
        let oldest = segments[0].first_lsn;
        if position.next_lsn < oldest {
            return Err(LogError::Truncated {
                requested: position.next_lsn,
                oldest,
            }
            .into());
        }
        if let Some(batches) = self.recent.from(position.next_lsn, up_to, max_entries) {
            return read_kept(&batches, position, up_to, max_entries, max_bytes, deliver);
        }
        let mut index = segments
            .iter()
            .rposition(|s| s.first_lsn <= position.next_lsn)
            .expect("invariant: next_lsn >= the first segment's LSN");
        let (mut expected, mut offset) = match position.hint {
            Some((first, offset)) if first == segments[index].first_lsn => {
                (position.next_lsn, offset)
            }
            _ => (segments[index].first_lsn, 0),
        };
        let (mut delivered, mut bytes) = (0usize, 0usize);
        let mut reader = ChunkReader::new(Arc::clone(&segments[index].file));
        while position.next_lsn <= up_to && delivered < max_entries && bytes < max_bytes {
            let segment = &segments[index];
            match reader
                .next_record(offset)
                .map_err(io_error(format!("reading {}", segment.name)))?
            {
                Next::Record { payload, end, .. } => {
                    let lsn = codec::payload_lsn(payload).unwrap_or(0);
                    if lsn != expected {
                        return Err(corrupt(
                            &segment.name,
                            offset,
                            format!("found LSN {lsn}, expected {expected}"),
                        )
                        .into());
                    }
                    if lsn == position.next_lsn {
                        deliver(&segment.name, offset, payload)?;
                        delivered += 1;
                        bytes += payload.len();
                        position.next_lsn += 1;
                    }
                    expected += 1;
                    offset = end as u64;
                }
                Next::End if index + 1 < segments.len() => {
                    index += 1;
                    if segments[index].first_lsn != expected {
                        return Err(corrupt(
                            &segments[index].name,
                            0,
                            format!("expected the segment to start at LSN {expected}"),
                        )
                        .into());
                    }
                    reader = ChunkReader::new(Arc::clone(&segments[index].file));
                    offset = 0;
                }
                Next::End => {
                    return Err(corrupt(
                        &segment.name,
                        offset,
                        format!("the log ends before LSN {up_to}"),
                    )
                    .into());
                }
                Next::Bad { reason } => return Err(corrupt(&segment.name, offset, reason).into()),
                Next::Unfinished => {
                    return Err(corrupt(&segment.name, offset, "an unfinished record").into())
                }
            }
        }
        position.hint = Some((segments[index].first_lsn, offset));
        Ok(())
    }
}

/// [`Log::read_payloads`] from batches kept in memory (see [`super::recent::Recent`]),
/// which hold every entry from `position` to the end of the log.
fn read_kept(
    batches: &[Arc<Appended>],
    position: &mut LogPosition,
    up_to: u64,
    max_entries: usize,
    max_bytes: usize,
    mut deliver: impl FnMut(&str, u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let (mut delivered, mut bytes) = (0usize, 0usize);
    for batch in batches {
        let name = segment_name(batch.segment_first_lsn);
        let end = batch.offset + batch.records.len() as u64;
        // The hint, where it points into this batch, saves walking its first records.
        let mut at = match position.hint {
            Some((segment, offset))
                if segment == batch.segment_first_lsn && (batch.offset..end).contains(&offset) =>
            {
                offset - batch.offset
            }
            _ => 0,
        };
        while at < batch.records.len() as u64
            && position.next_lsn <= up_to
            && delivered < max_entries
            && bytes < max_bytes
        {
            let offset = batch.offset + at;
            let (payload, record_end) = match scan::next_record(&batch.records, at as usize) {
                Next::Record { payload, end, .. } => (payload, end),
                Next::End => return Err(corrupt(&name, offset, "a kept batch ends early").into()),
                Next::Bad { reason } => return Err(corrupt(&name, offset, reason).into()),
                Next::Unfinished => {
                    return Err(corrupt(&name, offset, "an unfinished record").into())
                }
            };
            let lsn = codec::payload_lsn(payload).unwrap_or(0);
            if lsn > position.next_lsn {
                return Err(corrupt(
                    &name,
                    offset,
                    format!("found LSN {lsn}, expected {}", position.next_lsn),
                )
                .into());
            }
            if lsn == position.next_lsn {
                deliver(&name, offset, payload)?;
                delivered += 1;
                bytes += payload.len();
                position.next_lsn += 1;
            }
            at = record_end as u64;
            position.hint = Some((batch.segment_first_lsn, batch.offset + at));
        }
    }
    Ok(())
}
