//! What a replica last heard from its primary's heartbeats and must still know once the
//! primary is gone, kept in files of the replica's directory: the members that listen
//! (`(name, address)`, whom a promotion asks) and the primary's settings (what a promotion
//! serves with unless told otherwise).

use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::replication::handover::Settings;

/// The members' file, in the store's directory.
const MEMBERS: &str = "members";
/// The settings' file, in the store's directory.
const SETTINGS: &str = "primary_settings";

/// What `file` in `dir` holds (`None` if it was never saved, or is unreadable: what the
/// next heartbeat says then holds).
fn load<T: DeserializeOwned>(dir: &Path, file: &str) -> Option<T> {
    std::fs::read(dir.join(file))
        .ok()
        .and_then(|bytes| rmp_serde::from_slice(&bytes).ok())
}

/// Saves `value` as `file` in `dir`: a temporary file, fsync, rename, directory fsync.
fn save<T: Serialize>(dir: &Path, file: &str, value: &T) -> std::io::Result<()> {
    let bytes = rmp_serde::to_vec(value).map_err(std::io::Error::other)?;
    let temporary = dir.join(format!("{file}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut out = File::create(&temporary)?;
        out.write_all(&bytes)?;
        out.sync_all()?;
        std::fs::rename(&temporary, dir.join(file))?;
        File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

/// The members last saved in `dir` (none if never saved, or unreadable: a promotion then
/// knows only what heartbeats tell it again).
pub(super) fn members(dir: &Path) -> Vec<(String, String)> {
    load(dir, MEMBERS).unwrap_or_default()
}

/// Saves `members` in `dir`.
///
/// # Errors
/// An I/O failure (the old file stays).
pub(super) fn save_members(dir: &Path, members: &[(String, String)]) -> std::io::Result<()> {
    save(dir, MEMBERS, &members)
}

/// The primary's settings last saved in `dir`, if any were.
pub(super) fn settings(dir: &Path) -> Option<Settings> {
    load(dir, SETTINGS)
}

/// Saves the primary's `settings` in `dir`.
///
/// # Errors
/// An I/O failure (the old file stays).
pub(super) fn save_settings(dir: &Path, settings: &Settings) -> std::io::Result<()> {
    save(dir, SETTINGS, settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::primary::PrimaryOptions;

    #[test]
    fn members_saved_are_loaded_back_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(members(dir.path()).is_empty());
        let saved = vec![("eu-1".to_owned(), "127.0.0.1:7401".to_owned())];
        save_members(dir.path(), &saved).unwrap();
        assert_eq!(members(dir.path()), saved);
        std::fs::write(dir.path().join(MEMBERS), b"garbage").unwrap();
        assert!(
            members(dir.path()).is_empty(),
            "an unreadable file is as none"
        );
    }

    #[test]
    fn settings_saved_are_loaded_back_and_a_damaged_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(settings(dir.path()), None);
        let mut options = PrimaryOptions::default();
        options.sync.quorum = 2;
        options
            .sync
            .table_modes
            .insert("consent".into(), crate::store::Durability::Sync);
        let saved = Settings::of(&options);
        save_settings(dir.path(), &saved).unwrap();
        assert_eq!(settings(dir.path()), Some(saved));
        std::fs::write(dir.path().join(SETTINGS), b"\xc1").unwrap();
        assert_eq!(settings(dir.path()), None);
    }
}
