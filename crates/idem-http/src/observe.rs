//! What the layer reports for operators: one `tracing` span per keyed request, and metrics
//! through the [`metrics`] facade (the application installs a recorder, e.g. a Prometheus
//! exporter; without one the calls cost next to nothing).
//!
//! # Metrics
//!
//! | name | kind | labels | unit | counts |
//! |---|---|---|---|---|
//! | [`REQUESTS_TOTAL`] `idem_requests_total` | counter | `outcome` | requests | every request the layer answered, by [`Outcome::as_str`] (keyless pass-through requests too, as `passed_through`) |
//! | [`REQUEST_DURATION_SECONDS`] `idem_request_duration_seconds` | histogram | `outcome` | seconds | from the layer receiving the request to its response head being ready (a streamed body is not included) |
//! | [`STORE_ERRORS_TOTAL`] `idem_store_errors_total` | counter | `operation`, `error` | errors | each failed store call: `operation` is `claim`, `get`, `complete`, `release` or `renew`; `error` is `unavailable`, `full` or `corrupt` |
//!
//! A request whose inner service returns an error (no response) is counted with the
//! outcome `released` (its claim is given back).
//!
//! # The span
//!
//! Each request with a valid key runs in a span named `idempotency` (target `idem_http`,
//! level INFO) with the fields `key`, `principal`, `method` and `path` (without the query),
//! and `outcome` and `status` recorded once the answer is known. Work handed to the task
//! tracker after a client went away stays in its span. Every event the layer logs for the
//! request (take-overs, renewals, store errors) is inside it.
//!
//! ```
//! use idem_http::observe;
//!
//! assert_eq!(observe::REQUESTS_TOTAL, "idem_requests_total");
//! ```

use http::Method;
use idem_core::{Key, StoreError};
use tokio::time::Instant;
use tracing::Span;

use crate::Outcome;

/// Counter of answered requests, label `outcome`.
pub const REQUESTS_TOTAL: &str = "idem_requests_total";
/// Histogram of the time to the response head, in seconds, label `outcome`.
pub const REQUEST_DURATION_SECONDS: &str = "idem_request_duration_seconds";
/// Counter of failed store calls, labels `operation` and `error` (idem-once's, shared by
/// every adapter).
pub const STORE_ERRORS_TOTAL: &str = idem_once::observe::STORE_ERRORS_TOTAL;
/// Counter of expired records the layer's purge forgot ([`crate::purge`]).
pub const PURGED_RECORDS_TOTAL: &str = "idem_purged_records_total";

/// Describes the metrics (unit and help text) to the recorder installed now, if any.
pub(crate) fn describe() {
    metrics::describe_counter!(
        PURGED_RECORDS_TOTAL,
        metrics::Unit::Count,
        "Expired idempotency records forgotten by the layer's purge."
    );
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        metrics::Unit::Count,
        "Requests answered by the idempotency layer, by outcome."
    );
    metrics::describe_histogram!(
        REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time from the idempotency layer receiving a request to its response head, by outcome."
    );
    metrics::describe_counter!(
        STORE_ERRORS_TOTAL,
        metrics::Unit::Count,
        "Failed idempotency store calls, by operation and error."
    );
}

/// The span of one keyed request; `principal`, `outcome` and `status` are recorded later.
pub(crate) fn request_span(key: &Key, method: &Method, path: &str) -> Span {
    tracing::info_span!(
        target: "idem_http",
        "idempotency",
        key = key.as_str(),
        principal = tracing::field::Empty,
        method = method.as_str(),
        path,
        outcome = tracing::field::Empty,
        status = tracing::field::Empty,
    )
}

/// Records the answer: on the span (if the request has one) and in the metrics.
pub(crate) fn answered(span: Option<&Span>, outcome: Outcome, status: Option<u16>, started: Instant) {
    if let Some(span) = span {
        span.record("outcome", outcome.as_str());
        if let Some(status) = status {
            span.record("status", status);
        }
    }
    let label = outcome.as_str();
    metrics::counter!(REQUESTS_TOTAL, "outcome" => label).increment(1);
    metrics::histogram!(REQUEST_DURATION_SECONDS, "outcome" => label).record(started.elapsed().as_secs_f64());
}

/// Counts a failed store call and hands the result back unchanged.
pub(crate) fn store<T>(operation: &'static str, result: Result<T, StoreError>) -> Result<T, StoreError> {
    idem_once::observe::store(operation, result)
}
