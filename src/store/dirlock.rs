//! One process owns a store directory: an exclusive `flock` on `LOCK`, which holds the pid.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Result, StoreError};

/// The file in a store's directory that holds the lock.
pub(super) const LOCK_FILE: &str = "LOCK";

/// Held for as long as the store is open; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    #[allow(unsafe_code)]
    pub(crate) fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let io = |source| StoreError::Io {
            context: "cannot lock",
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: the descriptor belongs to `file`, which outlives the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(err).into());
            }
            let mut text = String::new();
            let owner = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(StoreError::Locked {
                path: dir.to_path_buf(),
                owner,
                command: owner.and_then(command_line),
                holder: None,
            }
            .into());
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

/// The command line of process `pid` as `ps` shows it, shortened to a readable length;
/// `None` for this process, or where `/proc` does not tell (another system, a process gone).
fn command_line(pid: u32) -> Option<String> {
    const MAX_CHARS: usize = 400;
    if pid == std::process::id() {
        return None;
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|word| !word.is_empty())
        .map(|word| String::from_utf8_lossy(word).into_owned())
        .collect();
    let line = words.join(" ");
    if line.is_empty() {
        return None;
    }
    Some(match line.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    })
}
