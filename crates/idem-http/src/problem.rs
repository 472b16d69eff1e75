//! Error responses as `application/problem+json` (RFC 9457), and the catalogue of every
//! problem type idem answers ([`CATALOGUE`]), each documented in `docs/problems.md`.

use std::borrow::Cow;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{Body, full};

/// The default base of the layer's problem type URIs: each `type` is this base plus a slug,
/// `/problems#<slug>`. It is a relative reference with the full path, as RFC 9457 section
/// 3.1.1 recommends for relative types, so it resolves against the URL of the request that
/// got the problem: on the same server, at [`crate::problem_docs::PROBLEM_DOCS_PATH`], where
/// [`crate::problem_docs::ProblemDocs`] serves one page with a section (HTML `id`) per slug.
///
/// A server that does not mount that page sets another base with
/// [`crate::IdempotencyBuilder::problem_type_base`]: an absolute URL where it publishes
/// `docs/problems.md` (e.g. `https://api.example/problems#`), or [`ABOUT_BLANK`].
pub const PROBLEM_TYPE_BASE: &str = "/problems#";

/// The problem type `about:blank` (RFC 9457 section 4.2.1): given as the type base, every
/// problem is answered with `"type": "about:blank"` and the status's reason phrase as its
/// `title`, as that section asks; the slug is then not sent.
pub const ABOUT_BLANK: &str = "about:blank";

