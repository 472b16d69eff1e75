//! [`IdempotentRetry`]: attaches the key, buffers the body, and retries with the same key.

use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body::Body as HttpBody;
use http_body_util::Full;
use idem_core::Key;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::body::{
    Ahead, KEY_EXPIRED_SLUG, KEY_REUSED_SLUG, PROBLEM_BODY_BYTES_MAX, Read, ResponseBody, declared_over,
    is_problem_json, is_problem_type, read_prefix, read_up_to,
};
use crate::config::Config;
use crate::{BoxError, Failure, OperationKey, ResponseFuture, RetryError, RetryReport};

/// The request header carrying the key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The response header that marks a replay (value `true`).
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The response header that says when the server's record of the key expires (an HTTP-date),
/// read into [`RetryReport::expires_at`].
pub const IDEMPOTENCY_EXPIRES: HeaderName = HeaderName::from_static("idempotency-expires");

/// Sends each request that needs a key with one, and retries it with the same key and the
/// same bytes until it gets a final answer, the attempts run out, or the deadline passes.
///
/// Built by [`crate::IdempotentRetryLayer`]. The inner service takes requests with a
/// buffered body (`Full<Bytes>`), which is what a hyper client over tokio or turmoil TCP
/// takes; the response body is passed back as it came, in a [`ResponseBody`] (which holds
/// the bytes the layer read ahead of a 422, see below).
///
/// # Readiness
///
/// Every attempt calls a fresh clone of the inner service, driven to readiness first
/// ([`tower::ServiceExt::oneshot`]); so `poll_ready` is always ready, and an inner
/// service that fails to become ready counts as a failed attempt.
///
/// # What decides a retry
///
/// | the attempt got | then |
/// |---|---|
/// | an error from the inner service (connection refused, reset, closed) | retry |
/// | no response headers within the per-attempt timeout | retry |
/// | a status in the retry list (409, 429, 503 by default) | retry, after `Retry-After` if given |
/// | 422 with the key-reused problem (below) | [`RetryError::KeyReused`], no retry |
/// | 410 with the key-expired problem (below) | [`RetryError::KeyExpired`], no retry |
/// | anything else (2xx, 3xx, 400, 413, any other 422 or 410, other 4xx and 5xx) | the final response |
///
/// A 422 is the key-reused problem when its `Content-Type` is `application/problem+json`
/// and its body, read whole within [`crate::PROBLEM_BODY_BYTES_MAX`] bytes and the
/// attempt's time, is a JSON object whose `type` URI ends in the fragment or path segment
/// `key-reused` ([`crate::KEY_REUSED_SLUG`], what idem-http answers). Every other 422 (a
/// handler refusing a body of the wrong shape, say, as axum's `Json` extractor does) is the
/// server's answer about the request: returned, not retried, with its body whole (the bytes
/// read ahead first, then the rest). A 410 is told the same way, by the slug `key-expired`
/// ([`crate::KEY_EXPIRED_SLUG`]).
///
/// Between attempts it waits [`crate::Backoff`]'s jittered time or the server's
/// `Retry-After` (in seconds); a wait that would end past the overall deadline is not
/// started ([`RetryError::DeadlineExceeded`]).
///
/// # Time and randomness
///
/// Time is read only from tokio's clock (`tokio::time::Instant`, `sleep`, `timeout`),
/// which tokio's paused time and turmoil drive. Randomness comes only from the configured
/// key generator and jitter source; with seeded ones a run is reproducible.
pub struct IdempotentRetry<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> IdempotentRetry<S> {
    pub(crate) fn from_parts(inner: S, config: Arc<Config>) -> IdempotentRetry<S> {
        IdempotentRetry { inner, config }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone> Clone for IdempotentRetry<S> {
    fn clone(&self) -> Self {
        IdempotentRetry { inner: self.inner.clone(), config: Arc::clone(&self.config) }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for IdempotentRetry<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotentRetry").field("inner", &self.inner).field("config", &self.config).finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for IdempotentRetry<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ReqBody: HttpBody + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: HttpBody + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError> + Send,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = RetryError;
    type Future = ResponseFuture<ResponseBody<ResBody>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (inner, config) = (self.inner.clone(), Arc::clone(&self.config));
        ResponseFuture::new(Box::pin(send(inner, config, request)))
    }
}

/// Buffers the body, picks the key, and runs the attempts.
async fn send<S, ReqBody, ResBody>(
    inner: S,
    config: Arc<Config>,
    request: Request<ReqBody>,
) -> Result<Response<ResponseBody<ResBody>>, RetryError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    ReqBody: HttpBody,
    ReqBody::Error: Into<BoxError>,
    ResBody: HttpBody,
    ResBody::Error: Into<BoxError>,
{
    let (mut parts, body) = request.into_parts();
    if declared_over(&body, config.body_bytes_max) {
        return Err(RetryError::BodyTooLarge { bytes_max: config.body_bytes_max });
    }
    let body = match read_up_to(body, config.body_bytes_max).await.map_err(RetryError::Body)? {
        Read::Whole(body) => body,
        Read::Truncated(_) => return Err(RetryError::BodyTooLarge { bytes_max: config.body_bytes_max }),
    };
    if !config.methods.contains(&parts.method) {
        let response = inner.oneshot(Request::from_parts(parts, Full::new(body))).await;
        let response = response.map_err(|error| RetryError::Transport(error.into()))?;
        return Ok(with_report(response.map(ResponseBody::new), None, 1));
    }
    let key = operation_key(&mut parts, &config)?;
    Attempts { inner, config: &config, parts, body, key }.run().await
}

/// The key for this request: the caller's header (left as it is), else the caller's
/// [`OperationKey`], else a fresh one; the latter two are set as the header.
fn operation_key(parts: &mut Parts, config: &Config) -> Result<Key, RetryError> {
    let operation = parts.extensions.get::<OperationKey>().map(|OperationKey(key)| key.clone());
    let mut headers = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
    match (headers.next(), headers.next()) {
        (Some(value), None) => {
            let header = Key::parse(value.as_bytes())?;
            match operation {
                Some(operation) if operation != header => Err(RetryError::ConflictingKeys { header, operation }),
                _ => Ok(header),
            }
        }
        (Some(_), Some(_)) => {
            Err(RetryError::SeveralKeys { count: parts.headers.get_all(IDEMPOTENCY_KEY).iter().count() })
        }
        (None, _) => {
            let key = operation.unwrap_or_else(|| config.keys.next_key());
            let value = HeaderValue::try_from(key.to_sf_string())
                .expect("a key's structured-field string is visible ASCII, a valid header value");
            parts.headers.insert(IDEMPOTENCY_KEY, value);
            Ok(key)
        }
    }
}

/// One keyed request's attempts.
struct Attempts<'a, S> {
    inner: S,
    config: &'a Config,
    parts: Parts,
    body: Bytes,
    key: Key,
}

/// How one attempt ended.
enum Attempt<B> {
    /// A response to hand to the caller.
    Final(Response<B>),
    /// A failure worth retrying.
    Retry(Failure),
}

impl<S, ResBody> Attempts<'_, S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    ResBody: HttpBody,
    ResBody::Error: Into<BoxError>,
{
    async fn run(mut self) -> Result<Response<ResponseBody<ResBody>>, RetryError> {
        let config = self.config;
        let deadline_at = Instant::now() + config.deadline;
        let mut attempts = 0_u32;
        let mut last = None;
        // Bounded: `attempts` grows by one per turn and the loop returns at attempts_max.
        loop {
            attempts += 1;
            let attempt_at = (Instant::now() + config.attempt_timeout).min(deadline_at);
            let failure = match self.attempt(attempt_at, attempts).await? {
                Some(Attempt::Final(response)) => return Ok(with_report(response, Some(self.key), attempts)),
                Some(Attempt::Retry(failure)) => failure,
                None if attempt_at == deadline_at => return Err(self.deadline_exceeded(attempts, last)),
                None => Failure::TimedOut(config.attempt_timeout),
            };
            if attempts >= config.attempts_max {
                return Err(RetryError::Exhausted { key: self.key, attempts, last: failure });
            }
            let wait = match &failure {
                Failure::Status { retry_after: Some(retry_after), .. } => *retry_after,
                _ => config.backoff.delay(attempts, &mut **config.rng.lock().unwrap_or_else(PoisonError::into_inner)),
            };
            tracing::debug!(key = %self.key, attempts, wait_ms = wait.as_millis() as u64, %failure, "retrying with the same key");
            if Instant::now() + wait >= deadline_at {
                return Err(self.deadline_exceeded(attempts, Some(failure)));
            }
            last = Some(failure);
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends the request once; `None` when `attempt_at` passed before the response headers
    /// arrived. A failed attempt's body is read until `attempt_at` at most (what arrived by
    /// then is kept).
    async fn attempt(
        &mut self,
        attempt_at: Instant,
        attempts: u32,
    ) -> Result<Option<Attempt<ResponseBody<ResBody>>>, RetryError> {
        let request = Request::from_parts(self.parts.clone(), Full::new(self.body.clone()));
        let response = match tokio::time::timeout_at(attempt_at, self.inner.clone().oneshot(request)).await {
            Err(_elapsed) => return Ok(None),
            Ok(Err(error)) => return Ok(Some(Attempt::Retry(Failure::Transport(error.into())))),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if let Some(slug) = layer_problem_for(status) {
            let (parts, body) = response.into_parts();
            let mut body = ResponseBody::new(body);
            // Only the idempotency layer's own problem stops the retries with an error; read
            // (boundedly) to find out, keeping every byte read for the caller otherwise.
            if is_problem_json(parts.headers.get(header::CONTENT_TYPE)) {
                let ahead = tokio::time::timeout_at(attempt_at, body.read_ahead(PROBLEM_BODY_BYTES_MAX)).await;
                if ahead == Ok(Ahead::Whole) && is_problem_type(body.buffered(), slug) {
                    return Err(self.layer_problem(slug, attempts, &parts.headers, body.buffered().clone()));
                }
            }
            return Ok(Some(Attempt::Final(Response::from_parts(parts, body))));
        }
        if !self.config.retry_statuses.contains(&status) {
            return Ok(Some(Attempt::Final(response.map(ResponseBody::new))));
        }
        let retry_after = crate::backoff::retry_after(response.headers());
        // The start of the body says why (a problem+json); reading it also frees the connection.
        let body = tokio::time::timeout_at(attempt_at, read_prefix(response.into_body())).await.unwrap_or_default();
        Ok(Some(Attempt::Retry(Failure::Status { status, retry_after, body })))
    }

    /// The error for the idempotency layer's problem `slug`, answered on attempt `attempts`.
    fn layer_problem(&self, slug: &str, attempts: u32, headers: &http::HeaderMap, body: Bytes) -> RetryError {
        let (key, expires_at) = (self.key.clone(), crate::report::expires_at(headers));
        if slug == KEY_EXPIRED_SLUG {
            RetryError::KeyExpired { key, attempts, expires_at, body }
        } else {
            RetryError::KeyReused { key, attempts, expires_at, body }
        }
    }

    fn deadline_exceeded(&self, attempts: u32, last: Option<Failure>) -> RetryError {
        RetryError::DeadlineExceeded { key: self.key.clone(), attempts, deadline: self.config.deadline, last }
    }
}

/// The idempotency layer's problem a response with `status` may carry and that ends the
/// retries with an error: 422 key-reused, 410 key-expired.
fn layer_problem_for(status: StatusCode) -> Option<&'static str> {
    match status {
        StatusCode::UNPROCESSABLE_ENTITY => Some(KEY_REUSED_SLUG),
        StatusCode::GONE => Some(KEY_EXPIRED_SLUG),
        _ => None,
    }
}

/// Adds the [`RetryReport`] to a final response.
fn with_report<B>(mut response: Response<B>, key: Option<Key>, attempts: u32) -> Response<B> {
    let replayed =
        response.headers().get(IDEMPOTENT_REPLAYED).is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"true"));
    let expires_at = key.as_ref().and_then(|_| crate::report::expires_at(response.headers()));
    response.extensions_mut().insert(RetryReport { key, attempts, replayed, expires_at });
    response
}
