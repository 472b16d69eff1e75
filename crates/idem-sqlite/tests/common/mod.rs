//! Helpers shared by the integration tests: real SQLite files in temporary directories.

#![allow(dead_code, unreachable_pub)] // each test binary uses its own subset

use std::path::PathBuf;
use std::time::Duration;

use idem_core::{Bytes, Fingerprint, Key, Policy, Principal, RecordId, StoredResponse, Timestamp};
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

pub fn id(principal: &str, key: &str) -> RecordId {
    let principal = if principal.is_empty() {
        Principal::anonymous()
    } else {
        Principal::new(principal).expect("test principals are valid")
    };
    RecordId::new(principal, Key::parse(key.as_bytes()).expect("test keys are valid"))
}

pub fn fingerprint(body: &str) -> Fingerprint {
    Fingerprint::of("POST", "/payments", body.as_bytes())
}

pub fn at(unix_ms: u64) -> Timestamp {
    Timestamp::from_unix_ms(unix_ms)
}

/// A 1 s lease and a 10 s retention, so tests move time in small steps.
pub fn policy() -> Policy {
    Policy::new(Duration::from_secs(1), Duration::from_secs(10)).expect("lease is shorter than retention")
}

/// A response with headers, including a binary value, and a body.
pub fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![
            ("content-type".to_owned(), Bytes::from_static(b"application/json")),
            ("x-trace".to_owned(), Bytes::from_static(&[0, 1, 254, 255])),
        ],
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

/// The replay of `response` completed at `completed_ms` under [`policy`]: its record
/// expires a retention (10 s) after the completion, and the replay says so.
pub fn replay_of(response: StoredResponse, completed_ms: u64) -> idem_core::Decision {
    idem_core::Decision::Replay { response, expires_at: at(completed_ms + 10_000) }
}

/// [`replay_of`] for [`response`]`(body)`.
pub fn replay(body: &str, completed_ms: u64) -> idem_core::Decision {
    replay_of(response(body), completed_ms)
}