pub use crate::catalogue::{CATALOGUE, Origin, ProblemType, catalogued, types};

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
    /// Extension members (RFC 9457 section 3.2), in the order added; a boxed slice (two
    /// words, no allocation while empty), as few problems have any and a `Result<_, Problem>`
    /// should stay small.
    extensions: Box<[(&'static str, serde_json::Value)]>,
}

/// The members RFC 9457 section 3.1 defines, which an extension may not replace.
const STANDARD_MEMBERS: [&str; 5] = ["type", "title", "status", "detail", "instance"];

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
        Problem {
            status,
            slug: slug.into(),
            title: title.into(),
            detail: detail.into(),
            retry_after: None,
            extensions: Box::default(),
        }
    }

    /// A problem of a catalogued type ([`CATALOGUE`]): its slug and title, with `status`
    /// and a `detail` about this occurrence.
    ///
    /// ```
    /// use http::StatusCode;
    /// use idem_http::problem::{Problem, types};
    ///
    /// let problem = Problem::of(types::NOT_FOUND, StatusCode::NOT_FOUND, "no payment pay_1");
    /// assert_eq!(problem.slug(), "not-found");
    /// ```
    #[must_use]
    pub fn of(kind: ProblemType, status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem::new(status, kind.slug, kind.title, detail)
    }

    /// Adds a `Retry-After` header, in whole seconds rounded up (at least 1).
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Problem {
        self.retry_after = Some(retry_after);
        self
    }

    /// Adds an extension member (RFC 9457 section 3.2): `name` with `value` in the body,
    /// beside `type`, `title`, `status` and `detail`, for clients that read this problem
    /// type. A `name` of a standard member (`type`, `title`, `status`, `detail`,
    /// `instance`) is ignored, and a later `name` replaces an earlier one.
    #[must_use]
    pub fn with_extension(mut self, name: &'static str, value: serde_json::Value) -> Problem {
        if !STANDARD_MEMBERS.contains(&name) {
            let mut extensions = std::mem::take(&mut self.extensions).into_vec();
            extensions.retain(|(existing, _)| *existing != name);
            extensions.push((name, value));
            self.extensions = extensions.into_boxed_slice();
        }
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

    /// [`Problem::into_response`] with the type under `type_base`: `type_base` + slug, or
    /// `about:blank` with the status's reason phrase as title if `type_base` is [`ABOUT_BLANK`].
    pub(crate) fn into_response_at(self, type_base: &str) -> Response<Body> {
        let (kind, title) = if type_base == ABOUT_BLANK {
            (ABOUT_BLANK.to_owned(), Cow::Borrowed(self.status.canonical_reason().unwrap_or("Unknown")))
        } else {
            (format!("{type_base}{}", self.slug), self.title)
        };
        let mut json = serde_json::json!({
            "type": kind,
            "title": title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(members) = json.as_object_mut() {
            members.extend(self.extensions.into_vec().into_iter().map(|(name, value)| (name.to_owned(), value)));
        }
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

    use super::{Problem, types};
    use crate::body::NotKept;

    /// `header` is the configured key header's name (default `idempotency-key`).
    pub(crate) fn key_missing(header: &http::HeaderName) -> Problem {
        Problem::of(types::KEY_MISSING, StatusCode::BAD_REQUEST, format!("this endpoint requires an {header} header"))
    }

    pub(crate) fn key_invalid(detail: impl Into<String>) -> Problem {
        Problem::of(types::KEY_INVALID, StatusCode::BAD_REQUEST, detail)
    }

    pub(crate) fn body_too_large(bytes_max: usize) -> Problem {
        Problem::of(
            types::BODY_TOO_LARGE,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is longer than {bytes_max} bytes; nothing was recorded, the key may be reused"),
        )
    }

    pub(crate) fn body_unreadable(detail: impl std::fmt::Display) -> Problem {
        Problem::of(
            types::BODY_UNREADABLE,
            StatusCode::BAD_REQUEST,
            format!("the request body could not be read ({detail}); nothing was recorded"),
        )
    }

    pub(crate) fn in_progress(retry_after: Duration) -> Problem {
        Problem::of(
            types::IN_PROGRESS,
            StatusCode::CONFLICT,
            "a request with this Idempotency-Key is being processed; retry later with the same key",
        )
        .with_retry_after(retry_after)
    }

    pub(crate) fn key_reused() -> Problem {
        Problem::of(
            types::KEY_REUSED,
            StatusCode::UNPROCESSABLE_ENTITY,
            "this Idempotency-Key was used for a request with another method, path or body",
        )
    }

    pub(crate) fn store_unavailable(retry_after: Duration) -> Problem {
        Problem::of(
            types::STORE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE,
            "the request was not processed: the idempotency store is busy, unreachable or cannot write (for example, out of disk space)",
        )
        .with_retry_after(retry_after)
    }

    pub(crate) fn store_full(what: &str, retry_after: Duration) -> Problem {
        Problem::of(
            types::STORE_FULL,
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request was not processed: the idempotency store is at its limit of {what} and takes no new keys until expired records are purged; replays still work"
            ),
        )
        .with_retry_after(retry_after)
    }

    pub(crate) fn store_corrupt() -> Problem {
        Problem::of(
            types::STORE_CORRUPT,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the stored record for this key cannot be read; nothing was changed",
        )
    }

    pub(crate) fn handler_failed(detail: impl Into<String>) -> Problem {
        Problem::of(types::HANDLER_FAILED, StatusCode::INTERNAL_SERVER_ERROR, detail)
    }

    /// The answer to retries of a request whose response was not kept: the operation
    /// completed, with `status` (which this answer carries too, so a client does not retry).
    pub(crate) fn response_not_kept(status: StatusCode, why: NotKept) -> Problem {
        let why = match why {
            NotKept::TooLarge { bytes_max } => format!("was longer than the {bytes_max} bytes that can be kept"),
            NotKept::Trailers => "carried trailers, which are not kept".to_owned(),
        };
        Problem::of(
            types::RESPONSE_NOT_KEPT,
            status,
            format!(
                "the request with this Idempotency-Key was processed and completed with status {}, \
                 but its response {why}, so it cannot be replayed; do not retry: the operation will \
                 not run again (look the result up, e.g. at this answer's Location, if any)",
                status.as_u16()
            ),
        )
    }

    /// 410 for a key whose record expired and left a tombstone (SPEC "Key lifecycle"):
    /// the operation ran and will not run again.
    // Answered once tombstones are wired into the layer (issue 22, item 3); until then only
    // the docs page and the tests use it.
    #[cfg_attr(not(test), allow(dead_code, reason = "the layer answers it once tombstones are in"))]
    pub(crate) fn key_expired() -> Problem {
        Problem::of(
            types::KEY_EXPIRED,
            StatusCode::GONE,
            "the record of this Idempotency-Key expired and only its tombstone remains: the \
             operation ran and will not run again; use a new key for a new operation",
        )
    }

    /// One problem of each kind, for tests that check them all.
    #[cfg(test)]
    pub(crate) fn all() -> Vec<Problem> {
        vec![
            key_missing(&crate::IDEMPOTENCY_KEY),
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
            key_expired(),
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
    fn docs_problems_md_has_one_section_per_catalogued_type_and_no_other() {
        // Goal: every type idem answers has its section (the page the type URI resolves
        // to), and the page documents no type that is not in the catalogue.
        let mut documented = documented_slugs();
        let mut catalogued: Vec<&str> = CATALOGUE.iter().map(|kind| kind.slug).collect();
        documented.sort_unstable();
        catalogued.sort_unstable();
        assert_eq!(documented, catalogued);
        let mut unique = catalogued.clone();
        unique.dedup();
        assert_eq!(unique, catalogued, "no slug is catalogued twice");
    }

    #[test]
    fn every_problem_the_layer_answers_is_a_catalogued_layer_type() {
        // Goal: the layer answers only catalogued types, with their titles, and every layer
        // type of the catalogue is one it answers.
        let mut answered: Vec<(String, String)> =
            kinds::all().into_iter().map(|problem| (problem.slug.into_owned(), problem.title.into_owned())).collect();
        let mut listed: Vec<(String, String)> = CATALOGUE
            .iter()
            .filter(|kind| kind.origin == Origin::Layer)
            .map(|kind| (kind.slug.to_owned(), kind.title.to_owned()))
            .collect();
        answered.sort_unstable();
        listed.sort_unstable();
        assert_eq!(answered, listed);
        assert_eq!(catalogued("key-reused"), Some(types::KEY_REUSED));
        assert_eq!(catalogued("no-such-type"), None);
    }

    #[test]
    fn about_blank_sends_no_slug_and_the_reason_phrase_as_title() {
        // Goal: RFC 9457 section 4.2.1: with about:blank the title is the status's phrase.
        let response = kinds::key_reused().into_response_at(ABOUT_BLANK);
        let body = futures::executor::block_on(http_body_util::BodyExt::collect(response.into_body()))
            .expect("problem bodies are in memory")
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("problem bodies are JSON");
        assert_eq!(json["type"], "about:blank");
        assert_eq!(json["title"], "Unprocessable Entity");
        assert_eq!(json["status"], 422);
    }

    #[test]
    fn extension_members_sit_beside_the_standard_ones_and_never_replace_them() {
        // Goal: RFC 9457 section 3.2: an extension is added to the body; a standard member's
        // name is ignored; the same name twice keeps the later value.
        let problem = kinds::key_reused()
            .with_extension("holder", serde_json::json!({ "request_id": "r1" }))
            .with_extension("status", serde_json::json!(200))
            .with_extension("holder", serde_json::json!({ "request_id": "r2" }));
        let body = futures::executor::block_on(http_body_util::BodyExt::collect(problem.into_response().into_body()))
            .expect("problem bodies are in memory")
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("problem bodies are JSON");
        assert_eq!(json["status"], 422, "a standard member is not replaced");
        assert_eq!(json["holder"], serde_json::json!({ "request_id": "r2" }));
    }

    #[test]
    fn the_type_base_is_the_configured_one() {
        // Goal: the type URI is the base the layer was given plus the slug; the public
        // into_response uses the default base.
        let at = |base: &str| {
            let response = kinds::key_missing(&crate::IDEMPOTENCY_KEY).into_response_at(base);
            let body = futures::executor::block_on(http_body_util::BodyExt::collect(response.into_body()))
                .expect("problem bodies are in memory")
                .to_bytes();
            serde_json::from_slice::<serde_json::Value>(&body).expect("problem bodies are JSON")["type"].clone()
        };
        assert_eq!(at("https://docs.example/errors#"), "https://docs.example/errors#key-missing");
        assert_eq!(kinds::key_missing(&crate::IDEMPOTENCY_KEY).type_uri(), format!("{PROBLEM_TYPE_BASE}key-missing"));
    }
}
