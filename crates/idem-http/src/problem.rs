//! Error responses as `application/problem+json` (RFC 9457).

use std::borrow::Cow;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{Body, full};

/// The default base of the layer's problem type URIs: each type is this base plus a slug,
/// which names a section of `docs/problems.md` in the project's repository (the page that
/// says, per type, what happened and what a client should do). Set another base with
/// [`crate::IdempotencyBuilder::problem_type_base`], e.g. to serve the page yourself.
pub const PROBLEM_TYPE_BASE: &str = concat!(env!("CARGO_PKG_REPOSITORY"), "/blob/main/docs/problems.md#");

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
    /// A problem with `status`, the type *base* + `slug` (the layer's configured base,
    /// [`PROBLEM_TYPE_BASE`] by default), a short `title`
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

    /// The problem type URI under the default base, [`PROBLEM_TYPE_BASE`].
    #[must_use]
    pub fn type_uri(&self) -> String {
        format!("{PROBLEM_TYPE_BASE}{}", self.slug)
    }

    /// The slug: the last part of the type URI, after the base.
    #[must_use]
    pub fn slug(&self) -> &str {
        &self.slug
    }

    /// The detail about this occurrence.
    #[must_use]
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The response: status, `Content-Type: application/problem+json`, `Retry-After` if
    /// set, and a JSON body with `type` (under [`PROBLEM_TYPE_BASE`]), `title`, `status`
    /// and `detail`. The layer itself answers with its configured base.
    #[must_use]
    pub fn into_response(self) -> Response<Body> {
        self.into_response_at(PROBLEM_TYPE_BASE)
    }

    /// [`Problem::into_response`] with the type under `type_base`.
    pub(crate) fn into_response_at(self, type_base: &str) -> Response<Body> {
        let json = serde_json::json!({
            "type": format!("{type_base}{}", self.slug),
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
    use crate::body::NotKept;

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

    pub(crate) fn store_unavailable(retry_after: Duration) -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Idempotency store unavailable",
            "the request was not processed: the idempotency store is busy, unreachable or cannot write (for example, out of disk space)",
        )
        .with_retry_after(retry_after)
    }

    pub(crate) fn store_full(what: &str, retry_after: Duration) -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-full",
            "Idempotency store full",
            format!(
                "the request was not processed: the idempotency store is at its limit of {what} and takes no new keys until expired records are purged; replays still work"
            ),
        )
        .with_retry_after(retry_after)
    }

    pub(crate) fn store_corrupt() -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store-corrupt",
            "Idempotency record unreadable",
            "the stored record for this key cannot be read; nothing was changed",
        )
    }

    pub(crate) fn handler_failed(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "handler-failed", "Handler failed", detail)
    }

    /// The answer to retries of a request whose response was not kept: the operation
    /// completed, with `status` (which this answer carries too, so a client does not retry).
    pub(crate) fn response_not_kept(status: StatusCode, why: NotKept) -> Problem {
        let why = match why {
            NotKept::TooLarge { bytes_max } => format!("was longer than the {bytes_max} bytes that can be kept"),
            NotKept::Trailers => "carried trailers, which are not kept".to_owned(),
        };
        Problem::new(
            status,
            RESPONSE_NOT_KEPT,
            "Response not kept",
            format!(
                "the request with this Idempotency-Key was processed and completed with status {}, \
                 but its response {why}, so it cannot be replayed; do not retry: the operation will \
                 not run again (look the result up, e.g. at this answer's Location, if any)",
                status.as_u16()
            ),
        )
    }

    /// Every slug the layer answers with; `docs/problems.md` has a section for each.
    #[cfg(test)]
    pub(crate) const SLUGS: [&str; 11] = [
        "key-missing",
        "key-invalid",
        "body-too-large",
        "body-unreadable",
        "in-progress",
        "key-reused",
        "store-unavailable",
        "store-full",
        "store-corrupt",
        "handler-failed",
        RESPONSE_NOT_KEPT,
    ];

    const RESPONSE_NOT_KEPT: &str = "response-not-kept";

    /// One problem of each kind, for tests that check them all.
    #[cfg(test)]
    pub(crate) fn all() -> Vec<Problem> {
        vec![
            key_missing(),
            key_invalid("test"),
            body_too_large(1),
            body_unreadable("test"),
            in_progress(Duration::from_secs(1)),
            key_reused(),
            store_unavailable(Duration::from_secs(1)),
            store_full("10 records", Duration::from_secs(60)),
            store_corrupt(),
            handler_failed("test"),
            response_not_kept(StatusCode::CREATED, NotKept::Trailers),
        ]
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

    /// The sections of docs/problems.md: the slug of each `## slug` heading.
    fn documented_slugs() -> Vec<&'static str> {
        include_str!("../../../docs/problems.md")
            .lines()
            .filter_map(|line| line.strip_prefix("## "))
            .filter(|heading| heading.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .collect()
    }

    #[test]
    fn every_problem_the_layer_answers_has_a_section_in_docs_problems_md() {
        // Goal: a problem's type URI points to a section that exists (a heading `## slug`
        // is the anchor `#slug`), and the page documents no type the layer does not answer.
        let all = kinds::all();
        let emitted: Vec<&str> = all.iter().map(Problem::slug).collect();
        let mut listed = kinds::SLUGS.to_vec();
        assert_eq!(emitted, listed, "kinds::all and kinds::SLUGS name the same kinds");
        let mut documented = documented_slugs();
        listed.sort_unstable();
        documented.sort_unstable();
        assert_eq!(documented, listed);
        assert!(PROBLEM_TYPE_BASE.ends_with("docs/problems.md#"), "{PROBLEM_TYPE_BASE}");
    }

    #[test]
    fn the_type_base_is_the_configured_one() {
        // Goal: the type URI is the base the layer was given plus the slug; the public
        // into_response uses the default base.
        let at = |base: &str| {
            let response = kinds::key_missing().into_response_at(base);
            let body = futures::executor::block_on(http_body_util::BodyExt::collect(response.into_body()))
                .expect("problem bodies are in memory")
                .to_bytes();
            serde_json::from_slice::<serde_json::Value>(&body).expect("problem bodies are JSON")["type"].clone()
        };
        assert_eq!(at("https://docs.example/errors#"), "https://docs.example/errors#key-missing");
        assert_eq!(kinds::key_missing().type_uri(), format!("{PROBLEM_TYPE_BASE}key-missing"));
    }
}
