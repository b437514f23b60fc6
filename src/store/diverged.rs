//! The loss account of a divergence (DESIGN guarantee 4): the entries a store holds from a
//! fork LSN on that the primary it follows never had, which tables and keys they touched,
//! and a report file that keeps them before a resync discards them.
//!
//! A report file is `MAGIC`, a `MessagePack` header (`fork_lsn`, `primary`, `written_ms`),
//! then each entry's log payload framed as `len u32 LE | crc32c u32 LE | payload`. It is
//! fsynced (with its directory) before anything is discarded.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_derive::{Deserialize, Serialize};

use super::{dir_io, Store};
use crate::codec::{decode_entry, Entry};
use crate::error::{Result, StoreError};
use crate::follow::{Divergence, SnapshotStart};
use crate::log::LogPosition;

const MAGIC: &[u8; 8] = b"RKVDIV1\n";
/// Entries read from the log per batch while a report is written.
const READ_BATCH: usize = 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    fork_lsn: u64,
    primary: String,
    written_ms: u64,
}

/// A divergence report read back from its file.
#[derive(Debug, Clone, PartialEq)]
pub struct DivergenceReport {
    /// The fork LSN.
    pub fork_lsn: u64,
    /// The primary the store tried to follow.
    pub primary: String,
    /// When the report was written (ms since the Unix epoch).
    pub written_ms: u64,
    /// The discarded entries, in LSN order.
    pub entries: Vec<Entry>,
}

fn corrupt(path: &Path, what: &str) -> crate::Error {
    StoreError::Corrupt {
        reason: format!("{}: not a divergence report ({what})", path.display()),
    }
    .into()
}

impl Store {
    /// Reads the entries this store holds from `fork_lsn` on, in batches, passing each
    /// batch (as stored) to `each`.
    fn each_local_only(
        &self,
        fork_lsn: u64,
        mut each: impl FnMut(&[crate::log::RawEntry]) -> Result<()>,
    ) -> Result<()> {
        let mut position = LogPosition::after(fork_lsn.saturating_sub(1));
        loop {
            let batch = self.read_log_raw(&mut position, READ_BATCH, usize::MAX)?;
            if batch.is_empty() {
                return Ok(());
            }
            each(&batch)?;
        }
    }

    /// What this store holds from `fork_lsn` on: entries, and the tables and keys they
    /// touched.
    ///
    /// # Errors
    /// The log no longer holds `fork_lsn` (it was cut by retention), corruption, I/O.
    pub fn divergence(&self, fork_lsn: u64) -> Result<Divergence> {
        let mut divergence = Divergence {
            fork_lsn,
            last_lsn: self.last_lsn(),
            entries: 0,
            touched: BTreeMap::new(),
        };
        self.each_local_only(fork_lsn, |batch| {
            for raw in batch {
                let entry = decode_entry(&raw.payload)?;
                divergence.entries += 1;
                for op in entry.ops {
                    divergence
                        .touched
                        .entry(op.table)
                        .or_default()
                        .insert(op.key);
                }
            }
            Ok(())
        })?;
        Ok(divergence)
    }

    /// Writes the entries from `fork_lsn` on to a new report file in `dir` (created if
    /// needed), durably, and returns its path. `primary` names the primary it diverged from.
    ///
    /// # Errors
    /// As [`Store::divergence`], or the file cannot be written.
    pub fn write_divergence_report(
        &self,
        fork_lsn: u64,
        primary: &str,
        dir: &Path,
    ) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(dir_io("cannot create", dir))?;
        let header = Header {
            fork_lsn,
            primary: primary.to_owned(),
            written_ms: super::commit::now_ms(),
        };
        let path = dir.join(format!("diverged-lsn{fork_lsn}-{}.rkvd", header.written_ms));
        let failed = |source: std::io::Error| -> crate::Error {
            StoreError::Io {
                context: "cannot write the divergence report",
                path: path.clone(),
                source,
            }
            .into()
        };
        let file = std::fs::File::create_new(&path).map_err(failed)?;
        let mut out = std::io::BufWriter::new(file);
        let header = rmp_serde::to_vec_named(&header).map_err(|e| StoreError::Corrupt {
            reason: format!("cannot encode a report header: {e}"),
        })?;
        let frame = |out: &mut std::io::BufWriter<std::fs::File>, bytes: &[u8]| {
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            out.write_all(&len.to_le_bytes())?;
            out.write_all(&crc32c::crc32c(bytes).to_le_bytes())?;
            out.write_all(bytes)
        };
        out.write_all(MAGIC).map_err(failed)?;
        frame(&mut out, &header).map_err(failed)?;
        self.each_local_only(fork_lsn, |batch| {
            for raw in batch {
                frame(&mut out, &raw.payload).map_err(failed)?;
            }
            Ok(())
        })?;
        let file = out.into_inner().map_err(|e| failed(e.into_error()))?;
        file.sync_all().map_err(failed)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(dir_io("cannot sync directory", dir))?;
        Ok(path)
    }
}

impl Store {
    /// Empties a follower store for a resync: its tables and log are replaced, atomically,
    /// by empty ones of no lineage (it joins its primary's next). The highest epoch seen
    /// is kept: emptying never lets a deposed primary back in.
    ///
    /// # Errors
    /// [`StoreError::ReadOnly`] on a store that is not a follower; I/O failures.
    pub fn discard_all(&self) -> Result<()> {
        let empty = SnapshotStart {
            lsn: 0,
            epoch: self.epoch(),
            id: (0, 0),
            lineage: 0,
            history: Vec::new(),
        };
        self.begin_install(empty)?.finish(&BTreeMap::new())?;
        tracing::warn!(path = %self.inner.path.display(), "discarded everything for a resync");
        Ok(())
    }
}

/// Reads a report written by [`Store::write_divergence_report`], checking every frame.
///
/// # Errors
/// The file cannot be read, or it is not an intact divergence report.
pub fn read_divergence_report(path: &Path) -> Result<DivergenceReport> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(dir_io("cannot read the divergence report", path))?;
    let Some(mut rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Err(corrupt(path, "wrong magic"));
    };
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let (Some(len), Some(crc)) = (rest.get(..4), rest.get(4..8)) else {
            return Err(corrupt(path, "a truncated frame header"));
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        let Some(body) = rest.get(8..8 + len) else {
            return Err(corrupt(path, "a truncated frame"));
        };
        if crc32c::crc32c(body) != crc {
            return Err(corrupt(path, "a frame's CRC does not match"));
        }
        frames.push(body);
        rest = &rest[8 + len..];
    }
    let Some((header, payloads)) = frames.split_first() else {
        return Err(corrupt(path, "no header"));
    };
    let header: Header =
        rmp_serde::from_slice(header).map_err(|_| corrupt(path, "an unreadable header"))?;
    let entries = payloads
        .iter()
        .map(|payload| decode_entry(payload))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DivergenceReport {
        fork_lsn: header.fork_lsn,
        primary: header.primary,
        written_ms: header.written_ms,
        entries,
    })
}
