//! The primary's members as a replica last heard them (`(name, address)`, from
//! heartbeats), kept in the replica's directory so that a replica restarted after its
//! primary died can still ask them in a promotion.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file, in the store's directory.
const FILE: &str = "members";

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The members last saved in `dir` (none if never saved, or unreadable: a promotion then
/// knows only what heartbeats tell it again).
pub(super) fn load(dir: &Path) -> Vec<(String, String)> {
    std::fs::read(path(dir))
        .ok()
        .and_then(|bytes| rmp_serde::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Saves `members` in `dir`: a temporary file, fsync, rename, directory fsync.
///
/// # Errors
/// An I/O failure (the old file stays).
pub(super) fn save(dir: &Path, members: &[(String, String)]) -> std::io::Result<()> {
    let bytes = rmp_serde::to_vec(members).map_err(std::io::Error::other)?;
    let temporary = dir.join(format!("{FILE}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path(dir))?;
        File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_saved_are_loaded_back_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_empty());
        let members = vec![("eu-1".to_owned(), "127.0.0.1:7401".to_owned())];
        save(dir.path(), &members).unwrap();
        assert_eq!(load(dir.path()), members);
        std::fs::write(path(dir.path()), b"garbage").unwrap();
        assert!(load(dir.path()).is_empty(), "an unreadable file is as none");
    }
}
