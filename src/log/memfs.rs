//! An in-memory [`LogFs`] that can freeze at a chosen operation and then produce the image a
//! power loss would leave: only what was fdatasync'ed (and directory entries that were
//! synced) survives, plus, at random, part of what the page cache had not written back.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex};

use super::{LogFs, SegmentFile};

#[derive(Default)]
struct FsState {
    files: BTreeMap<String, Arc<MemFile>>,
    durable_names: BTreeSet<String>,
    ops_until_freeze: Option<u64>,
    frozen: bool,
    /// Calls that read a file (`read_at` and `size`).
    reads: u64,
    /// The bytes all files may hold together, as a disk of that size would.
    space: Option<u64>,
}

impl FsState {
    /// Counts one mutating operation; `Err` once the freeze point has passed.
    fn tick(&mut self) -> io::Result<()> {
        if let Some(left) = self.ops_until_freeze.as_mut() {
            if *left == 0 {
                self.frozen = true;
            } else {
                *left -= 1;
            }
        }
        if self.frozen {
            Err(io::Error::other("simulated power loss"))
        } else {
            Ok(())
        }
    }

    /// The bytes all files hold together.
    fn used(&self) -> u64 {
        self.files
            .values()
            .map(|f| f.data.lock().unwrap().len() as u64)
            .sum()
    }

    /// Counts one operation that makes `file` `len` bytes long if it is shorter; `Err`
    /// (`ENOSPC`, nothing changed) if that growth would make the files hold more than
    /// `space`. Like a disk, it never refuses a write within the bytes a file holds.
    fn tick_growing(&mut self, file: &MemFile, len: u64) -> io::Result<()> {
        self.tick()?;
        let Some(space) = self.space else {
            return Ok(());
        };
        let growth = len.saturating_sub(file.data.lock().unwrap().len() as u64);
        if growth > 0 && self.used() + growth > space {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }
}

#[derive(Default)]
struct MemFile {
    data: Mutex<Vec<u8>>,
    synced: Mutex<Vec<u8>>,
}

/// See the module docs.
#[derive(Clone, Default)]
pub(crate) struct MemFs {
    state: Arc<Mutex<FsState>>,
}

struct Handle {
    fs: MemFs,
    file: Arc<MemFile>,
}

/// A tiny deterministic generator, so a failing seed can be replayed.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(super) fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

impl MemFs {
    /// From now on the files together hold at most `space` bytes (`None`: no limit): what
    /// would grow past it fails with `ENOSPC` and changes nothing.
    pub(crate) fn limit_space(&self, space: Option<u64>) {
        self.state.lock().unwrap().space = space;
    }

    /// Lets the files grow by `headroom` bytes beyond what they hold now, measured and set
    /// at once, so that a writer in another thread cannot grow them in between.
    pub(crate) fn leave_room(&self, headroom: u64) {
        let mut state = self.state.lock().unwrap();
        state.space = Some(state.used() + headroom);
    }

    /// The bytes all files hold together.
    pub(crate) fn used(&self) -> u64 {
        self.state.lock().unwrap().used()
    }

    /// Every mutating operation after the next `ops` fails and changes nothing.
    pub(crate) fn freeze_after(&self, ops: u64) {
        self.state.lock().unwrap().ops_until_freeze = Some(ops);
    }

    /// The files a power loss at this moment would leave behind.
    pub(super) fn crash_image(&self, rng: &mut Rng) -> MemFs {
        let state = self.state.lock().unwrap();
        let mut image = FsState::default();
        for name in &state.durable_names {
            let Some(file) = state.files.get(name) else {
                continue;
            };
            let mut kept = file.synced.lock().unwrap().clone();
            let data = file.data.lock().unwrap();
            if rng.below(2) == 0 {
                // Part of the unsynced data reached the disk before the power went.
                let upto = rng.below(data.len() as u64 + 1) as usize;
                if kept.len() < upto {
                    kept.resize(upto, 0);
                }
                kept[..upto].copy_from_slice(&data[..upto]);
            }
            let copy = MemFile {
                data: Mutex::new(kept.clone()),
                synced: Mutex::new(kept),
            };
            image.files.insert(name.clone(), Arc::new(copy));
            image.durable_names.insert(name.clone());
        }
        MemFs {
            state: Arc::new(Mutex::new(image)),
        }
    }

    /// The files a kill -9 at this moment would leave: everything written survives (the
    /// page cache outlives the process), but only what was synced is durable.
    pub(crate) fn restart_image(&self) -> MemFs {
        self.image(|file| {
            (
                file.data.lock().unwrap().clone(),
                file.synced.lock().unwrap().clone(),
            )
        })
    }

