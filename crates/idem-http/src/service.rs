//! [`Idempotency`]: the service that claims, runs, records and replays.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response};
use http_body::Body as HttpBody;
use idem_core::{Holder, Key, RecordId, Store};
use tokio::time::Instant;
use tower::Service;
use tracing::{Instrument, Span};

use crate::answer::finish;
use crate::body::{Body, BoxError, boxed};
use crate::config::{Config, MissingKey};
use crate::execute;
use crate::keyed::Keyed;
use crate::problem::kinds;
use crate::{Outcome, Problem, ResponseFuture, observe};

/// Makes a service idempotent for requests that carry an `Idempotency-Key`.
///
/// Built by [`crate::IdempotencyLayer`]. Requests whose method needs no key pass through
/// untouched. A keyed request is decided by the store: replayed, refused (409, 422), or
/// run under a claim, renewed while it runs, and recorded.
///
/// # Runs to its end
///
/// A keyed request (reading the body, claiming, running the inner service, recording the
/// response) is processed in the response future. If the server drops that future before
/// it is done (the client disconnected), the rest of the work moves to a task of its own
/// (spawned on the layer's [`tokio_util::task::TaskTracker`]), so the handler still runs to
/// its end and the record is completed; a retry then gets the replay, and a draining server
/// can wait for the work ([`crate::IdempotencyLayer::task_tracker`]). This needs a tokio
/// runtime (axum and hyper servers have one).
///
/// The inner service receives the request with its body already read (the layer needs
/// it whole for the fingerprint), as a [`Body`].
///
/// # When the handler fails
///
/// A 5xx response, an error from the inner service, or a panic (caught, answered as a
/// 500 problem) releases the claim, so a retry runs the handler again: SPEC's rule that a
/// failing handler committed nothing. So do the "try again later" answers 408, 425 and
/// 429 ([`idem_core::StatusRules`]; both switchable on the builder). In atomic mode that holds by construction (the
/// failed transaction rolled back); in separate mode a side effect made before the failure
/// can happen again. A response whose head was 2xx or 4xx but whose body then broke is
/// not released: the head says the work was done, so a problem is recorded in its place
/// (if the body broke within the recording limit; past it the body was already on its way
/// to the client, and the record says "not kept").
pub struct Idempotency<S, St> {
    inner: S,
    config: Arc<Config>,
    store: Arc<St>,
}

impl<S, St> Idempotency<S, St> {
    pub(crate) fn from_parts(inner: S, config: Arc<Config>, store: Arc<St>) -> Idempotency<S, St> {
        Idempotency { inner, config, store }
    }
}

impl<S: Clone, St> Clone for Idempotency<S, St> {
    fn clone(&self) -> Self {
        Idempotency { inner: self.inner.clone(), config: Arc::clone(&self.config), store: Arc::clone(&self.store) }
    }
}

impl<S: std::fmt::Debug, St> std::fmt::Debug for Idempotency<S, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency").field("inner", &self.inner).field("config", &self.config).finish_non_exhaustive()
    }
}

impl<S, St, ReqBody, ResBody> Service<Request<ReqBody>> for Idempotency<S, St>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: Store + 'static,
    ReqBody: HttpBody<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        self.config.purger.start_once(&self.store, &self.config.clock);
        if !self.config.methods.contains(request.method()) {
            return ResponseFuture::pass_through(self.inner.call(request.map(boxed)), started);
        }
        let key = match parse_key(request.headers(), &self.config.key_header) {
            Ok(Some(key)) => key,
            Ok(None) if self.config.missing_key == MissingKey::PassThrough => {
                return ResponseFuture::pass_through(self.inner.call(request.map(boxed)), started);
            }
            Ok(None) => return reject(&self.config, kinds::key_missing(&self.config.key_header), None, started),
            Err(problem) => return reject(&self.config, problem, None, started),
        };
        let (parts, body) = request.into_parts();
        let span = observe::request_span(&key, &parts.method, parts.uri.path());
        let principal = match (self.config.principal)(&parts) {
            Ok(principal) => principal,
            Err(problem) => return reject(&self.config, problem, Some((&key, &span)), started),
        };
        span.record("principal", principal.as_str());
        // The readied service goes into the response future; a fresh clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let keyed = Keyed {
            route: self.config.route_for(&parts.method, parts.uri.path()),
            holder: holder(&parts.headers, &self.config.request_id_header),
            config: Arc::clone(&self.config),
            store: Arc::clone(&self.store),
            id: RecordId::new(principal, key),
            span: span.clone(),
            started,
        };
        ResponseFuture::keyed(execute::run(keyed, inner, parts, body).instrument(span), &self.config.tracker)
    }
}

