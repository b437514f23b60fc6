//! Opening the log: listing its segments, and recovering them against the tables'
//! checkpoint (replaying what follows it, cutting a torn tail, refusing damage).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use super::cut::Cutter;
use super::large::{LargeRecord, Replayed, LARGE_RECORD};
use super::recent::Recent;
use super::scan::{self, ChunkReader, EntryId, Next};
use super::synced::SyncedMark;
use super::{
    corrupt, io_error, segment_name, Log, LogFs, LogOptions, Segment, Tail, DROPPED_SUFFIX,
    SEGMENT_SUFFIX,
};
use crate::codec;
use crate::error::{LogError, Result};

/// Removes what a crash left of dropped segments (they are outside the log already).
fn remove_dropped(fs: &dyn LogFs) -> Result<()> {
    let names = fs.list().map_err(io_error("listing the log directory"))?;
    for name in names.iter().filter(|n| n.ends_with(DROPPED_SUFFIX)) {
        fs.remove(name)
            .map_err(io_error(format!("removing {name}")))?;
    }
    Ok(())
}

/// The first LSNs of the segments `fs` lists, oldest first (other files are not the log's).
pub(super) fn segment_firsts(fs: &dyn LogFs) -> Result<Vec<u64>> {
    let mut firsts: Vec<u64> = fs
        .list()
        .map_err(io_error("listing the log directory"))?
        .iter()
        .filter_map(|name| name.strip_suffix(SEGMENT_SUFFIX)?.parse().ok())
        .collect();
    firsts.sort_unstable();
    Ok(firsts)
}

/// A valid record found by recovery: read whole, or (a large one) to be read in pieces.
enum Found<'a> {
    Whole {
        payload: &'a [u8],
        crc: u32,
        end: u64,
    },
    Large(LargeRecord),
}

/// Where recovery found no valid record.
struct Cut<'a> {
    segment: &'a Segment,
    offset: u64,
    /// The LSN the record there should have carried.
    expected: u64,
    checkpoint_lsn: u64,
    last_segment: bool,
}

/// The large record at `offset` (see [`LARGE_RECORD`]), or why it is bad; `None` if no
/// large record is there.
fn large_record(
    reader: &mut ChunkReader,
    segment: &Segment,
    offset: u64,
) -> std::io::Result<Option<std::result::Result<LargeRecord, String>>> {
    if reader
        .record_len(offset)?
        .is_none_or(|len| len <= LARGE_RECORD)
    {
        return Ok(None);
    }
    let Some(large) = LargeRecord::at(&*segment.file, offset)? else {
        return Ok(None);
    };
    Ok(Some(if large.checks(&*segment.file)? {
        Ok(large)
    } else {
        Err("record checksum mismatch".to_owned())
    }))
}

