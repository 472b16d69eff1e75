//! Errors: why a store cannot be opened, and how driver errors become [`StoreError`]s.

use std::time::Duration;

use idem_core::{BoxError, StoreError};

/// SQLSTATE `40001` serialization_failure: the transaction lost a race; retrying it is safe.
pub(crate) const SERIALIZATION_FAILURE: &str = "40001";
/// SQLSTATE `40P01` deadlock_detected: PostgreSQL aborted this transaction to break a cycle.
pub(crate) const DEADLOCK_DETECTED: &str = "40P01";
/// SQLSTATE `57014` query_canceled: `statement_timeout` ran out (e.g. a long lock wait).
const QUERY_CANCELED: &str = "57014";
/// SQLSTATE `55P03` lock_not_available.
pub(crate) const LOCK_NOT_AVAILABLE: &str = "55P03";
/// SQLSTATE class `23`: integrity constraint violation. idem's own statements break a
/// constraint of idem's tables only when the stored data disagrees with itself (usage
/// totals edited by hand), except the unique key, which `ON CONFLICT` handles.
pub(crate) const INTEGRITY_CLASS: &str = "23";

/// A hint for callers refused because the database was busy (lock waits past the statement
/// timeout, a pool with no free connection, contention that outlasted the retries).
pub(crate) const RETRY_AFTER_BUSY: Duration = Duration::from_secs(1);

/// Why [`crate::PostgresStore::open`] failed. Each message names the database (without
/// its password) and reads well on its own, for a CLI to print.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The options cannot work (a malformed URL, a pool of zero connections, a schema name
    /// that is not a plain identifier).
    #[error("invalid options for the PostgreSQL store {target}: {detail}")]
    InvalidOptions {
        /// The database, as host:port/name.
        target: String,
        /// What is wrong with the options.
        detail: String,
    },
    /// No connection could be made (server down, wrong host or port, authentication).
    #[error("cannot connect to PostgreSQL at {target} (is it running? e.g. `pg_ctlcluster 15 main start`): {source}")]
    Connect {
        /// The database, as host:port/name.
        target: String,
        /// What the driver reported.
        #[source]
        source: sqlx::Error,
    },
    /// The schema was migrated by a newer idem: it holds a migration this version does not
    /// know, so this version could misread its tables.
    #[error(
        "the PostgreSQL schema {schema:?} at {target} holds idem migration {version}, which this version of idem does not know (written by a newer idem?)"
    )]
    NewerSchema {
        /// The database, as host:port/name.
        target: String,
        /// The schema.
        schema: String,
        /// The unknown migration's version.
        version: i64,
    },
    /// A statement on idem's schema at open could not take its lock within
    /// [`crate::PostgresOptions::schema_lock_timeout`]: another session holds a lock on
    /// idem's tables (a migration in progress, or a transaction of a replica that died
    /// inside it, which PostgreSQL ends after its idle-in-transaction timeout).
    #[error(
        "idem's schema {schema:?} at {target} is locked by another session (a migration in progress, or a transaction still open, perhaps of a replica that died inside it: PostgreSQL ends that after its idle_in_transaction_session_timeout): {source}"
    )]
    SchemaLocked {
        /// The database, as host:port/name.
        target: String,
        /// The schema.
        schema: String,
        /// What PostgreSQL reported (SQLSTATE 55P03).
        #[source]
        source: sqlx::Error,
    },
    /// One attempt to open did not finish within what was left of the open timeout.
    #[error(
        "PostgreSQL at {target} did not answer within the open timeout of {timeout:?} (is it running? e.g. `pg_ctlcluster 15 main start`)"
    )]
    TimedOut {
        /// The database, as host:port/name.
        target: String,
        /// The open timeout.
        timeout: Duration,
    },
    /// Opening failed for a reason that passes (the server starting up or refusing
    /// connections, idem's schema locked) and still did at the end of the open timeout
    /// ([`crate::PostgresOptions::open_timeout`]).
    #[error("{last} (still failing after {attempts} attempts in {waited:.1?}, the open timeout)")]
    NotReady {
        /// How long opening was tried.
        waited: Duration,
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's failure.
        last: Box<OpenError>,
    },
    /// idem's schema or tables could not be created, brought up to date or checked.
    #[error("cannot migrate idem's tables in schema {schema:?} at {target}: {detail}")]
    Migrate {
        /// The database, as host:port/name.
        target: String,
        /// The schema.
        schema: String,
        /// What went wrong.
        detail: String,
    },
}

