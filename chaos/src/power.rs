//! A power loss under SQLite: what the replicas wrote and did not sync is dropped, with
//! `idem_power_loss` (every replica opens the file through its journaling VFS, its undo
//! records in the harness's journal directory, off the SQLite disk; after the replicas are
//! all SIGKILLed, the records put each file back to its last sync).

use std::path::Path;

use crate::ChaosError;

/// Drops the writes to `database` (and its `-wal`) that were not synced, journaled in
/// `journal`; says how many and which files had a journal. Every process that had the
/// file open must be dead.
pub(crate) fn drop_unsynced(database: &Path, journal: &Path) -> Result<String, ChaosError> {
    let summary = idem_power_loss::roll_back_unsynced_in(database, journal)
        .map_err(|error| ChaosError::Io(format!("rolling back the unsynced writes: {error}")))?;
    let bytes: u64 = summary.files.iter().map(|file| file.bytes_dropped).sum();
    let files: Vec<String> = summary
        .journaled_files()
        .filter_map(|path| path.file_name().map(|name| name.to_string_lossy().into_owned()))
        .collect();
    let files = if files.is_empty() { "none".to_owned() } else { files.join(", ") };
    Ok(format!("SQLite: {} unsynced writes dropped ({bytes} bytes; journaled files: {files})", summary.records()))
}