/// The request's key from the key header (`Idempotency-Key` by default): `None` without
/// it, a 400 problem for a bad value or several values (SPEC: several values are
/// malformed, whether in one header or two).
fn parse_key(headers: &HeaderMap, name: &HeaderName) -> Result<Option<Key>, Problem> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(kinds::key_invalid(format!("several {name} headers were sent; send exactly one")));
    }
    Key::parse(value.as_bytes()).map(Some).map_err(|error| kinds::key_invalid(error.to_string()))
}

/// Who would hold the claim: the request id header's value, and the trace id of a W3C
/// `traceparent` (`version-traceid-parentid-flags`). [`Holder::new`] drops values that
/// are not short visible ASCII.
fn holder(headers: &HeaderMap, request_id_header: &HeaderName) -> Holder {
    let text = |name: &HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
    let trace_id = text(&http::HeaderName::from_static("traceparent")).and_then(|parent| parent.split('-').nth(1));
    Holder::new(text(request_id_header), trace_id)
}

fn reject<F, E>(
    config: &Config,
    problem: Problem,
    keyed: Option<(&Key, &Span)>,
    started: Instant,
) -> ResponseFuture<F, E> {
    let mut response = config.answer(problem);
    let (key, span) = keyed.unzip();
    finish(&mut response, Outcome::Rejected, key.map(|key| (key, &config.key_header)), span, started);
    ResponseFuture::ready(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    use http::HeaderValue;

    use crate::headers::IDEMPOTENCY_KEY;

    fn headers(values: &[&'static [u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(IDEMPOTENCY_KEY, HeaderValue::from_bytes(value).expect("test values are valid header bytes"));
        }
        map
    }

    fn parse_key(headers: &HeaderMap) -> Result<Option<Key>, Problem> {
        super::parse_key(headers, &IDEMPOTENCY_KEY)
    }

    #[test]
    fn the_holder_comes_from_the_request_id_and_the_traceparent() {
        // Goal: the request id header and the W3C traceparent's trace id are kept; junk is not.
        let mut map = HeaderMap::new();
        map.insert("x-request-id", HeaderValue::from_static("req-7"));
        map.insert("traceparent", HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        let held = holder(&map, &crate::headers::REQUEST_ID);
        assert_eq!((held.request_id(), held.trace_id()), (Some("req-7"), Some("4bf92f3577b34da6a3ce929d0e0e4736")));
        map.insert("x-request-id", HeaderValue::from_static("has space"));
        map.insert("traceparent", HeaderValue::from_static("garbage"));
        assert_eq!(holder(&map, &crate::headers::REQUEST_ID), Holder::NONE);
    }

    #[test]
    fn quoted_and_bare_keys_parse_alike_and_bad_values_are_problems() {
        // Goal: the header is parsed by Key::parse; absence, bad values and repeats are told apart.
        assert_eq!(parse_key(&headers(&[])), Ok(None));
        assert_eq!(parse_key(&headers(&[b"\"k\""])), parse_key(&headers(&[b"k"])));
        for bad in [&[b"" as &[u8]][..], &[b"a b"], &[b"a\tb"], &[&[b'a'; 256]], &[b"a", b"b"]] {
            let problem = parse_key(&headers(bad)).expect_err("bad key values are refused");
            assert_eq!(problem.status(), http::StatusCode::BAD_REQUEST);
        }
    }
}
