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
//! 2. After every process using the file has been killed (`SIGKILL`, all of them),
//!    [`roll_back_unsynced`] applies each side file's records newest first, so every
//!    byte is back to what it was at the file's last sync, removes the side files, and
//!    removes the `-shm` file (shared memory never survives a power loss; SQLite rebuilds
//!    the WAL index from the `-wal` file).
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
//! * Creating, deleting and resizing files through other paths is durable at once: a
//!   deleted `-wal` or `-journal` stays deleted (its side file goes with it), a file
//!   created stays, whether or not its directory was synced. Extending a file by a size
//!   hint (`SQLITE_FCNTL_SIZE_HINT`, only with a chunk size set) is not recorded.
//! * Files are found by the path SQLite opened them with; a database reached through a
//!   symbolic link has its side files next to the link's target.
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

pub use journal::{SIDE_SUFFIX, side_file};
pub use rollback::{FileSummary, RollBackError, Summary, roll_back_unsynced};

/// The name the VFS is registered under, to open a connection with
/// (`idem_sqlite::SqliteOptions::vfs`, SQLite's `vfs=` URI parameter).
pub const VFS_NAME: &str = "idem-unsynced-journal";

/// Why the VFS could not be registered: SQLite's result code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("registering the SQLite VFS {VFS_NAME} failed with SQLite result code {0}")]
pub struct RegisterError(pub i32);

/// Registers the VFS [`VFS_NAME`] in this process's SQLite (the one idem-sqlite links),
/// layered over the default VFS, without making it the default. Call it before opening
/// any connection with that VFS name; calling it again does nothing more and returns the
/// first outcome.
///
/// # Errors
/// [`RegisterError`] if SQLite has no default VFS or refuses the registration.
pub fn register() -> Result<(), RegisterError> {
    shim::register().map_err(RegisterError)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_registered_name_is_the_published_one() {
        assert_eq!(super::shim::NAME.to_str(), Ok(super::VFS_NAME));
    }
}
