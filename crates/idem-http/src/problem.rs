//! Error responses as `application/problem+json` (RFC 9457).

use std::borrow::Cow;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{Body, full};

/// Where the layer's problem types live; each type is this prefix plus a slug.
pub const PROBLEM_TYPE_BASE: &str = "https://example.invalid/idem/problems/";

/// The media type of every error the layer answers.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem: what the layer answers instead of running the handler, and what a
/// custom principal extractor returns to refuse a request.
///
/// ```
/// use http::StatusCode;
/// use idem_http::Problem;
///
/// let problem = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", "no API key");
/// let response = problem.into_response();
/// assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
/// assert_eq!(response.headers()["content-type"], "application/problem+json");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    status: StatusCode,
    slug: Cow<'static, str>,
    title: Cow<'static, str>,
    detail: String,
    retry_after: Option<Duration>,
}

impl Problem {
    /// A problem with `status`, the type [`PROBLEM_TYPE_BASE`] + `slug`, a short `title`
    /// that is the same for every occurrence, and a `detail` about this one.
    #[must_use]
    pub fn new(
        status: StatusCode,
        slug: impl Into<Cow<'static, str>>,
        title: impl Into<Cow<'static, str>>,
        detail: impl Into<String>,
    ) -> Problem {
        Problem { status, slug: slug.into(), title: title.into(), detail: detail.into(), retry_after: None }
    }

    /// Adds a `Retry-After` header, in whole seconds rounded up (at least 1).
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Problem {
        self.retry_after = Some(retry_after);
        self
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problem type URI.
    #[must_use]
    pub fn type_uri(&self) -> String {
        format!("{PROBLEM_TYPE_BASE}{}", self.slug)
    }

    /// The detail about this occurrence.
    #[must_use]
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The response: status, `Content-Type: application/problem+json`, `Retry-After` if
    /// set, and a JSON body with `type`, `title`, `status` and `detail`.
    #[must_use]
    pub fn into_response(self) -> Response<Body> {
        let json = serde_json::json!({
            "type": self.type_uri(),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut response = Response::new(full(json.to_string()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(retry_after) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s(retry_after)));
        }
        response
    }
}

/// `Retry-After` in whole seconds: rounded up, so a client never comes back early, and at
/// least [`idem_core::reply::RETRY_AFTER_MIN`], because 0 invites a busy loop. (The layer's
/// own hints already come whole from [`idem_core::reply::retry_after`]; this is the
/// header's encoding, saturating, for any duration a caller passes.)
pub(crate) fn retry_after_s(retry_after: Duration) -> u64 {
    let whole = retry_after.as_secs();
    let rounded_up = if retry_after.subsec_nanos() > 0 { whole.saturating_add(1) } else { whole };
    rounded_up.max(idem_core::reply::RETRY_AFTER_MIN.as_secs())
}

/// The problems the layer itself answers.
pub(crate) mod kinds {
    use std::time::Duration;

    use http::StatusCode;

    use super::Problem;

    pub(crate) fn key_missing() -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "key-missing",
            "Idempotency-Key missing",
            "this endpoint requires an Idempotency-Key header",
        )
    }

    pub(crate) fn key_invalid(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "key-invalid", "Idempotency-Key invalid", detail)
    }

    pub(crate) fn body_too_large(bytes_max: usize) -> Problem {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!("the request body is longer than {bytes_max} bytes; nothing was recorded, the key may be reused"),
        )
    }

    pub(crate) fn body_unreadable(detail: impl std::fmt::Display) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "body-unreadable",
            "Request body unreadable",
            format!("the request body could not be read ({detail}); nothing was recorded"),
        )
    }

    pub(crate) fn in_progress(retry_after: Duration) -> Problem {
        Problem::new(
            StatusCode::CONFLICT,
            "in-progress",
            "Request in progress",
            "a request with this Idempotency-Key is being processed; retry later with the same key",
        )
        .with_retry_after(retry_after)
    }

    pub(crate) fn key_reused() -> Problem {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "key-reused",
            "Idempotency-Key reused",
            "this Idempotency-Key was used for a request with another method, path or body",
        )
    }

    pub(crate) fn store_unavailable(retry_after: Duration, detail: impl std::fmt::Display) -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Idempotency store unavailable",
            format!("the request was not processed: {detail}"),
        )
        .with_retry_after(retry_after)
    }

    pub(crate) fn store_corrupt(detail: impl std::fmt::Display) -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store-corrupt",
            "Idempotency record unreadable",
            format!("the stored record for this key cannot be read: {detail}"),
        )
    }

    pub(crate) fn handler_failed(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "handler-failed", "Handler failed", detail)
    }

    pub(crate) fn response_too_large(bytes_max: usize) -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "response-too-large",
            "Response too large to record",
            format!(
                "the request was processed, but its response is longer than the {bytes_max} bytes \
                 that can be recorded; this answer is recorded instead so the request is not run again"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        // Goal: a client told to retry never comes back before the hint, and never at once.
        assert_eq!(retry_after_s(Duration::ZERO), 1);
        assert_eq!(retry_after_s(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_s(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_s(Duration::from_millis(2001)), 3);
    }
}
