//! Helpers shared by the integration tests: real SQLite files in temporary directories, and
//! idem-core's fixtures (ids, fingerprints, the policy, responses) every store's tests share.

#![allow(dead_code, unreachable_pub)] // each test binary uses its own subset

use std::path::PathBuf;

#[allow(unused_imports)] // each test binary uses its own subset
pub use idem_core::conformance::fixtures::{at, fingerprint, id, policy, replay, replay_of, response};
use idem_core::{Claim, Decision};
use idem_sqlite::{SqliteOptions, SqliteStore};
use tempfile::TempDir;

/// A store in a fresh directory; the directory lives as long as the value.
pub struct TempStore {
    pub store: SqliteStore,
    pub path: PathBuf,
    pub dir: TempDir,
}

/// A fresh temporary directory, in memory-backed `/dev/shm` when `fast` and the machine
/// has it: the files are real SQLite files either way, but there `fsync` costs nothing,
/// which keeps tests that open hundreds of stores quick. Durability tests use the disk.
pub fn temp_dir(fast: bool) -> TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if fast && shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() };
    dir.expect("the temp directory is writable")
}

/// Options for `idem.db` in `dir`.
pub fn options_in(dir: &TempDir) -> SqliteOptions {
    SqliteOptions::new(dir.path().join("idem.db"))
}

/// Opens a store with `options_of` applied to the defaults.
pub async fn open_with(options_of: impl FnOnce(SqliteOptions) -> SqliteOptions) -> TempStore {
    let dir = tempfile::tempdir().expect("the temp directory is writable");
    let options = options_of(options_in(&dir));
    let path = options.path().to_path_buf();
    let store = SqliteStore::open(options).await.expect("a fresh file in a temp dir opens");
    TempStore { store, path, dir }
}

/// Opens a store with the default options.
pub async fn open() -> TempStore {
    open_with(|options| options).await
}

/// The claim of an `Execute` decision; any other decision fails the test.
pub fn expect_claim(decision: Decision) -> Claim {
    decision.claim().unwrap_or_else(|| panic!("expected a claim, got {decision:?}"))
}
