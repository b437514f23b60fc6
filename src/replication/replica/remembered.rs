//! What a replica last heard from its primary's heartbeats and must still know once the
//! primary is gone, kept in files of the replica's directory: the members that listen
//! (`(name, address)`, whom a promotion asks), their store directories' ids (which one
//! counts under each name) and the primary's settings (what a promotion serves with
//! unless told otherwise). Each file starts with the CRC-32C of the rest, so
//! that damage is told apart from a file never saved.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::replication::handover::Settings;

/// The members' file, in the store's directory.
const MEMBERS: &str = "members";
/// The file of the members' store ids, in the store's directory.
const MEMBER_IDS: &str = "member_ids";
/// The settings' file, in the store's directory.
const SETTINGS: &str = "primary_settings";

/// What `file` in `dir` holds: `None` if it was never saved, an error naming the damage
/// if it cannot be read back whole (its checksum is that of what was saved).
fn load<T: DeserializeOwned>(dir: &Path, file: &str) -> Result<Option<T>, String> {
    let path = dir.join(file);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("{} cannot be read: {err}", path.display())),
    };
    let damaged = |what: &str| format!("{} is damaged: {what}", path.display());
    let Some((sum, body)) = bytes.split_first_chunk::<4>() else {
        return Err(damaged("shorter than its checksum"));
    };
    if u32::from_le_bytes(*sum) != crc32c::crc32c(body) {
        return Err(damaged("its checksum does not match"));
    }
    rmp_serde::from_slice(body)
        .map(Some)
        .map_err(|err| damaged(&err.to_string()))
}

/// Saves `value` as `file` in `dir`: a temporary file, fsync, rename, directory fsync.
fn save<T: Serialize>(dir: &Path, file: &str, value: &T) -> std::io::Result<()> {
    let body = rmp_serde::to_vec(value).map_err(std::io::Error::other)?;
    let mut bytes = crc32c::crc32c(&body).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
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

/// The members last saved in `dir` (none if never saved, or damaged: a promotion then
/// asks only those that heartbeats name again, and counts toward its rule only those it
/// reaches, so it is refused rather than unsafe).
pub(super) fn members(dir: &Path) -> Vec<(String, String)> {
    load_or_forget(dir, MEMBERS, "the primary's members")
}

/// What `file` in `dir` holds, or nothing if it was never saved or is damaged (`what` it
/// holds is then forgotten until heartbeats say it again, and a warning says so).
fn load_or_forget<T: DeserializeOwned + Default>(dir: &Path, file: &str, what: &str) -> T {
    load(dir, file)
        .unwrap_or_else(|damage| {
            tracing::warn!(%damage, "{what} are forgotten until the primary names them again");
            None
        })
        .unwrap_or_default()
}

/// Saves `members` in `dir`.
///
/// # Errors
/// An I/O failure (the old file stays).
pub(super) fn save_members(dir: &Path, members: &[(String, String)]) -> std::io::Result<()> {
    save(dir, MEMBERS, &members)
}

/// The members' store ids last saved in `dir` (none if never saved, or damaged: a
/// promotion then tells no directory apart, as before they were heard).
pub(super) fn member_ids(dir: &Path) -> Vec<(String, u64)> {
    load_or_forget(dir, MEMBER_IDS, "the members' store ids")
}

/// Saves the members' store `ids` in `dir`.
///
/// # Errors
/// An I/O failure (the old file stays).
pub(super) fn save_member_ids(dir: &Path, ids: &[(String, u64)]) -> std::io::Result<()> {
    save(dir, MEMBER_IDS, &ids)
}

/// The primary's settings last saved in `dir`, if any were.
///
/// # Errors
/// The file is damaged (or unreadable): what it says.
pub(super) fn settings(dir: &Path) -> Result<Option<Settings>, String> {
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
        assert!(members(dir.path()).is_empty(), "a damaged file is as none");
    }

    #[test]
    fn settings_saved_are_loaded_back_and_a_damaged_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(settings(dir.path()), Ok(None));
        let mut options = PrimaryOptions::default();
        options.sync.quorum = 2;
        options
            .sync
            .table_modes
            .insert("consent".into(), crate::store::Durability::Sync);
        let saved = Settings::of(&options);
        save_settings(dir.path(), &saved).unwrap();
        assert_eq!(settings(dir.path()), Ok(Some(saved)));
        // Any one byte flipped is told (a flip inside a table's name would decode).
        let file = dir.path().join(SETTINGS);
        let pristine = std::fs::read(&file).unwrap();
        for at in 0..pristine.len() {
            let mut damaged = pristine.clone();
            damaged[at] ^= 0x01;
            std::fs::write(&file, &damaged).unwrap();
            let read = settings(dir.path());
            assert!(
                read.as_ref().is_err_and(|e| e.contains("damaged")),
                "{at}: {read:?}"
            );
        }
        std::fs::write(&file, b"\xc1").unwrap();
        assert!(settings(dir.path()).is_err());
    }
}
