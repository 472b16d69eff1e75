//! The client's byte and time bounds at their edges, against a scripted inner service (no
//! network): a request body exactly at the limit is sent, a key-reused problem exactly
//! 64 KiB long is still told apart, a failed attempt's body is kept up to 16 KiB, the default
//! body limit is 1 MiB, a deadline of exactly the limit is allowed, and a server's
//! `Retry-After` is read up to a day.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use idem_client::{Failure, IdempotentRetryLayer, RetryError};
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt, service_fn};

/// The inner service the tests script.
type Inner = BoxCloneService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;

/// An inner service that answers every request with `status`, `content_type` (if any) and
/// `body`, counting calls.
fn scripted(status: StatusCode, content_type: Option<&'static str>, body: Bytes) -> (Inner, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let service = service_fn(move |_request: Request<Full<Bytes>>| {
        counter.fetch_add(1, Ordering::SeqCst);
        let body = body.clone();
        let mut response = Response::builder().status(status);
        if let Some(content_type) = content_type {
            response = response.header(header::CONTENT_TYPE, content_type);
        }
        async move { Ok::<_, Infallible>(response.body(Full::new(body)).expect("a valid response")) }
    });
    (BoxCloneService::new(service), calls)
}

fn post(body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::post("http://server.invalid/payments").body(Full::new(Bytes::from(body))).expect("a valid request")
}

#[tokio::test(start_paused = true)]
async fn a_request_body_exactly_at_the_limit_is_sent_and_one_byte_more_is_not() {
    // Goal: `body_bytes_max` is the largest body sent, not the first one refused: 8 bytes
    // with a limit of 8 go out (once, answered 201); 9 bytes are refused before any attempt.
    let layer = IdempotentRetryLayer::builder().body_bytes_max(8).seed(3).build().expect("a valid configuration");

    let (inner, calls) = scripted(StatusCode::CREATED, None, Bytes::from_static(b"{}"));
    let response = layer.layer(inner).oneshot(post(vec![b'x'; 8])).await.expect("a body at the limit is sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let (inner, calls) = scripted(StatusCode::CREATED, None, Bytes::from_static(b"{}"));
    let error = layer.layer(inner).oneshot(post(vec![b'x'; 9])).await.expect_err("one byte past the limit");
    assert!(matches!(error, RetryError::BodyTooLarge { bytes_max: 8 }), "{error:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing is sent");
}

/// idem-http's key-reused problem, padded to `len` bytes.
fn key_reused_problem(len: usize) -> Bytes {
    let (start, end) =
        (&br#"{"type":"https://idem.invalid/docs/problems.md#key-reused","detail":""#[..], &br#""}"#[..]);
    let mut body = start.to_vec();
    body.resize(len - end.len(), b'x');
    body.extend_from_slice(end);
    assert_eq!(body.len(), len);
    Bytes::from(body)
}

#[tokio::test(start_paused = true)]
async fn a_key_reused_problem_of_exactly_64_kib_is_key_reuse_and_one_byte_more_is_an_ordinary_422() {
    // Goal: the layer reads up to PROBLEM_BODY_BYTES_MAX (64 KiB) of a 422 problem+json to
    // tell key reuse apart: a problem of exactly 65,536 bytes is read and recognised; at
    // 65,537 bytes it is not read ahead, so it comes back as the server's 422, body whole.
    let layer = IdempotentRetryLayer::builder().seed(5).build().expect("a valid configuration");
    let problem = Some("application/problem+json");

    let at_limit = key_reused_problem(64 * 1024);
    let (inner, calls) = scripted(StatusCode::UNPROCESSABLE_ENTITY, problem, at_limit.clone());
    let error = layer.layer(inner).oneshot(post(b"{}".to_vec())).await.expect_err("key reuse is an error");
    let RetryError::KeyReused { attempts: 1, body, .. } = error else {
        panic!("expected key reuse on the first attempt, got {error:?}");
    };
    assert_eq!(body, at_limit);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "key reuse is never retried");

    let past_limit = key_reused_problem(64 * 1024 + 1);
    let (inner, _) = scripted(StatusCode::UNPROCESSABLE_ENTITY, problem, past_limit.clone());
    let response = layer.layer(inner).oneshot(post(b"{}".to_vec())).await.expect("an ordinary 422 is a response");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let read = response.into_body().collect().await.expect("a scripted body is whole").to_bytes();
    assert_eq!(read, past_limit);
}

/// A response body sent in chunks without a length (as a chunked HTTP/1.1 response is).
struct Chunks(VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(http_body::Frame::data(chunk))))
    }
}