    /// The files a power loss would leave, keeping exactly what was synced.
    pub(crate) fn power_loss_image(&self) -> MemFs {
        self.image(|file| {
            let synced = file.synced.lock().unwrap().clone();
            (synced.clone(), synced)
        })
    }

    fn image(&self, contents: impl Fn(&MemFile) -> (Vec<u8>, Vec<u8>)) -> MemFs {
        let state = self.state.lock().unwrap();
        let mut image = FsState::default();
        for name in &state.durable_names {
            if let Some(file) = state.files.get(name) {
                let (data, synced) = contents(file);
                let copy = MemFile {
                    data: Mutex::new(data),
                    synced: Mutex::new(synced),
                };
                image.files.insert(name.clone(), Arc::new(copy));
                image.durable_names.insert(name.clone());
            }
        }
        MemFs {
            state: Arc::new(Mutex::new(image)),
        }
    }

    /// Flips one byte of a file, as a disk error would.
    pub(super) fn flip_byte(&self, name: &str, offset: usize) {
        let state = self.state.lock().unwrap();
        let file = &state.files[name];
        for buf in [&file.data, &file.synced] {
            buf.lock().unwrap()[offset] ^= 0x5a;
        }
    }

    /// Cuts a file to `len` bytes, as damage or a careless hand would.
    pub(super) fn truncate(&self, name: &str, len: usize) {
        let state = self.state.lock().unwrap();
        let file = &state.files[name];
        for buf in [&file.data, &file.synced] {
            buf.lock().unwrap().truncate(len);
        }
    }

    /// The current length of the data written to a file, ignoring trailing zeros.
    pub(super) fn written_len(&self, name: &str) -> usize {
        let state = self.state.lock().unwrap();
        let data = state.files[name].data.lock().unwrap();
        data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
    }

    /// How many times a file was read or sized so far.
    pub(super) fn reads(&self) -> u64 {
        self.state.lock().unwrap().reads
    }

    pub(super) fn names(&self) -> Vec<String> {
        self.state.lock().unwrap().files.keys().cloned().collect()
    }
}

impl LogFs for MemFs {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.names())
    }

    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn SegmentFile>> {
        let mut state = self.state.lock().unwrap();
        let file = match state.files.get(name) {
            Some(file) => Arc::clone(file),
            None if create => {
                state.tick()?;
                let file = Arc::new(MemFile::default());
                state.files.insert(name.to_owned(), Arc::clone(&file));
                file
            }
            None => return Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        Ok(Arc::new(Handle {
            fs: self.clone(),
            file,
        }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.tick()?;
        state.files.remove(name);
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.tick()?;
        // Like a removal, durable at once (a crash never brings the old name back).
        let file = state
            .files
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        state.files.insert(to.to_owned(), file);
        if state.durable_names.remove(from) {
            state.durable_names.insert(to.to_owned());
        }
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.tick()?;
        state.durable_names = state.files.keys().cloned().collect();
        Ok(())
    }

    fn space(&self) -> Option<(u64, u64)> {
        let state = self.state.lock().unwrap();
        let space = state.space?;
        Some((space.saturating_sub(state.used()), space))
    }
}

impl SegmentFile for Handle {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.fs.state.lock().unwrap().reads += 1;
        let data = self.file.data.lock().unwrap();
        let start = (offset as usize).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.fs
            .state
            .lock()
            .unwrap()
            .tick_growing(&self.file, offset + buf.len() as u64)?;
        let mut data = self.file.data.lock().unwrap();
        let end = offset as usize + buf.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.fs.state.lock().unwrap().tick()?;
        let data = self.file.data.lock().unwrap().clone();
        *self.file.synced.lock().unwrap() = data;
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        self.fs.state.lock().unwrap().reads += 1;
        Ok(self.file.data.lock().unwrap().len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.fs.state.lock().unwrap().tick()?;
        for buf in [&self.file.data, &self.file.synced] {
            buf.lock().unwrap().resize(len as usize, 0);
        }
        Ok(())
    }

    fn preallocate(&self, len: u64) -> io::Result<()> {
        self.fs
            .state
            .lock()
            .unwrap()
            .tick_growing(&self.file, len)?;
        let mut data = self.file.data.lock().unwrap();
        if (data.len() as u64) < len {
            data.resize(len as usize, 0);
        }
        Ok(())
    }
}
