//! The problems (RFC 9457, `application/problem+json`) the admin router answers, each of a
//! type in idem-http's one catalogue ([`idem_http::problem::CATALOGUE`]): the layer's and the
//! demo server's types for the same situations, and `invalid-cursor` and `forbidden`, the
//! admin API's own ([`idem_http::problem::Origin::Admin`]). So every `type` it answers has
//! its section in `docs/problems.md`, which `idem_http::ProblemDocs` serves.

use std::time::Duration;

use http::{Method, StatusCode};
use idem_core::RecordId;
use idem_http::Problem;
use idem_http::problem::types;

use crate::cursor::CursorError;

/// `Retry-After` when the store gives no hint.
const RETRY_AFTER_DEFAULT: Duration = Duration::from_secs(1);

/// 401 `unauthorized`: no credentials, or credentials that name nobody. For an
/// [`crate::Authorize`] hook to answer.
#[must_use]
pub fn unauthorized(detail: impl Into<String>) -> Problem {
    Problem::of(types::UNAUTHORIZED, StatusCode::UNAUTHORIZED, detail)
}

/// 403 `forbidden`: a known caller who may not administer keys. For an
/// [`crate::Authorize`] hook to answer.
#[must_use]
pub fn forbidden(detail: impl Into<String>) -> Problem {
    Problem::of(types::FORBIDDEN, StatusCode::FORBIDDEN, detail)
}

pub(crate) fn invalid_request(detail: impl Into<String>) -> Problem {
    Problem::of(types::INVALID_REQUEST, StatusCode::BAD_REQUEST, detail)
}

pub(crate) fn invalid_cursor(error: &CursorError) -> Problem {
    let detail = format!("starting_after must be a next_cursor (or a record id) this API answered: {error}");
    Problem::of(types::INVALID_CURSOR, StatusCode::BAD_REQUEST, detail)
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
    let detail = format!("no record for key {:?} of {caller}", id.key.as_str());
    Problem::of(types::NOT_FOUND, StatusCode::NOT_FOUND, detail)
}

pub(crate) fn not_found(path: &str) -> Problem {
    let detail = format!(
        "no route {path:?}: the admin API serves /keys, /keys/{{id}} and /keys/{{caller}}/{{key}} (each segment percent-encoded)"
    );
    Problem::of(types::NOT_FOUND, StatusCode::NOT_FOUND, detail)
}

pub(crate) fn method_not_allowed(method: &Method, path: &str) -> Problem {
    let detail = format!("{path:?} does not take {method}: /keys takes GET, a record's path GET and DELETE");
    Problem::of(types::METHOD_NOT_ALLOWED, StatusCode::METHOD_NOT_ALLOWED, detail)
}

pub(crate) fn body_not_accepted() -> Problem {
    Problem::of(types::BODY_TOO_LARGE, StatusCode::PAYLOAD_TOO_LARGE, "the admin API takes no request body")
}

pub(crate) fn query_too_long(bytes: usize) -> Problem {
    let detail = format!("the query string has {bytes} bytes, at most {} are read", crate::QUERY_BYTES_MAX);
    Problem::of(types::INVALID_REQUEST, StatusCode::URI_TOO_LONG, detail)
}

pub(crate) fn store_unavailable(retry_after: Option<Duration>) -> Problem {
    let detail = "the idempotency store did not answer; nothing was changed that a retry would change twice";
    Problem::of(types::STORE_UNAVAILABLE, StatusCode::SERVICE_UNAVAILABLE, detail)
        .with_retry_after(retry_after.unwrap_or(RETRY_AFTER_DEFAULT))
}

pub(crate) fn store_corrupt(detail: &str) -> Problem {
    let detail = format!("the store holds a record it cannot read: {detail}");
    Problem::of(types::STORE_CORRUPT, StatusCode::INTERNAL_SERVER_ERROR, detail)
}

pub(crate) fn internal(detail: &str) -> Problem {
    Problem::of(types::INTERNAL, StatusCode::INTERNAL_SERVER_ERROR, detail.to_owned())
}
