//! Errors: why a store cannot be opened, and how driver errors become [`StoreError`]s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use idem_core::StoreError;

/// `SQLITE_BUSY`: another connection holds the write lock past the busy timeout.
const SQLITE_BUSY: i32 = 5;
/// `SQLITE_LOCKED`: a conflict inside one connection's shared cache.
const SQLITE_LOCKED: i32 = 6;
/// `SQLITE_CANTOPEN`: the file cannot be opened or created.
const SQLITE_CANTOPEN: i32 = 14;
/// `SQLITE_CORRUPT`: the file's structure is damaged.
const SQLITE_CORRUPT: i32 = 11;
/// `SQLITE_CONSTRAINT`: one of idem's own statements broke a constraint of idem's tables,
/// which only stored data that disagrees with itself (e.g. usage counters edited by hand) can cause.
const SQLITE_CONSTRAINT: i32 = 19;
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
    #[error("cannot open the SQLite database {}{hint}: {source}", .path.display())]
    CannotOpen {
        /// The file.
        path: PathBuf,
        /// A likely cause seen on the file system (e.g. " (its directory does not exist)"), or empty.
        hint: &'static str,
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
    /// The file was migrated by a newer idem: it holds a migration this version does not
    /// know, so this version could misread its tables.
    #[error(
        "the SQLite database {} holds idem migration {version}, which this version of idem does not know (written by a newer idem?)",
        .path.display()
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The unknown migration's version.
        version: i64,
    },
    /// idem's tables could not be created or brought up to date.
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
            Some(SQLITE_CANTOPEN) => OpenError::CannotOpen { hint: cannot_open_hint(&path), path, source },
            _ => OpenError::CannotOpen { path, hint: "", source },
        }
    }

    /// Classifies an error from running the migrations on `path`.
    pub(crate) fn from_migrate(path: PathBuf, source: sqlx::migrate::MigrateError) -> OpenError {
        match source {
            sqlx::migrate::MigrateError::Execute(error) => OpenError::from_sqlx(path, error),
            sqlx::migrate::MigrateError::VersionMissing(version) => OpenError::NewerSchema { path, version },
            source => OpenError::Migrate { path, source },
        }
    }
}

/// What the file system suggests about `SQLITE_CANTOPEN`.
fn cannot_open_hint(path: &Path) -> &'static str {
    let directory = match path.parent() {
        Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
        Some(parent) => parent,
        None => return "",
    };
    if !directory.is_dir() {
        " (its directory does not exist)"
    } else if !path.exists() {
        " (the file does not exist)"
    } else if path.is_dir() {
        " (it is a directory)"
    } else {
        ""
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

/// A driver error from one of idem's own statements as a [`StoreError`]: damaged files
/// and data that breaks the schema's constraints are `Corrupt`, everything else is
/// `Unavailable` (with a retry hint when the cause was another writer or a busy pool).
pub(crate) fn store_error(error: sqlx::Error) -> StoreError {
    match sqlite_code(&error) {
        Some(SQLITE_CORRUPT | SQLITE_CONSTRAINT | SQLITE_NOTADB) => {
            return StoreError::Corrupt { detail: error.to_string() };
        }
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

/// Why a whole group commit failed, kept so that every job of the batch gets its own
/// [`StoreError`] built from it (driver errors cannot be cloned).
#[derive(Debug, Clone)]
pub(crate) struct BatchFailure {
    text: String,
    corrupt: bool,
    retry_after: Option<Duration>,
}

impl BatchFailure {
    /// The store closed with the job still queued.
    pub(crate) fn closed() -> BatchFailure {
        BatchFailure { text: "the store is closed".to_owned(), corrupt: false, retry_after: None }
    }

    /// SQLite rolled the batch's transaction back on its own (after a failed statement).
    pub(crate) fn rolled_back() -> BatchFailure {
        BatchFailure {
            text: "the group commit failed: SQLite rolled its transaction back".to_owned(),
            corrupt: false,
            retry_after: None,
        }
    }

    /// This failure as one caller's error, classified as [`store_error`] would.
    pub(crate) fn to_store_error(&self) -> StoreError {
        if self.corrupt {
            return StoreError::Corrupt { detail: self.text.clone() };
        }
        StoreError::Unavailable { source: self.text.clone().into(), retry_after: self.retry_after }
    }
}

impl From<StoreError> for BatchFailure {
    fn from(error: StoreError) -> BatchFailure {
        let text = format!("the group commit failed: {error}");
        match error {
            StoreError::Corrupt { .. } => BatchFailure { text, corrupt: true, retry_after: None },
            StoreError::Unavailable { retry_after, .. } => BatchFailure { text, corrupt: false, retry_after },
            StoreError::Full { .. } => BatchFailure { text, corrupt: false, retry_after: None },
        }
    }
}

impl From<sqlx::Error> for BatchFailure {
    fn from(error: sqlx::Error) -> BatchFailure {
        let text = format!("the group commit failed: {error}");
        match store_error(error) {
            StoreError::Corrupt { .. } => BatchFailure { text, corrupt: true, retry_after: None },
            StoreError::Unavailable { retry_after, .. } => BatchFailure { text, corrupt: false, retry_after },
            StoreError::Full { .. } => BatchFailure { text, corrupt: false, retry_after: None },
        }
    }
}
