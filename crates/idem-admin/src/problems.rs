//! The problems (RFC 9457, `application/problem+json`) the admin router answers. Slugs
//! and titles are those idem-http and the demo server use for the same situations, so
//! one documentation page (`docs/problems.md`) serves them; `invalid-cursor` and
//! `forbidden` are the admin API's own.

use std::time::Duration;

use http::{Method, StatusCode};
use idem_core::RecordId;
use idem_http::Problem;

use crate::cursor::CursorError;

/// `Retry-After` when the store gives no hint.
const RETRY_AFTER_DEFAULT: Duration = Duration::from_secs(1);

/// 401 `unauthorized`: no credentials, or credentials that name nobody. For an
/// [`crate::Authorize`] hook to answer.
#[must_use]
pub fn unauthorized(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", detail)
}

/// 403 `forbidden`: a known caller who may not administer keys. For an
/// [`crate::Authorize`] hook to answer.
#[must_use]
pub fn forbidden(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
}

pub(crate) fn invalid_request(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "invalid-request", "Invalid request", detail)
}

pub(crate) fn invalid_cursor(error: &CursorError) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-cursor",
        "Invalid cursor",
        format!("starting_after must be a next_cursor (or a record id) this API answered: {error}"),
    )
}

pub(crate) fn invalid_id(error: &CursorError) -> Problem {
    invalid_request(format!(
        "/keys/{{id}} takes a record's id as this API answers it (/keys/{{caller}}/{{key}} for a named caller): {error}"
    ))
}

pub(crate) fn no_record(id: &RecordId) -> Problem {
    let caller = if id.principal.is_anonymous() {
        "the anonymous caller".to_owned()
    } else {
        format!("{:?}", id.principal.as_str())
    };
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        format!("no record for key {:?} of {caller}", id.key.as_str()),
    )
}

pub(crate) fn not_found(path: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        format!(
            "no route {path:?}: the admin API serves /keys, /keys/{{id}} and /keys/{{caller}}/{{key}} (each segment percent-encoded)"
        ),
    )
}

pub(crate) fn method_not_allowed(method: &Method, path: &str) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("{path:?} does not take {method}: /keys takes GET, a record's path GET and DELETE"),
    )
}

pub(crate) fn body_not_accepted() -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        "Request body too large",
        "the admin API takes no request body",
    )
}

pub(crate) fn query_too_long(bytes: usize) -> Problem {
    Problem::new(
        StatusCode::URI_TOO_LONG,
        "invalid-request",
        "Invalid request",
        format!("the query string has {bytes} bytes, at most {} are read", crate::QUERY_BYTES_MAX),
    )
}

pub(crate) fn store_unavailable(retry_after: Option<Duration>) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store-unavailable",
        "Idempotency store unavailable",
        "the idempotency store did not answer; nothing was changed that a retry would change twice",
    )
    .with_retry_after(retry_after.unwrap_or(RETRY_AFTER_DEFAULT))
}

pub(crate) fn store_corrupt(detail: &str) -> Problem {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "store-corrupt",
        "Idempotency record unreadable",
        format!("the store holds a record it cannot read: {detail}"),
    )
}

pub(crate) fn internal(detail: &str) -> Problem {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", detail.to_owned())
}
