//! One open file's side file: the undo records of its writes not yet synced.
//!
//! Safe Rust; the shim (`shim.rs`) hands it the file through [`FileAccess`], which reads
//! through SQLite's own open handle. Opening a second descriptor on a database file is
//! not an option: closing it would drop every POSIX lock this process holds on the file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::record::{OLD_BYTES_MAX, Undo};

/// What the side file of `file` is called: the file's name with `.unsynced` appended
/// (`idem.db.unsynced`, `idem.db-wal.unsynced`).
#[must_use]
pub fn side_file(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(SIDE_SUFFIX);
    PathBuf::from(name)
}

/// The side file's suffix.
pub const SIDE_SUFFIX: &str = ".unsynced";

/// Reads the file as it stands, through the handle SQLite writes it with.
pub(crate) trait FileAccess {
    /// The file's size in bytes.
    fn size(&mut self) -> io::Result<u64>;
    /// Fills `buf` from `offset`, which lies with `buf` within the file.
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

/// The side file of one open database, WAL or rollback-journal file.
///
/// Writes and truncations hold a shared `flock` on the side file from before their
/// record is appended until the change is made; a sync holds it exclusively from before
/// the `fsync` until the side file is emptied. So a change either finished before the
/// `fsync` began (and is durable) or its record outlives the emptying.
#[derive(Debug)]
pub(crate) struct Journal {
    side: File,
}

/// A held `flock`, released when dropped.
#[derive(Debug)]
pub(crate) struct Held<'a>(&'a File);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Closing the side file, or the process ending, releases it anyway.
        let _ = self.0.unlock();
    }
}

impl Journal {
    /// Opens (creating it if missing) the side file of `file`.
    pub(crate) fn open(file: &Path) -> io::Result<Journal> {
        let side = OpenOptions::new().create(true).append(true).open(side_file(file))?;
        Ok(Journal { side })
    }

    /// Records what writing `length` bytes at `offset` will overwrite; the write must be
    /// made while the returned guard is held.
    pub(crate) fn before_write(&self, file: &mut impl FileAccess, offset: u64, length: u64) -> io::Result<Held<'_>> {
        let held = self.hold_shared()?;
        let old_size = file.size()?;
        let kept = old_size.saturating_sub(offset).min(length);
        let mut old_bytes = vec![0; usize::try_from(kept).map_err(io::Error::other)?];
        file.read_exact_at(&mut old_bytes, offset)?;
        self.append(&Undo { offset, old_size, written: length, old_bytes })?;
        Ok(held)
    }

    /// Records what truncating to `new_size` will cut off (in records of at most
    /// [`OLD_BYTES_MAX`] bytes, so memory stays bounded); the truncation must be made
    /// while the returned guard is held.
    pub(crate) fn before_truncate(&self, file: &mut impl FileAccess, new_size: u64) -> io::Result<Held<'_>> {
        let held = self.hold_shared()?;
        let old_size = file.size()?;
        if new_size >= old_size {
            self.append(&Undo { offset: new_size, old_size, written: 0, old_bytes: Vec::new() })?;
        }
        let mut offset = new_size;
        while offset < old_size {
            let length = (old_size - offset).min(OLD_BYTES_MAX as u64);
            let mut old_bytes = vec![0; usize::try_from(length).map_err(io::Error::other)?];
            file.read_exact_at(&mut old_bytes, offset)?;
            self.append(&Undo { offset, old_size, written: 0, old_bytes })?;
            offset += length;
        }
        Ok(held)
    }

    /// Holds off every write and truncation of the file (in every process) while it is
    /// synced; call [`Journal::synced`] once the sync succeeded, then drop the guard.
    pub(crate) fn before_sync(&self) -> io::Result<Held<'_>> {
        self.side.lock()?;
        Ok(Held(&self.side))
    }

    /// Forgets every record: the file is synced, its writes are durable.
    pub(crate) fn synced(&self) -> io::Result<()> {
        self.side.set_len(0)
    }

    fn hold_shared(&self) -> io::Result<Held<'_>> {
        self.side.lock_shared()?;
        Ok(Held(&self.side))
    }

    /// Appends one record in one `write(2)` (`O_APPEND`: atomic against other appenders).
    fn append(&self, undo: &Undo) -> io::Result<()> {
        (&self.side).write_all(&undo.encode())
    }
}

/// Removes `file`'s side file, if there is one: the file itself was deleted.
pub(crate) fn remove_side_file(file: &Path) -> io::Result<()> {
    match std::fs::remove_file(side_file(file)) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
