//! A power loss under SQLite: what the replicas wrote and did not sync is dropped.
//! Placeholder until the unsynced-write journal lands (issue 20).

use std::path::Path;

use crate::ChaosError;

/// Drops the writes to `database` (and its write-ahead log) that were not synced; says what.
pub(crate) fn drop_unsynced(database: &Path) -> Result<String, ChaosError> {
    let shm = database.with_extension("db-shm");
    let _ = std::fs::remove_file(shm);
    Ok("SQLite: unsynced writes kept (journal not wired yet)".to_owned())
}
