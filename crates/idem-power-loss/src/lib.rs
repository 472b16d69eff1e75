//! A simulated power loss for SQLite files, for idem's crash harness (`idem chaos`).
//!
//! Killing a process loses nothing that reached the OS: the page cache still holds every
//! write, synced or not. A power loss also drops what no `fsync` covered, and that is what
//! the store's durability rests on (SPEC G7: a completion is synced before any client
//! sees its answer; with [`ClaimSync::Deferred`](https://docs.rs/idem-sqlite) claims are
//! not). This crate makes that loss happen, the way SQLite's own crash tests do with a
//! test VFS:
//!
//! 1. [`register`] adds a VFS named [`VFS_NAME`] that layers over the default one. A
//!    connection opened with that VFS name (`idem_sqlite::SqliteOptions::vfs`) works as
//!    usual, locking and WAL shared memory included, across processes; but before each
//!    write or truncation of the database, `-wal` or `-journal` file, it appends an undo
//!    record (where, the bytes about to be overwritten or cut off, the size before) to
//!    that file's side file, [`side_file`] (`idem.db-wal.unsynced`). A successful sync of
//!    the file empties its side file: those writes are durable now.
//!    [`register_with_journal_dir`] puts the side files in a directory of their own
//!    instead ([`side_file_in`]: `idem.db-wal.<hash of its absolute path>.unsynced`).
//! 2. After every process using the file has been killed (`SIGKILL`, all of them),
//!    [`roll_back_unsynced`] (or [`roll_back_unsynced_in`] with the journal directory)
//!    applies each side file's records newest first, so every byte is back to what it
//!    was at the file's last sync, removes the side files, and removes the `-shm` file
//!    (shared memory never survives a power loss; SQLite rebuilds the WAL index from the
//!    `-wal` file). Its [`Summary`] lists every file that had a side file, records or
//!    not, so a harness can check the journal was used.
//!
//! # A full disk
//!
//! The undo record of a write is appended before the write, so it needs space first.
//! With the side files next to the database, a full database filesystem fails the append
//! before the write, even an in-place overwrite a real full disk would take; keep the
//! journal directory on another filesystem and only what needs new space fails, as on a
//! real disk. Either way an append that fails for want of space (`ENOSPC`, `EDQUOT`)
//! fails the write or truncation with `SQLITE_FULL`, what SQLite hears from a full disk,
//! never an I/O error.
//!
//! # What it models, and what not
//!
//! * Every write not covered by a later sync of the same file is lost, all of them: the
//!   harshest outcome a disk that honours `fsync` may produce. Real disks lose less, and
//!   may lose it differently: writes reordered or torn within one sync interval, a sector
//!   half written. Those are not modelled; SQLite's WAL checksums cover them, and SQLite's
//!   own test suite tests them.
//! * A write that races a sync of the same file (in another process) is held back until
//!   the sync finished, so it is never counted durable by a sync that began before it.
//!   The two take the side file's `flock` (writes shared, a sync exclusive) with bounded
//!   retries, 2 s at least, then fail: a sync with `SQLITE_IOERR_FSYNC`, a write or
//!   truncation with `SQLITE_IOERR_WRITE` or `SQLITE_IOERR_TRUNCATE`. A real disk would
//!   not make one process wait for another at all; the lock is held for one system call,
//!   so a wait this long means the holder is stopped (`SIGSTOP`, a pause fault) inside
//!   it, and failing the sync is the choice that keeps the model honest: going ahead
//!   unlocked would either forget the stopped write's record though its write may land
//!   after the `fsync` (a gentler loss than real), or keep records of writes the `fsync`
//!   made durable (a loss of synced data, a false alarm). SQLite recovers from the
//!   error: a failed checkpoint is retried later, a failed commit is rolled back and
//!   reported. A process stopped outside these calls holds no side-file lock.
//! * Creating, deleting and resizing files through other paths is durable at once: a
//!   deleted `-wal` or `-journal` stays deleted (its side file goes with it), a file
//!   created stays, whether or not its directory was synced. Extending a file by a size
//!   hint (`SQLITE_FCNTL_SIZE_HINT`, only with a chunk size set) is not recorded.
//! * Files are found by the path SQLite opened them with; a database reached through a
//!   symbolic link has its side files next to the link's target (or, in a journal
//!   directory, named after the target's path).
//! * The VFS is registered once per process, with one placement of the side files; a
//!   second registration asking for another fails ([`RegisterError::OtherJournal`]).
//!
//! # Unsafe code
//!
//! The workspace forbids unsafe code; this crate denies it everywhere except `shim`,
//! which implements SQLite's VFS interface in C ABI. No crate fits in its place:
//! `sqlite-plugin` and `sqlite-vfs` implement a VFS from scratch in Rust (their own
//! locking, and for `sqlite-plugin` shared memory handed back as raw pointers;
//! `sqlite-vfs` has no WAL at all), while a power-loss layer must keep the default unix
//! VFS's locking and shared memory so several processes share one file in WAL mode, and
//! forwarding to another VFS's C methods is unsafe whatever library wraps it. The shim
//! is thin: it forwards every call, and all of the journaling, records and roll-back is
//! safe Rust (`journal`, `record`, `rollback`).
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use idem_sqlite::{SqliteOptions, SqliteStore};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("idem.db");
//! idem_power_loss::register()?; // before any connection names the VFS
//! let store = SqliteStore::open(SqliteOptions::new(&path).vfs(idem_power_loss::VFS_NAME)).await?;
//! // ... serve; then kill every process that has the file open ...
//! # store.close().await;
//! let summary = idem_power_loss::roll_back_unsynced(&path)?;
//! assert_eq!(summary.records(), 0); // a clean close synced everything
//! # Ok(())
//! # }
//! ```

