//! Store failures as a metric, shared by every adapter (idem-http, idem-consumer).
//!
//! | name | kind | labels | counts |
//! |---|---|---|---|
//! | [`STORE_ERRORS_TOTAL`] `idem_store_errors_total` | counter | `operation`, `error` | each failed store call: `operation` is `claim`, `get`, `complete`, `release`, `renew` or `count_replay`; `error` is `unavailable`, `full` or `corrupt` |

use idem_core::StoreError;

/// Counter of failed store calls, labels `operation` and `error`.
pub const STORE_ERRORS_TOTAL: &str = "idem_store_errors_total";

/// Describes [`STORE_ERRORS_TOTAL`] to the recorder installed now, if any.
pub fn describe() {
    metrics::describe_counter!(
        STORE_ERRORS_TOTAL,
        metrics::Unit::Count,
        "Failed idempotency store calls, by operation and error."
    );
}

/// The `error` label of a store failure.
#[must_use]
pub fn error_kind(error: &StoreError) -> &'static str {
    match error {
        StoreError::Unavailable { .. } => "unavailable",
        StoreError::Full { .. } => "full",
        StoreError::Corrupt { .. } => "corrupt",
    }
}

/// Counts a failed store call and hands the result back unchanged.
///
/// # Errors
/// The store's own error, unchanged.
pub fn store<T>(operation: &'static str, result: Result<T, StoreError>) -> Result<T, StoreError> {
    if let Err(error) = &result {
        failed(operation, error);
    }
    result
}

/// Counts one failed store call.
pub fn failed(operation: &'static str, error: &StoreError) {
    metrics::counter!(STORE_ERRORS_TOTAL, "operation" => operation, "error" => error_kind(error)).increment(1);
}
