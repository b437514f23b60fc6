//! The file layer under the log, behind a trait so that tests can drop unsynced bytes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A directory of segment files.
pub trait LogFs: Send + Sync {
    /// Names of the files in the directory.
    ///
    /// # Errors
    /// The directory cannot be read.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens a file, creating it (empty) if `create` is set and it does not exist.
    ///
    /// # Errors
    /// The file cannot be opened or created.
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn SegmentFile>>;
    /// Removes a file.
    ///
    /// # Errors
    /// The file cannot be removed.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Renames a file, replacing any file of the new name.
    ///
    /// # Errors
    /// The file cannot be renamed.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes creations and removals in the directory durable.
    ///
    /// # Errors
    /// The directory cannot be synced.
    fn sync_dir(&self) -> io::Result<()>;
    /// The bytes an unprivileged writer may still allocate on the directory's disk, and
    /// the disk's size, if known.
    fn space(&self) -> Option<(u64, u64)>;
}

/// One segment file: positional reads and writes, and `fdatasync`.
pub trait SegmentFile: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
    ///
    /// # Errors
    /// The read fails.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`.
    ///
    /// # Errors
    /// The write fails.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every byte written so far durable (`fdatasync`).
    ///
    /// # Errors
    /// The sync fails; the caller must treat the file's state as unknown.
    fn sync_data(&self) -> io::Result<()>;
    /// The file's size in bytes.
    ///
    /// # Errors
    /// The size cannot be read.
    fn size(&self) -> io::Result<u64>;
    /// Reserves `len` bytes of zeros so that appends do not grow the file.
    ///
    /// # Errors
    /// The space cannot be reserved.
    fn preallocate(&self, len: u64) -> io::Result<()>;
    /// Cuts (or extends with zeros) the file to `len` bytes.
    ///
    /// # Errors
    /// The size cannot be set.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// Writes zeros over `from..to` of `file`, a MiB at a time (the range may be hundreds of
/// MiB: what a bulk load left).
///
/// # Errors
/// A write failed.
pub(super) fn write_zeros(file: &dyn SegmentFile, from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![0u8; (1 << 20).min(to.saturating_sub(from)) as usize];
    let mut at = from;
    while at < to {
        let len = (to - at).min(zeros.len() as u64) as usize;
        file.write_at(&zeros[..len], at)?;
        at += len as u64;
    }
    Ok(())
}

/// Segment files in a real directory.
#[derive(Debug)]
pub struct DirFs {
    dir: PathBuf,
}

impl DirFs {
    /// A log directory at `dir`, which must exist.
    #[must_use]
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }
}

impl LogFs for DirFs {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(self.dir.join(name))?;
        Ok(Arc::new(file))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.dir.join(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    #[allow(unsafe_code)]
    fn space(&self) -> Option<(u64, u64)> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: all-zero bytes are a valid `statvfs` (plain integers), filled in below.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is a NUL-terminated string and `stat` a valid place to write to,
        // both alive for the whole call.
        if unsafe { libc::statvfs(path.as_ptr(), &raw mut stat) } != 0 {
            return None;
        }
        let free = stat.f_bavail.checked_mul(stat.f_frsize)?;
        let size = stat.f_blocks.checked_mul(stat.f_frsize)?;
        // Some file systems (FUSE, pseudo ones) report no size at all: nothing known.
        (size > 0).then_some((free, size))
    }
}

impl SegmentFile for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match FileExt::read_at(self, &mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    #[allow(unsafe_code)]
    fn preallocate(&self, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let len = libc::off_t::try_from(len)
            .map_err(|_| io::Error::other("segment size overflows off_t"))?;
        // SAFETY: the descriptor is owned by `self` and open for writing for the whole call.
        let rc = unsafe { libc::posix_fallocate(self.as_raw_fd(), 0, len) };
        match rc {
            // On filesystems without fallocate, appends simply grow the file.
            0 | libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}