impl OpenError {
    /// Whether opening may succeed if tried again soon (`is_transient` below for a driver error).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            OpenError::Connect { source, .. } => is_transient(source),
            OpenError::SchemaLocked { .. } | OpenError::TimedOut { .. } => true,
            OpenError::NotReady { last, .. } => last.is_transient(),
            OpenError::InvalidOptions { .. } | OpenError::NewerSchema { .. } | OpenError::Migrate { .. } => false,
        }
    }
}

/// Why one attempt of a store operation failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Contention the database resolved by aborting this attempt (serialization failure,
    /// deadlock, a lost race to insert the same record id): nothing was applied, and the
    /// operation may run again from the start.
    Contention(BoxError),
    /// Anything else, final.
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Failure {
        Failure::Store(error)
    }
}

impl From<idem_core::StepError> for Failure {
    fn from(error: idem_core::StepError) -> Failure {
        Failure::Store(error.into())
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Failure {
        match sqlstate(&error).as_deref() {
            Some(SERIALIZATION_FAILURE | DEADLOCK_DETECTED) => Failure::Contention(error.into()),
            _ => Failure::Store(store_error(error)),
        }
    }
}

impl Failure {
    /// The failure as the caller sees it when it is not retried (or no longer).
    pub(crate) fn into_store_error(self) -> StoreError {
        match self {
            Failure::Store(error) => error,
            Failure::Contention(source) => StoreError::Unavailable { source, retry_after: Some(RETRY_AFTER_BUSY) },
        }
    }
}

/// Whether opening may succeed if tried again soon: the server refused or dropped the
/// connection, is starting up, shutting down or in recovery, has no free connection slot,
/// or a schema statement could not take its lock in time. Authentication, a missing
/// database, permissions and malformed options are final.
pub(crate) fn is_transient(error: &sqlx::Error) -> bool {
    if let Some(code) = sqlstate(error) {
        // 08: connection exception; 57P01-57P03: admin or crash shutdown, cannot connect
        // now (starting up, shutting down, recovery); 53300: too many connections; 55P03:
        // lock not available (`lock_timeout`); 57014: a statement cancelled by its timeout.
        return code.starts_with("08")
            || matches!(code.as_str(), "57P01" | "57P02" | "57P03" | "53300" | "55P03" | "57014");
    }
    matches!(error, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)
}

/// The SQLSTATE of a database error.
pub(crate) fn sqlstate(error: &sqlx::Error) -> Option<String> {
    let sqlx::Error::Database(database) = error else {
        return None;
    };
    database.code().map(|code| code.into_owned())
}

/// A driver error from one of idem's own statements as a [`StoreError`]: data that breaks
/// the schema's constraints or cannot be decoded is `Corrupt`; everything else (connection
/// lost, server shutting down or starting up, timeouts, a closed pool) is `Unavailable`,
/// with a retry hint when the cause was a busy database or pool.
pub(crate) fn store_error(error: sqlx::Error) -> StoreError {
    let busy =
        |error: sqlx::Error| StoreError::Unavailable { source: error.into(), retry_after: Some(RETRY_AFTER_BUSY) };
    match sqlstate(&error).as_deref() {
        Some(SERIALIZATION_FAILURE | DEADLOCK_DETECTED | QUERY_CANCELED | LOCK_NOT_AVAILABLE) => return busy(error),
        Some(code) if code.starts_with(INTEGRITY_CLASS) => return StoreError::Corrupt { detail: error.to_string() },
        _ => {}
    }
    match error {
        sqlx::Error::PoolTimedOut => busy(error),
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