#![deny(unsafe_code)]

mod journal;
mod record;
mod rollback;
#[allow(unsafe_code)]
mod shim;
mod side;

use std::path::{Path, PathBuf};

pub use rollback::{FileSummary, RollBackError, Summary, roll_back_unsynced, roll_back_unsynced_in};
pub use side::{SIDE_SUFFIX, side_file, side_file_in};

use side::Placement;

/// The name the VFS is registered under, to open a connection with
/// (`idem_sqlite::SqliteOptions::vfs`, SQLite's `vfs=` URI parameter).
pub const VFS_NAME: &str = "idem-unsynced-journal";

/// Why the VFS could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// SQLite has no default VFS to layer over, or refused the registration (its result
    /// code).
    #[error("registering the SQLite VFS {VFS_NAME} failed with SQLite result code {0}")]
    Sqlite(i32),
    /// The VFS is registered once per process, and this process registered it already
    /// with its side files elsewhere (`None`: next to each file).
    #[error(
        "the SQLite VFS {VFS_NAME} is registered already with side files {}, not {}",
        placed(.registered.as_deref()),
        placed(.asked.as_deref())
    )]
    OtherJournal {
        /// Where the first registration put the side files.
        registered: Option<PathBuf>,
        /// Where this one asked for them.
        asked: Option<PathBuf>,
    },
    /// The journal directory could not be created or resolved to an absolute path.
    #[error("the power-loss journal directory {dir}: {reason}")]
    JournalDir {
        /// The directory as given.
        dir: PathBuf,
        /// The I/O error.
        reason: String,
    },
}

fn placed(dir: Option<&Path>) -> String {
    dir.map_or_else(|| "next to each file".to_owned(), |dir| format!("in {}", dir.display()))
}

/// Registers the VFS [`VFS_NAME`] in this process's SQLite (the one idem-sqlite links),
/// layered over the default VFS, without making it the default, with each file's side
/// file next to it ([`side_file`]; roll back with [`roll_back_unsynced`]). Call it
/// before opening any connection with that VFS name; calling it again does nothing more
/// and returns the first outcome.
///
/// # Errors
/// [`RegisterError::Sqlite`] if SQLite has no default VFS or refuses the registration;
/// [`RegisterError::OtherJournal`] if [`register_with_journal_dir`] registered the VFS
/// in this process before.
pub fn register() -> Result<(), RegisterError> {
    register_at(Placement::NextToFile)
}

/// Registers the VFS as [`register`] does, but with every side file in `journal_dir`
/// ([`side_file_in`]; roll back with [`roll_back_unsynced_in`] and the same
/// directory), created if missing. Put it on another filesystem than the database, so a
/// full database filesystem fails SQLite's writes as a real full disk does
/// (`SQLITE_FULL`, overwrites still succeeding) while the undo records still fit.
///
/// The VFS is registered once per process with one placement: calling this again with
/// the same directory (however spelled) returns the first outcome; with another, or
/// after [`register`], it fails.
///
/// # Errors
/// [`RegisterError::JournalDir`] if the directory cannot be created or resolved;
/// [`RegisterError::OtherJournal`] if the VFS is registered already with its side files
/// elsewhere; [`RegisterError::Sqlite`] as for [`register`].
pub fn register_with_journal_dir(journal_dir: &Path) -> Result<(), RegisterError> {
    let failed =
        |error: std::io::Error| RegisterError::JournalDir { dir: journal_dir.to_path_buf(), reason: error.to_string() };
    std::fs::create_dir_all(journal_dir).map_err(failed)?;
    register_at(Placement::InDir(std::fs::canonicalize(journal_dir).map_err(failed)?))
}

fn register_at(asked: Placement) -> Result<(), RegisterError> {
    let (registered, outcome) = shim::register(asked.clone());
    outcome.map_err(RegisterError::Sqlite)?;
    if *registered != asked {
        return Err(RegisterError::OtherJournal {
            registered: registered.dir().map(Path::to_path_buf),
            asked: asked.dir().map(Path::to_path_buf),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_registered_name_is_the_published_one() {
        assert_eq!(super::shim::NAME.to_str(), Ok(super::VFS_NAME));
    }
}
