//! The power loss itself: every write not yet synced is taken back.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::record::decode_all;
use crate::side::{Placement, resolved};

/// Why a roll-back could not finish. Files already rolled back stay rolled back.
#[derive(Debug, thiserror::Error)]
#[error("rolling back the unsynced writes of {path}: {source}")]
pub struct RollBackError {
    /// The file (or side file) that could not be read, written or removed.
    pub path: PathBuf,
    /// The failure.
    #[source]
    pub source: io::Error,
}

/// What a roll-back dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// One entry per file that had a side file, in the order database, `-wal`,
    /// `-journal`, whether or not it held records: every file opened through the VFS
    /// has one from its opening until the file is deleted (a `-wal` deleted by the last
    /// connection's clean close takes its side file along) or rolled back. So a harness
    /// can tell the journal was used: the `-wal` of a database in WAL mode whose
    /// processes were killed is listed ([`Summary::journaled_files`]).
    pub files: Vec<FileSummary>,
    /// Whether a `-shm` file was there and was removed.
    pub shm_removed: bool,
}

impl Summary {
    /// Writes and truncations taken back, over all files.
    #[must_use]
    pub fn records(&self) -> usize {
        self.files.iter().map(|file| file.records).sum()
    }

    /// The files that had a side file, records or not (the paths of [`Summary::files`]).
    pub fn journaled_files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|file| file.path.as_path())
    }
}

/// What a roll-back dropped from one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSummary {
    /// The database, `-wal` or `-journal` file, named as the caller named the database
    /// (with its suffix appended).
    pub path: PathBuf,
    /// Its side file, removed now.
    pub side_file: PathBuf,
    /// Writes and truncations taken back.
    pub records: usize,
    /// Bytes those writes had written.
    pub bytes_dropped: u64,
    /// Bytes of the side file that held no whole record (a record torn by the kill; its
    /// write never happened) and were skipped.
    pub torn_bytes: usize,
    /// The file's size before and after the roll-back.
    pub size_before: u64,
    /// See `size_before`.
    pub size_after: u64,
}

/// Simulates a power loss on the SQLite database at `db_path`, after every process that
/// had it open through [`crate::VFS_NAME`] has been killed: takes back every write to the
/// database, its `-wal` and its `-journal` that no sync covered (newest first, so each
/// region ends as it was at its last sync), removes the side files, and removes the
/// `-shm` file, since shared memory never survives a power loss.
///
/// Run it only while no process has the database open: a live process would keep writing
/// and its `-shm` would be pulled from under it. Files without a side file are left as
/// they are.
///
/// This reads the side files next to each file, where [`crate::register`] puts them;
/// after [`crate::register_with_journal_dir`], use [`roll_back_unsynced_in`].
///
/// # Errors
/// [`RollBackError`] when a file cannot be read, written or removed.
pub fn roll_back_unsynced(db_path: &Path) -> Result<Summary, RollBackError> {
    roll_back(db_path, db_path, &Placement::NextToFile)
}

/// Simulates a power loss as [`roll_back_unsynced`] does, reading the side files from
/// `journal_dir`, where [`crate::register_with_journal_dir`] with that directory put
/// them ([`crate::side_file_in`]). `db_path` may be relative or a symbolic link: the
/// files rolled back are the ones SQLite wrote, next to the resolved path.
///
/// # Errors
/// [`RollBackError`] when a file cannot be read, written or removed.
pub fn roll_back_unsynced_in(db_path: &Path, journal_dir: &Path) -> Result<Summary, RollBackError> {
    roll_back(db_path, &resolved(db_path), &Placement::InDir(journal_dir.to_path_buf()))
}