/// The body kept in the error after one attempt answered 503 with `body`.
async fn kept_of_a_503<B>(body: B) -> Bytes
where
    B: http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let body = Arc::new(Mutex::new(Some(body)));
    let inner = service_fn(move |_request: Request<Full<Bytes>>| {
        let body = body.lock().expect("no test thread panics holding it").take().expect("one attempt only");
        async move { Ok::<_, Infallible>(Response::builder().status(503).body(body).expect("a valid response")) }
    });
    let layer = IdempotentRetryLayer::builder().attempts_max(1).seed(4).build().expect("a valid configuration");
    let error = layer.layer(inner).oneshot(post(b"{}".to_vec())).await.expect_err("one attempt, answered 503");
    let RetryError::Exhausted { last: Failure::Status { status, body: kept, .. }, .. } = error else {
        panic!("expected the 503 as the last failure, got {error:?}");
    };
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    kept
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_keeps_its_body_up_to_16_kib() {
    // Goal: the body of a retryable failure (503) is kept in the error up to 16 KiB, the
    // bound FAILURE_BODY_BYTES_MAX documents (enough for any problem+json, bounded for a
    // hostile server): a body of exactly 16,384 bytes is kept whole, and a 20,000-byte body
    // sent in chunks without a length keeps exactly its first 16,384 bytes.
    let body: Vec<u8> = (0..20_000_u32).map(|i| b'a' + (i % 26) as u8).collect();
    let sixteen_kib = Bytes::copy_from_slice(&body[..16 * 1024]);
    assert_eq!(kept_of_a_503(Full::new(sixteen_kib.clone())).await, sixteen_kib);

    let chunks = body.chunks(5_000).map(Bytes::copy_from_slice).collect();
    assert_eq!(kept_of_a_503(Chunks(chunks)).await, sixteen_kib);
    // The same 20,000 bytes with a declared length keep the same first 16,384 bytes, not
    // an empty body (the declared length used to short-cut the read).
    assert_eq!(kept_of_a_503(Full::new(Bytes::from(body))).await, sixteen_kib);
}

#[test]
fn a_retry_after_past_a_day_is_read_as_one_day() {
    // Goal: a server's Retry-After is honoured up to a day (86,400 s) and read as a day
    // beyond it, not as some shorter wait; a day and under are read as sent.
    let read = |value: &'static str| {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static(value));
        idem_client::backoff::retry_after(&headers)
    };
    let day = Duration::from_secs(86_400);
    assert_eq!(read("86399"), Some(day - Duration::from_secs(1)));
    assert_eq!(read("86400"), Some(day));
    assert_eq!(read("86401"), Some(day));
    assert_eq!(read("1000000"), Some(day));
}

#[tokio::test(start_paused = true)]
async fn the_default_body_limit_is_one_mebibyte() {
    // Goal: by default the layer buffers and sends bodies up to 1 MiB (1,048,576 bytes, the
    // server's default limit too) and refuses a byte more before sending anything.
    let layer = IdempotentRetryLayer::builder().seed(6).build().expect("the defaults are valid");
    let mebibyte = 1024 * 1024;

    let (inner, calls) = scripted(StatusCode::CREATED, None, Bytes::from_static(b"{}"));
    let response = layer.layer(inner).oneshot(post(vec![b'x'; mebibyte])).await.expect("1 MiB is sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let (inner, calls) = scripted(StatusCode::CREATED, None, Bytes::from_static(b"{}"));
    let error = layer.layer(inner).oneshot(post(vec![b'x'; mebibyte + 1])).await.expect_err("past 1 MiB");
    assert!(matches!(error, RetryError::BodyTooLarge { bytes_max } if bytes_max == mebibyte), "{error:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn a_deadline_of_exactly_the_limit_is_accepted() {
    // Goal: DEADLINE_LIMIT (one hour) is the longest deadline allowed, not the first refused.
    let at_limit = IdempotentRetryLayer::builder().deadline(Duration::from_secs(3600)).build();
    assert!(at_limit.is_ok(), "{:?}", at_limit.err());
    let past = Duration::from_secs(3600) + Duration::from_nanos(1);
    let refused = IdempotentRetryLayer::builder().deadline(past).build().err();
    assert_eq!(refused, Some(idem_client::ConfigError::DeadlineTooLong { asked: past }));
}

#[test]
fn a_backoff_whose_base_equals_its_cap_is_accepted_and_one_over_it_is_not() {
    // Goal: base = max is a constant pause, a valid choice; only a base above the cap is refused.
    let pause = Duration::from_millis(250);
    assert!(IdempotentRetryLayer::builder().backoff(pause, pause).build().is_ok());
    let refused = IdempotentRetryLayer::builder().backoff(pause + Duration::from_millis(1), pause).build();
    assert!(refused.is_err(), "a base over the cap");
}

#[test]
fn the_builder_prints_its_settings() {
    // Goal: a builder in a log or a panic message shows what it was given.
    let text = format!("{:?}", IdempotentRetryLayer::builder().attempts_max(7));
    assert!(text.starts_with("IdempotentRetryBuilder"), "{text}");
    assert!(text.contains("attempts_max: 7"), "{text}");
}
