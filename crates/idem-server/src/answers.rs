//! The answers the server gives itself, outside the idempotency layer: a problem as a
//! response, the 400 for a body that fails validation, the echoed key, JSON bodies, and the
//! words for a ledger failure. Separate so that the body checks ([`crate::bodies`]), the
//! handlers and the router build the same answers without depending on one another.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use idem_core::Key;
use idem_http::problem::types;
use idem_http::{IDEMPOTENCY_KEY, Outcome, Problem};

use crate::domain::ValidationError;
use crate::ledger_error::LedgerError;

/// The `Content-Type` of every JSON answer.
pub(crate) const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Puts the request's `Idempotency-Key` on an answer given before the layer saw the
/// request, when the key is valid (the layer echoes it on its own answers).
pub(crate) fn echo_key(request: &HeaderMap, response: &mut Response) {
    if let Some(value) = request.get(IDEMPOTENCY_KEY).filter(|value| Key::parse(value.as_bytes()).is_ok()) {
        response.headers_mut().insert(IDEMPOTENCY_KEY, value.clone());
    }
}

/// A problem as an axum response.
pub(crate) fn problem(problem: Problem) -> Response {
    problem.into_response().map(axum::body::Body::new)
}

/// The 400 for a body that fails validation (`malformed-json` or `invalid-request`); the
/// idempotency layer never saw it, so nothing is recorded.
pub(crate) fn invalid(error: &ValidationError) -> Response {
    let kind = match error {
        ValidationError::MalformedJson(_) => types::MALFORMED_JSON,
        _ => types::INVALID_REQUEST,
    };
    let mut response = problem(Problem::of(kind, StatusCode::BAD_REQUEST, error.to_string()));
    response.extensions_mut().insert(Outcome::Rejected);
    response
}

/// What kind of failure a ledger error is, in words for clients: never the driver's text
/// (which names files, SQL and error codes); the log keeps that.
pub(crate) fn failure_class(error: &LedgerError) -> &'static str {
    match error {
        LedgerError::Unavailable(idem_core::StoreError::Corrupt { .. }) | LedgerError::Corrupt(_) => {
            "the database holds a row it cannot read"
        }
        LedgerError::Unavailable(idem_core::StoreError::Full { .. }) | LedgerError::Full { .. } => {
            "the database is at its size limit"
        }
        LedgerError::Unavailable(_) => {
            "the database is unavailable or cannot write (busy, unreachable, or out of disk space)"
        }
    }
}

/// A JSON answer: `body` with `status`.
pub(crate) fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, JSON)], body).into_response()
}
