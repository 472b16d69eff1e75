//! Errors: why a store cannot be opened, and how driver errors become [`StoreError`]s.

use std::path::PathBuf;
use std::time::Duration;

use idem_core::StoreError;

/// `SQLITE_BUSY`: another connection holds the write lock past the busy timeout.
const SQLITE_BUSY: i32 = 5;
/// `SQLITE_LOCKED`: a conflict inside one connection's shared cache.
const SQLITE_LOCKED: i32 = 6;
/// `SQLITE_CORRUPT`: the file's structure is damaged.
const SQLITE_CORRUPT: i32 = 11;
/// `SQLITE_NOTADB`: the file is not a SQLite database.
const SQLITE_NOTADB: i32 = 26;

/// A hint for callers refused because another writer held the database: by then they
/// waited a whole busy timeout, and a writer's transaction is short, so a second is plenty.
const RETRY_AFTER_BUSY: Duration = Duration::from_secs(1);

/// Why [`crate::SqliteStore::open`] failed. Each message names the file and reads well
/// on its own, for a CLI to print.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The options cannot work (e.g. a pool of zero connections).
    #[error("invalid options for the SQLite store {}: {detail}", .path.display())]
    InvalidOptions {
        /// The database file.
        path: PathBuf,
        /// What is wrong with the options.
        detail: String,
    },
    /// The file exists but is not a SQLite database.
    #[error("{} is not a SQLite database (is it another kind of file?)", .path.display())]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be opened or created (missing directory, permissions, locks).
    #[error("cannot open the SQLite database {}: {source}", .path.display())]
    CannotOpen {
        /// The file.
        path: PathBuf,
        /// What SQLite or the pool reported.
        #[source]
        source: sqlx::Error,
    },
    /// The database refused to switch to write-ahead logging, without which G7 is not met
    /// the way the crate docs describe (e.g. a file system without shared memory).
    #[error("the SQLite database {} stays in journal mode {journal_mode:?}; idem needs \"wal\"", .path.display())]
    NotWal {
        /// The file.
        path: PathBuf,
        /// The journal mode SQLite reported instead.
        journal_mode: String,
    },
    /// idem's tables could not be created or brought up to date (e.g. the file was written
    /// by a newer idem whose migrations this version does not know).
    #[error("cannot migrate idem's tables in {}: {source}", .path.display())]
    Migrate {
        /// The file.
        path: PathBuf,
        /// What the migrator reported.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

impl OpenError {
    /// Classifies an error from opening or setting up `path`.
    pub(crate) fn from_sqlx(path: PathBuf, source: sqlx::Error) -> OpenError {
        match sqlite_code(&source) {
            Some(SQLITE_NOTADB) => OpenError::NotADatabase { path },
            _ => OpenError::CannotOpen { path, source },
        }
    }

    /// Classifies an error from running the migrations on `path`.
    pub(crate) fn from_migrate(path: PathBuf, source: sqlx::migrate::MigrateError) -> OpenError {
        match source {
            sqlx::migrate::MigrateError::Execute(error) => OpenError::from_sqlx(path, error),
            source => OpenError::Migrate { path, source },
        }
    }
}

/// The primary SQLite result code of a database error (extended codes carry it in the low byte).
fn sqlite_code(error: &sqlx::Error) -> Option<i32> {
    let sqlx::Error::Database(database) = error else {
        return None;
    };
    let extended: i32 = database.code()?.parse().ok()?;
    Some(extended & 0xff)
}

/// A driver error as a [`StoreError`]: damaged files are `Corrupt`, everything else is
/// `Unavailable` (with a retry hint when the cause was another writer or a busy pool).
pub(crate) fn store_error(error: sqlx::Error) -> StoreError {
    match sqlite_code(&error) {
        Some(SQLITE_CORRUPT | SQLITE_NOTADB) => return StoreError::Corrupt { detail: error.to_string() },
        Some(SQLITE_BUSY | SQLITE_LOCKED) => {
            return StoreError::Unavailable { source: error.into(), retry_after: Some(RETRY_AFTER_BUSY) };
        }
        _ => {}
    }
    match error {
        sqlx::Error::PoolTimedOut => {
            StoreError::Unavailable { source: error.into(), retry_after: Some(RETRY_AFTER_BUSY) }
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::ColumnNotFound(_) | sqlx::Error::Decode(_) => {
            StoreError::Corrupt { detail: error.to_string() }
        }
        error => StoreError::unavailable(error),
    }
}

/// A [`StoreError::Corrupt`] with this detail.
pub(crate) fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt { detail: detail.into() }
}
