//! A power loss under SQLite: what the replicas wrote and did not sync is dropped, with
//! `idem_power_loss` (every replica opens the file through its journaling VFS; after they
//! are all SIGKILLed, the journal's undo records put each file back to its last sync).

use std::path::Path;

use crate::ChaosError;

/// Drops the writes to `database` (and its `-wal`) that were not synced; says how many.
/// Every process that had the file open must be dead.
pub(crate) fn drop_unsynced(database: &Path) -> Result<String, ChaosError> {
    let summary = idem_power_loss::roll_back_unsynced(database)
        .map_err(|error| ChaosError::Io(format!("rolling back the unsynced writes: {error}")))?;
    let bytes: u64 = summary.files.iter().map(|file| file.bytes_dropped).sum();
    Ok(format!("SQLite: {} unsynced writes dropped ({bytes} bytes)", summary.records()))
}
