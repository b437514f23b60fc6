//! Whose log this is: the id of the store directory whose tables it feeds, in a file of
//! its own beside the segments. Nothing in a segment names its store, so without it a log
//! moved in from another store (or a tables file moved beside another store's log) would
//! replay one history onto another's tables, silently.

use std::io;

use super::fs::LogFs;
use super::synced::{seal, unseal, MARK_BYTES as OWNER_BYTES};

/// The owner's file, in the log directory: the id sealed as the synced mark is (8 bytes,
/// little-endian, and the CRC-32C of those bytes).
pub const OWNER_FILE: &str = "owner";

/// What the owner's file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// There is none: a new log, or one written before logs named their store.
    Unknown,
    /// The file does not read back whole: it says nothing.
    Damaged,
    /// The id of the store whose log this is.
    Store(u64),
}

/// Reads the owner of the log in `fs`.
///
/// # Errors
/// The file exists but cannot be read.
pub fn read_owner(fs: &dyn LogFs) -> io::Result<Owner> {
    let file = match fs.open(OWNER_FILE, false) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Owner::Unknown),
        Err(err) => return Err(err),
    };
    let mut bytes = [0u8; OWNER_BYTES];
    let read = file.read_at(&mut bytes, 0)?;
    if read != OWNER_BYTES || file.size()? != OWNER_BYTES as u64 {
        return Ok(Owner::Damaged);
    }
    Ok(unseal(&bytes).map_or(Owner::Damaged, Owner::Store))
}

/// Durably records `store_id` as the owner of the log in `fs`.
///
/// # Errors
/// The file cannot be written or synced.
pub fn write_owner(fs: &dyn LogFs, store_id: u64) -> io::Result<()> {
    let file = fs.open(OWNER_FILE, true)?;
    file.set_len(0)?;
    file.write_at(&seal(store_id), 0)?;
    file.sync_data()?;
    fs.sync_dir()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::memfs::MemFs;

    #[test]
    fn an_owner_written_reads_back_and_any_damage_is_told() {
        let fs = MemFs::default();
        assert_eq!(read_owner(&fs).unwrap(), Owner::Unknown);
        write_owner(&fs, 0xfeed_beef).unwrap();
        assert_eq!(read_owner(&fs).unwrap(), Owner::Store(0xfeed_beef));
        write_owner(&fs, 7).unwrap();
        assert_eq!(read_owner(&fs).unwrap(), Owner::Store(7));
        let file = fs.open(OWNER_FILE, false).unwrap();
        let mut pristine = [0u8; OWNER_BYTES];
        file.read_at(&mut pristine, 0).unwrap();
        for at in 0..OWNER_BYTES {
            let mut damaged = pristine;
            damaged[at] ^= 0x10;
            file.write_at(&damaged, 0).unwrap();
            assert_eq!(read_owner(&fs).unwrap(), Owner::Damaged, "byte {at}");
        }
        file.write_at(&pristine, 0).unwrap();
        file.set_len(5).unwrap();
        assert_eq!(read_owner(&fs).unwrap(), Owner::Damaged, "cut short");
    }
}