/// Rolls back the database `db` (and its `-wal`, `-journal`), reported as `named`.
fn roll_back(named: &Path, db: &Path, placement: &Placement) -> Result<Summary, RollBackError> {
    let mut summary = Summary::default();
    for suffix in ["", "-wal", "-journal"] {
        let file = suffixed(db, suffix);
        if let Some(mut rolled_back) = roll_back_file(&file, &placement.side_file(&file))? {
            rolled_back.path = suffixed(named, suffix);
            summary.files.push(rolled_back);
        }
    }
    summary.shm_removed = remove_if_there(&suffixed(db, "-shm"))?;
    Ok(summary)
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Takes back `path`'s unsynced writes, if it has a side file, `side`.
fn roll_back_file(path: &Path, side: &Path) -> Result<Option<FileSummary>, RollBackError> {
    let failed = |at: &Path| {
        let at = at.to_path_buf();
        move |source| RollBackError { path: at, source }
    };
    let bytes = match std::fs::read(side) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(failed(side)(error)),
    };
    let (records, torn_bytes) = decode_all(&bytes);
    let mut summary = FileSummary {
        path: path.to_path_buf(),
        side_file: side.to_path_buf(),
        records: records.len(),
        bytes_dropped: 0,
        torn_bytes,
        size_before: 0,
        size_after: 0,
    };
    if !records.is_empty() && path.exists() {
        // (A file deleted after its records were written, by a process killed before it
        // removed the side file, has nothing left to roll back.)
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(failed(path))?;
        summary.size_before = file.metadata().map_err(failed(path))?.len();
        for undo in records.iter().rev() {
            file.write_all_at(&undo.old_bytes, undo.offset).map_err(failed(path))?;
            file.set_len(undo.old_size).map_err(failed(path))?;
            summary.bytes_dropped += undo.written;
        }
        file.sync_all().map_err(failed(path))?;
        summary.size_after = file.metadata().map_err(failed(path))?.len();
    }
    std::fs::remove_file(side).map_err(failed(side))?;
    Ok(Some(summary))
}

fn remove_if_there(path: &Path) -> Result<bool, RollBackError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(RollBackError { path: path.to_path_buf(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{FileAccess, Journal};
    use crate::side::side_file;

    /// A plain file read through std, standing in for SQLite's handle.
    struct Plain(std::fs::File);

    impl FileAccess for Plain {
        fn size(&mut self) -> io::Result<u64> {
            Ok(self.0.metadata()?.len())
        }
        fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.0.read_exact_at(buf, offset)
        }
    }

    #[test]
    fn writes_and_truncations_after_the_last_sync_are_taken_back_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        std::fs::write(&path, b"0123456789").unwrap();
        let journal = Journal::open(&Placement::NextToFile, &path).unwrap();
        let mut plain = Plain(OpenOptions::new().read(true).write(true).open(&path).unwrap());

        // Synced: an overwrite and an append.
        let held = journal.before_write(&mut plain, 2, 3).unwrap();
        plain.0.write_all_at(b"abc", 2).unwrap();
        drop(held);
        let held = journal.before_sync().unwrap();
        journal.synced().unwrap();
        drop(held);
        let synced = std::fs::read(&path).unwrap();

        // Not synced: an overwrite across the end, a truncation, a write past the end.
        let held = journal.before_write(&mut plain, 8, 4).unwrap();
        plain.0.write_all_at(b"WXYZ", 8).unwrap();
        drop(held);
        let held = journal.before_truncate(&mut plain, 4).unwrap();
        plain.0.set_len(4).unwrap();
        drop(held);
        let held = journal.before_write(&mut plain, 6, 2).unwrap();
        plain.0.write_all_at(b"!!", 6).unwrap();
        drop(held);
        assert_ne!(std::fs::read(&path).unwrap(), synced);

        let summary = roll_back_unsynced(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), synced);
        assert_eq!(summary.records(), 3);
        assert_eq!(summary.files[0].bytes_dropped, 6);
        assert_eq!((summary.files[0].size_before, summary.files[0].size_after), (8, 10));
        assert!(!side_file(&path).exists());
    }

    #[test]
    fn a_side_file_whose_file_is_gone_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        std::fs::write(&path, b"abc").unwrap();
        let journal = Journal::open(&Placement::NextToFile, &path).unwrap();
        let mut plain = Plain(OpenOptions::new().read(true).open(&path).unwrap());
        drop(journal.before_write(&mut plain, 0, 1).unwrap());
        std::fs::remove_file(&path).unwrap();
        let summary = roll_back_unsynced(&path).unwrap();
        assert_eq!(summary.records(), 1);
        assert!(!path.exists() && !side_file(&path).exists());
    }

    #[test]
    fn a_file_without_a_side_file_is_untouched_and_the_shm_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        std::fs::write(&path, b"kept").unwrap();
        std::fs::write(dir.path().join("g.db-shm"), b"index").unwrap();
        let summary = roll_back_unsynced(&path).unwrap();
        assert_eq!(summary, Summary { files: vec![], shm_removed: true });
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
        assert!(!dir.path().join("g.db-shm").exists());
    }
}
