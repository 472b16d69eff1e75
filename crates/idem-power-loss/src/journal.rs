//! One open file's side file: the undo records of its writes not yet synced.
//!
//! Safe Rust; the shim (`shim.rs`) hands it the file through [`FileAccess`], which reads
//! through SQLite's own open handle. Opening a second descriptor on a database file is
//! not an option: closing it would drop every POSIX lock this process holds on the file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use crate::record::{OLD_BYTES_MAX, Undo};
use crate::side::Placement;

/// How long a write, truncation or sync waits for the side file's lock before it fails
/// (at least; sleeps may overrun). The lock is held for one `pwrite`, `ftruncate` or
/// `fsync`, so a wait this long means its holder is stopped (`SIGSTOP`) or stuck: a
/// real disk would not make another process wait for it, and a bounded failure (an I/O
/// error SQLite reports and recovers from) is nearer that than hanging until the holder
/// resumes.
pub(crate) const LOCK_WAIT_MAX: Duration = Duration::from_secs(2);

/// The first sleep between tries for the lock, doubled up to [`LOCK_SLEEP_MAX`]: a lock
/// held for one system call is usually free after the first.
const LOCK_SLEEP_FIRST: Duration = Duration::from_micros(100);
const LOCK_SLEEP_MAX: Duration = Duration::from_millis(10);

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
    /// Opens (creating it if missing) the side file of `file`, where `placement` puts it.
    pub(crate) fn open(placement: &Placement, file: &Path) -> io::Result<Journal> {
        let side = OpenOptions::new().create(true).append(true).open(placement.side_file(file))?;
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
    /// Fails with [`io::ErrorKind::TimedOut`] after [`LOCK_WAIT_MAX`] if a write or
    /// truncation holds the file meanwhile.
    pub(crate) fn before_sync(&self) -> io::Result<Held<'_>> {
        self.hold(File::try_lock)
    }

    /// Forgets every record: the file is synced, its writes are durable.
    pub(crate) fn synced(&self) -> io::Result<()> {
        self.side.set_len(0)
    }

    fn hold_shared(&self) -> io::Result<Held<'_>> {
        self.hold(File::try_lock_shared)
    }

    /// Takes the side file's `flock` with `try_lock`, retrying with growing sleeps for
    /// [`LOCK_WAIT_MAX`] (a blocking `flock` would wait for a stopped holder forever).
    fn hold(&self, try_lock: fn(&File) -> Result<(), TryLockError>) -> io::Result<Held<'_>> {
        let (mut slept, mut sleep) = (Duration::ZERO, LOCK_SLEEP_FIRST);
        loop {
            match try_lock(&self.side) {
                Ok(()) => return Ok(Held(&self.side)),
                Err(TryLockError::Error(error)) => return Err(error),
                Err(TryLockError::WouldBlock) if slept >= LOCK_WAIT_MAX => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "the side file stayed locked"));
                }
                Err(TryLockError::WouldBlock) => {
                    std::thread::sleep(sleep);
                    slept += sleep;
                    sleep = (sleep * 2).min(LOCK_SLEEP_MAX);
                }
            }
        }
    }

    /// Appends one record in one `write(2)` (`O_APPEND`: atomic against other appenders).
    fn append(&self, undo: &Undo) -> io::Result<()> {
        (&self.side).write_all(&undo.encode())
    }
}

/// Whether `error` says the side file's filesystem is full (`ENOSPC`) or the quota
/// spent (`EDQUOT`): SQLite should hear `SQLITE_FULL`, as from a full disk, rather than
/// an I/O error.
pub(crate) fn is_full(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

/// Removes `file`'s side file, if there is one: the file itself was deleted.
pub(crate) fn remove_side_file(placement: &Placement, file: &Path) -> io::Result<()> {
    match std::fs::remove_file(placement.side_file(file)) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_waits_for_a_held_write_only_so_long() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.db");
        let journal = Journal::open(&Placement::NextToFile, &file).unwrap();
        // A write in another process, stopped while it holds the lock: another open
        // file description conflicts like another process's.
        let writer = File::open(crate::side::side_file(&file)).unwrap();
        writer.lock_shared().unwrap();
        let error = journal.before_sync().expect_err("the write holds the side file");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        writer.unlock().unwrap();
        drop(journal.before_sync().expect("free once the write is done"));
    }

    #[test]
    fn enospc_and_edquot_are_a_full_disk_and_other_errors_are_not() {
        // Linux's errno values: ENOSPC 28, EDQUOT 122, EIO 5.
        assert!(is_full(&io::Error::from_raw_os_error(28)));
        assert!(is_full(&io::Error::from_raw_os_error(122)));
        assert!(!is_full(&io::Error::from_raw_os_error(5)));
        assert!(!is_full(&io::Error::new(io::ErrorKind::TimedOut, "locked")));
    }
}
