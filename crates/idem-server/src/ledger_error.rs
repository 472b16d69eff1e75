//! Why a ledger could not do what was asked ([`LedgerError`]). Separate from
//! [`crate::ledger`] so that the row decoders, every ledger and the handlers' answers name
//! it without depending on the trait or on one another.

use std::time::Duration;

use idem_core::StoreError;

/// Why the ledger could not do what was asked. Nothing was written in either case.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database failed or was busy; the caller may retry later.
    #[error("ledger unavailable: {0}")]
    Unavailable(#[source] StoreError),
    /// The ledger is at its size limit.
    #[error("ledger is full ({what})")]
    Full {
        /// Which limit.
        what: String,
    },
    /// A stored row cannot be read back.
    #[error("ledger holds a row it cannot read: {0}")]
    Corrupt(String),
}

impl LedgerError {
    /// When a client might try again, if the error is passing.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LedgerError::Unavailable(StoreError::Unavailable { retry_after, .. }) => {
                Some(retry_after.unwrap_or(Duration::from_secs(1)))
            }
            LedgerError::Unavailable(_) | LedgerError::Corrupt(_) => None,
            LedgerError::Full { .. } => Some(Duration::from_secs(60)),
        }
    }
}

pub(crate) fn unavailable(error: sqlx::Error) -> LedgerError {
    LedgerError::Unavailable(StoreError::unavailable(error))
}