/// Checks that `found`, the record at `offset` of `segment`, carries LSN `expected`, and
/// replays it if it is at or after `start`; returns its identity and where it ends.
fn replay_found(
    segment: &Segment,
    offset: u64,
    found: Found<'_>,
    expected: u64,
    start: u64,
    replay: &mut impl FnMut(Replayed<'_>) -> Result<()>,
) -> Result<(EntryId, u64)> {
    let (id, end) = match &found {
        Found::Whole { payload, crc, end } => (EntryId::of(payload, *crc), *end),
        Found::Large(large) => (large.id(), large.end()),
    };
    if id.lsn != expected {
        let reason = format!("found LSN {}, expected {expected}", id.lsn);
        return Err(corrupt(&segment.name, offset, reason).into());
    }
    if id.lsn >= start {
        replay(match found {
            Found::Whole { payload, .. } => Replayed::Whole(
                codec::decode_entry(payload)
                    .map_err(|e| corrupt(&segment.name, offset, e.to_string()))?,
            ),
            Found::Large(large) => Replayed::Large(large.entry(&*segment.file, &segment.name)),
        })?;
    }
    Ok((id, end))
}

impl Log {
    /// Opens (or creates) the log, recovering it against `checkpoint_lsn`, the last LSN the
    /// tables are known to hold. Every entry after it is passed to `replay`, in order: a
    /// large one (a bulk load's) as ops to read in pieces, any other whole.
    ///
    /// A bad record is cut as a torn tail only if it is in the last segment, after the
    /// checkpoint, and no valid record follows it; anything else is [`LogError::Corrupt`].
    ///
    /// # Errors
    /// Corruption, a gap in the LSNs, a log that ends before `checkpoint_lsn`, I/O failures,
    /// or an error returned by `replay`.
    pub fn open(
        fs: Box<dyn LogFs>,
        options: LogOptions,
        checkpoint_lsn: u64,
        mut replay: impl FnMut(Replayed<'_>) -> Result<()>,
    ) -> Result<Self> {
        remove_dropped(&*fs)?;
        let firsts = segment_firsts(&*fs)?;
        let mut segments = Vec::with_capacity(firsts.len());
        for first_lsn in firsts {
            let name = segment_name(first_lsn);
            let file = fs
                .open(&name, false)
                .map_err(io_error(format!("opening {name}")))?;
            let capacity = file.size().map_err(io_error(format!("sizing {name}")))?;
            segments.push(Arc::new(Segment {
                first_lsn,
                name,
                file,
                capacity,
                allocated: AtomicU64::new(capacity),
                newest_ms: OnceLock::new(),
            }));
        }
        let fs: Arc<dyn LogFs> = Arc::from(fs);
        let synced = Arc::new(SyncedMark::open(Arc::clone(&fs)));
        options.unsynced.record_in(Arc::clone(&synced));
        let log = Self {
            cutter: Cutter::new(Arc::clone(&fs), options.segment_bytes),
            fs,
            recent: Recent::new(options.recent_bytes),
            options,
            segments: RwLock::new(Vec::new()),
            tail: Mutex::new(Tail {
                offset: 0,
                next_lsn: checkpoint_lsn + 1,
            }),
            last: Mutex::new(None),
            dropping: Mutex::new(()),
            synced,
            unchecked: AtomicU64::new(0),
        };
        // A segment file is empty when a crash came between creating it and preallocating
        // it (or when preallocation is not supported), and holds nothing. At the log's end
        // the next roll creates it again: kept, it would be listed twice, and retention could
        // drop the stale copy, renaming away the file being written. Alone, it is removed
        // only where the log begins anyway: anything else is for recovery to judge.
        let alone = segments.len() == 1;
        let stale = segments
            .pop_if(|last| last.capacity == 0 && (!alone || last.first_lsn == checkpoint_lsn + 1));
        if let Some(empty) = stale {
            log.fs
                .remove(&empty.name)
                .map_err(io_error(format!("removing the empty {}", empty.name)))?;
        }
        if segments.is_empty() {
            let synced = log.synced.lsn();
            if synced > checkpoint_lsn {
                let reason = format!(
                    "no segment holds the entries after LSN {checkpoint_lsn}, which the tables \
                     have applied, but the log was synced up to LSN {synced}"
                );
                return Err(corrupt(&segment_name(checkpoint_lsn + 1), 0, reason).into());
            }
            let first_bytes = log.options.first_segment_bytes;
            let segment = log.create_segment(checkpoint_lsn + 1, first_bytes, 0)?;
            segments.push(segment);
        } else {
            let tail = log.recover(&segments, checkpoint_lsn, &mut replay)?;
            *log.tail
                .lock()
                .expect("invariant: no panic while holding the tail lock") = tail;
        }
        *log.segments
            .write()
            .expect("invariant: no panic while holding the segment list") = segments;
        Ok(log)
    }

    fn recover(
        &self,
        segments: &[Arc<Segment>],
        checkpoint_lsn: u64,
        replay: &mut impl FnMut(Replayed<'_>) -> Result<()>,
    ) -> Result<Tail> {
        let start = checkpoint_lsn + 1;
        let Some(first_index) = segments.iter().rposition(|s| s.first_lsn <= start) else {
            return Err(corrupt(
                &segments[0].name,
                0,
                format!("the log starts after LSN {start}, which the tables have not applied"),
            )
            .into());
        };
        let mut expected = segments[first_index].first_lsn;
        let last_index = segments.len() - 1;
        let mut last = None;
        for (index, segment) in segments.iter().enumerate().skip(first_index) {
            if segment.first_lsn != expected {
                return Err(corrupt(
                    &segment.name,
                    0,
                    format!("expected the segment to start at LSN {expected}"),
                )
                .into());
            }
            // Streamed in chunks: a segment is never read into memory whole.
            let mut reader = ChunkReader::new(Arc::clone(&segment.file));
            let reading = |source| LogError::Io {
                context: format!("reading {}", segment.name),
                source,
            };
            let mut offset = 0u64;
            loop {
                let next = match large_record(&mut reader, segment, offset).map_err(reading)? {
                    Some(Ok(large)) => Ok(Found::Large(large)),
                    Some(Err(reason)) => Err(Some(reason)),
                    None => match reader.next_record(offset).map_err(reading)? {
                        Next::Record { payload, crc, end } => Ok(Found::Whole {
                            payload,
                            crc,
                            end: end as u64,
                        }),
                        Next::End => Err(None),
                        Next::Bad { reason } => Err(Some(reason)),
                        // A bulk load that never committed: cut at once, in the last segment.
                        Next::Unfinished if index == last_index && expected > checkpoint_lsn => {
                            self.zero_from(segment, offset)?;
                            break;
                        }
                        Next::Unfinished => {
                            Err(Some("a record that was never finished".to_owned()))
                        }
                    },
                };
                let reason = match next {
                    Ok(found) => {
                        let (id, end) =
                            replay_found(segment, offset, found, expected, start, replay)?;
                        last = Some(id);
                        expected += 1;
                        offset = end;
                        continue;
                    }
                    Err(reason) => reason,
                };
                // Zeros: the end, if the next chunk holds only zeros too (see `zeros_from`).
                if reason.is_none() && reader.zeros_from(offset).map_err(reading)? {
                    break;
                }
                let cut = Cut {
                    segment,
                    offset,
                    expected,
                    checkpoint_lsn,
                    last_segment: index == last_index,
                };
                self.cut_torn_tail(&reader, &cut, reason)?;
                break;
            }
            if index == last_index {
                self.check_end(segment, offset, expected - 1, checkpoint_lsn)?;
                // What was replayed may have reached the page cache without its
                // fdatasync (a kill -9, a failed sync): make it durable before anything
                // built on it is, or a later power loss could take back visible writes.
                if self.options.fsync {
                    segment
                        .file
                        .sync_data()
                        .map_err(io_error(format!("syncing {}", segment.name)))?;
                }
                *self.last.lock().unwrap_or_else(PoisonError::into_inner) = last;
                return Ok(Tail {
                    offset,
                    next_lsn: expected,
                });
            }
        }
        unreachable!("the loop returns at the last segment")
    }

    /// Cuts the log at `cut.offset`, where no valid record is (`reason` says what is
    /// there, `None` for bytes after a zero length), if that is a torn tail; anything else
    /// is damage. What follows the bad record decides which, so all of it is read.
    fn cut_torn_tail(
        &self,
        reader: &ChunkReader,
        cut: &Cut<'_>,
        reason: Option<String>,
    ) -> Result<()> {
        let Cut {
            segment,
            offset,
            expected,
            ..
        } = *cut;
        let rest = reader
            .rest_from(offset)
            .map_err(io_error(format!("reading {}", segment.name)))?;
        let reason = match (reason, scan::next_record(&rest, 0)) {
            (Some(reason), _) | (None, Next::Bad { reason }) => reason,
            (None, _) => "unexpected bytes after the end of the log".to_owned(),
        };
        // A hole (valid records after the bad one) is torn only in a follower's
        // records that no sync covered; a bad record a sync covered is damage.
        let torn = cut.last_segment
            && expected > cut.checkpoint_lsn.max(self.synced.lsn())
            && (self.options.holes_are_torn || !scan::valid_record_after(&rest, 1, expected));
        if !torn {
            return Err(corrupt(&segment.name, offset, reason).into());
        }
        tracing::warn!(segment = %segment.name, offset, lsn = expected, %reason, "cutting a torn tail from the log");
        self.zero_tail(segment, &rest, offset)
    }

    /// A log that ends at `last_lsn` (at `offset` of `segment`) must hold what the tables
    /// applied, and what a sync is known to have made durable.
    fn check_end(
        &self,
        segment: &Segment,
        offset: u64,
        last_lsn: u64,
        checkpoint_lsn: u64,
    ) -> Result<()> {
        let reason = if last_lsn < checkpoint_lsn {
            format!(
                "the log ends at LSN {last_lsn} but the tables have applied LSN {checkpoint_lsn}"
            )
        } else if last_lsn < self.synced.lsn() {
            format!(
                "the log ends at LSN {last_lsn} but was synced up to LSN {}",
                self.synced.lsn()
            )
        } else {
            return Ok(());
        };
        Err(corrupt(&segment.name, offset, reason).into())
    }

    /// Overwrites a torn tail with zeros so that later appends never sit before old garbage;
    /// `rest` holds the segment's bytes from `from` to its end.
    fn zero_tail(&self, segment: &Segment, rest: &[u8], from: u64) -> Result<()> {
        let end = rest
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |last| last + 1);
        self.zero_range(segment, from, from + end as u64, "cutting the torn tail of")
    }

    /// Overwrites with zeros everything of `segment` from `from` to its end (a bulk load
    /// that never committed may have left hundreds of MiB).
    fn zero_from(&self, segment: &Segment, from: u64) -> Result<()> {
        tracing::warn!(segment = %segment.name, offset = from, "cutting a bulk load that never committed from the log");
        let end = segment
            .file
            .size()
            .map_err(io_error(format!("reading the size of {}", segment.name)))?;
        self.zero_range(segment, from, end, "cutting the unfinished tail of")
    }
}
