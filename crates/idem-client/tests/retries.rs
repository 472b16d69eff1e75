//! The retrying client against the real server: `idem-server`'s payments API (what `idem
//! serve` runs) on SQLite in atomic mode, behind real TCP on loopback, reached through a
//! real hyper client (wrapped in a fault-injecting transport where a test says so).
//! Timing tests run on tokio's paused clock with the same app called in process, so no
//! test sleeps on the wall clock.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use idem_client::{Failure, IdempotentRetryLayer, OperationKey, RetryError, RetryReport};
use idem_core::Key;
use support::{Fault, Faulty, InProcess, Server, payment, transport};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

/// A layer whose waits are tiny, so real-time tests do not linger between attempts.
fn quick() -> idem_client::IdempotentRetryBuilder {
    IdempotentRetryLayer::builder().backoff(Duration::from_millis(1), Duration::from_millis(5))
}

fn post(url: String, body: impl Into<String>) -> Request<String> {
    Request::post(url).header("content-type", "application/json").body(body.into()).expect("test requests are valid")
}

fn report<B>(response: &Response<B>) -> RetryReport {
    response.extensions().get::<RetryReport>().cloned().expect("the layer reports on every response")
}

async fn text<B>(response: Response<B>) -> Bytes
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    response.into_body().collect().await.expect("the server sends whole bodies").to_bytes()
}

#[tokio::test]
async fn lost_responses_still_end_in_one_payment_with_the_first_body() {
    // Goal: with every other response lost in transit, each logical payment executes exactly
    // once, and the caller gets the first execution's body (as a replay), with one key throughout.
    let server = Server::start().await;
    let transport = Faulty::new(transport(), Fault::LoseEveryOtherResponse);
    let client = quick().build().expect("valid configuration").layer(transport.clone());

    let mut keys = Vec::new();
    for (index, amount) in ["100.00", "25.50", "7.00"].into_iter().enumerate() {
        let response =
            client.clone().oneshot(post(server.url("/payments"), payment(amount))).await.expect("retries succeed");
        let report = report(&response);
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!((report.attempts, report.replayed), (2, true), "the first answer was lost, the retry was replayed");
        assert_eq!(server.payment_count().await, index as u64 + 1, "exactly one payment per logical payment");
        let answered: serde_json::Value = serde_json::from_slice(&text(response).await).expect("payments are JSON");
        let recorded =
            server.payments().await.into_iter().find(|payment| payment["payment_id"] == answered["payment_id"]);
        assert_eq!(Some(&answered), recorded.as_ref(), "the caller sees the payment the first attempt made");
        keys.push(report.key.expect("a POST gets a key"));
    }

    let seen = transport.seen();
    assert_eq!(seen.len(), 6);
    for (pair, key) in seen.chunks(2).zip(&keys) {
        let sent = Some(http::HeaderValue::try_from(key.to_sf_string()).expect("keys are valid header values"));
        assert_eq!((&pair[0].key, &pair[1].key), (&sent, &sent), "the retry resends the same key");
        assert_eq!(pair[0].body, pair[1].body, "the retry resends the same bytes");
    }
    assert!(keys[0] != keys[1] && keys[1] != keys[2], "each logical operation gets a fresh key");
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_an_error_and_not_retried() {
    // Goal: a 422 (same key, different body) surfaces as KeyReused after one attempt, and the
    // second body never executes.
    let server = Server::start().await;
    let transport = Faulty::new(transport(), Fault::Nothing);
    let client = quick().build().expect("valid configuration").layer(transport.clone());
    let key = Key::try_from("order-7").expect("a valid key");
    let with_key = |amount| {
        let mut request = post(server.url("/payments"), payment(amount));
        request.extensions_mut().insert(OperationKey(key.clone()));
        request
    };

    let first = client.clone().oneshot(with_key("100.00")).await.expect("the first payment succeeds");
    assert_eq!(first.status(), StatusCode::CREATED);
    let error = client.oneshot(with_key("999.00")).await.expect_err("another body under the same key is refused");

    let RetryError::KeyReused { key: reused, attempts, body, .. } = &error else {
        panic!("expected KeyReused, got {error:?}")
    };
    assert_eq!((reused, *attempts), (&key, 1));
    let problem: serde_json::Value = serde_json::from_slice(body).expect("the server's 422 is problem+json");
    assert_eq!(problem["status"], 422);
    assert_eq!(transport.seen().len(), 2, "one attempt per operation: the 422 was not retried");
    assert_eq!(server.payment_count().await, 1, "the mismatching request never executed");
    assert_eq!((error.key(), error.attempts()), (Some(&key), 1));
}

#[tokio::test]
async fn bad_requests_and_oversized_bodies_are_final_answers_not_retried() {
    // Goal: 400 (invalid body) and 413 (over the server's 1 MiB limit) come back after one attempt each.
    let server = Server::start().await;
    let transport = Faulty::new(transport(), Fault::Nothing);
    let client = quick().body_bytes_max(2 << 20).build().expect("valid configuration").layer(transport.clone());

    let bad = client.clone().oneshot(post(server.url("/payments"), "not json")).await.expect("an answer");
    assert_eq!((bad.status(), report(&bad).attempts), (StatusCode::BAD_REQUEST, 1));
    let large = client.oneshot(post(server.url("/payments"), payment(&"9".repeat(1 << 20)))).await.expect("an answer");
    assert_eq!((large.status(), report(&large).attempts), (StatusCode::PAYLOAD_TOO_LARGE, 1));
    assert_eq!(transport.seen().len(), 2);
    assert_eq!(server.payment_count().await, 0);
}

#[tokio::test]
async fn the_callers_key_is_kept_and_get_passes_through_without_one() {
    // Goal: a key header the caller set is sent untouched on every attempt; a GET gets no
    // key and one attempt only.
    let server = Server::start().await;
    let transport = Faulty::new(transport(), Fault::LoseEveryOtherResponse);
    let client = quick().build().expect("valid configuration").layer(transport.clone());

    let mut request = post(server.url("/payments"), payment("1.00"));
    request.headers_mut().insert("idempotency-key", http::HeaderValue::from_static("caller-key-1"));
    let response = client.clone().oneshot(request).await.expect("retries succeed");
    assert_eq!(report(&response).key, Some(Key::try_from("caller-key-1").expect("a valid key")));
    let keys: Vec<_> = transport.seen().into_iter().map(|seen| seen.key).collect();
    assert_eq!(keys, vec![Some(http::HeaderValue::from_static("caller-key-1")); 2]);

    // The transport loses this GET's answer (attempt 3): a pass-through is never retried.
    let get = || Request::get(server.url("/payments")).body(String::new()).expect("a valid request");
    let lost = client.clone().oneshot(get()).await;
    assert!(matches!(lost, Err(RetryError::Transport(_))), "{lost:?}");
    let listed = client.oneshot(get()).await.expect("the GET is answered");
    assert_eq!(report(&listed), RetryReport { key: None, attempts: 1, replayed: false, expires_at: None });
    let seen = transport.seen();
    assert_eq!(seen.len(), 4);
    assert_eq!((&seen[2].key, &seen[3].key), (&None, &None), "no key on a method that needs none");
}

#[tokio::test]
async fn requests_the_client_cannot_send_safely_are_refused_before_sending() {
    // Goal: an over-limit body, a malformed caller key and conflicting keys fail without any attempt.
    let server = Server::start().await;
    let transport = Faulty::new(transport(), Fault::Nothing);
    let client = quick().body_bytes_max(16).build().expect("valid configuration").layer(transport.clone());

    let too_large = client.clone().oneshot(post(server.url("/payments"), payment("1.00"))).await;
    assert!(matches!(too_large, Err(RetryError::BodyTooLarge { bytes_max: 16 })), "{too_large:?}");

    let mut bad_key = post(server.url("/payments"), "{}");
    bad_key.headers_mut().insert("idempotency-key", http::HeaderValue::from_static("\"unterminated"));
    assert!(matches!(client.clone().oneshot(bad_key).await, Err(RetryError::InvalidKey(_))));

    let mut two_keys = post(server.url("/payments"), "{}");
    two_keys.headers_mut().insert("idempotency-key", http::HeaderValue::from_static("a"));
    two_keys.extensions_mut().insert(OperationKey(Key::try_from("b").expect("a valid key")));
    assert!(matches!(client.oneshot(two_keys).await, Err(RetryError::ConflictingKeys { .. })));

    assert!(transport.seen().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn an_unreachable_server_exhausts_the_attempts() {
    // Goal: connection errors are retried up to attempts_max, then reported with the key and the last error.
    let vacant = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback port 0 can be bound");
    let addr = vacant.local_addr().expect("a bound listener has an address");
    drop(vacant); // nothing listens there now: connections are refused
    let transport = Faulty::new(transport(), Fault::Nothing);
    let client = quick().attempts_max(3).build().expect("valid configuration").layer(transport.clone());

    let error = client.oneshot(post(format!("http://{addr}/payments"), payment("1.00"))).await.expect_err("no server");
    let RetryError::Exhausted { attempts: 3, last: Failure::Transport(_), .. } = &error else {
        panic!("expected three failed connections, got {error:?}")
    };
    let seen = transport.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|attempt| attempt.key == seen[0].key && attempt.key.is_some()));
}

#[tokio::test]
async fn seeded_layers_send_reproducible_keys() {
    // Goal: two clients built with the same seed send the same key sequence; another seed differs.
    async fn keys_sent(seed: u64) -> Vec<Key> {
        let server = Server::start().await;
        let client = quick().seed(seed).build().expect("valid configuration").layer(transport());
        let mut keys = Vec::new();
        for amount in ["1.00", "2.00", "3.00"] {
            let response =
                client.clone().oneshot(post(server.url("/payments"), payment(amount))).await.expect("an answer");
            assert_eq!(response.status(), StatusCode::CREATED);
            keys.push(report(&response).key.expect("a POST gets a key"));
        }
        keys
    }
    let first = keys_sent(2024).await;
    assert_eq!(first, keys_sent(2024).await);
    assert_ne!(first, keys_sent(2025).await);
}

/// The payments app called in process (no sockets, so tokio's paused clock only moves
/// when every task waits on a timer), behind a rate limiter that answers the first
/// request 429 with `Retry-After: {retry_after_s}`. Returns the service and the tokio
/// time of each arrival at the rate limiter.
#[allow(clippy::type_complexity)]
fn throttled_app(
    retry_after_s: u64,
    router: axum::Router,
) -> (
    impl tower::Service<
        Request<Full<Bytes>>,
        Response = Response<axum::body::Body>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static,
    Arc<Mutex<Vec<Instant>>>,
) {
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&arrivals);
    let service = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let (router, seen) = (router.clone(), Arc::clone(&seen));
        async move {
            let first = {
                let mut seen = seen.lock().expect("no test panics while holding it");
                seen.push(Instant::now());
                seen.len() == 1
            };
            if first {
                let limited = Response::builder()
                    .status(StatusCode::TOO_MANY_REQUESTS)
                    .header("retry-after", retry_after_s.to_string())
                    .body(axum::body::Body::empty())
                    .expect("a static response is valid");
                return Ok(limited);
            }
            router.oneshot(request).await
        }
    });
    (service, arrivals)
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_on_the_runtimes_clock() {
    // Goal: after a 429 with Retry-After: 3 the retry comes exactly 3 s later (tokio's paused
    // clock), not after the much shorter jittered backoff.
    let server = InProcess::new();
    let (app, arrivals) = throttled_app(3, server.router.clone());
    let client = quick().build().expect("valid configuration").layer(app);

    let response = client.oneshot(post("/payments".into(), payment("5.00"))).await.expect("the retry succeeds");
    assert_eq!((response.status(), report(&response).attempts), (StatusCode::CREATED, 2));
    let arrivals = arrivals.lock().expect("no test panics while holding it").clone();
    assert_eq!(arrivals.len(), 2);
    assert_eq!(arrivals[1] - arrivals[0], Duration::from_secs(3));
    assert_eq!(server.payments().await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_past_the_deadline_gives_up_at_once() {
    // Goal: when the server asks for a wait that would end past the overall deadline, the
    // client stops now (no pointless sleep) and says so, with the key to resume later.
    let server = InProcess::new();
    let (app, _arrivals) = throttled_app(120, server.router.clone());
    let client = quick().deadline(Duration::from_secs(30)).build().expect("valid configuration").layer(app);

    let started = Instant::now();
    let error = client.oneshot(post("/payments".into(), payment("5.00"))).await.expect_err("the wait is too long");
    let RetryError::DeadlineExceeded { attempts: 1, last: Some(Failure::Status { status, retry_after, .. }), .. } =
        &error
    else {
        panic!("expected DeadlineExceeded after one attempt, got {error:?}")
    };
    assert_eq!((*status, *retry_after), (StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(120))));
    assert_eq!(Instant::now() - started, Duration::ZERO, "no time was spent waiting");
    assert!(error.key().is_some());
    assert_eq!(server.payments().await.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_silent_attempt_times_out_and_is_retried() {
    // Goal: an attempt with no answer is cut at the per-attempt timeout and retried with the
    // same key; the payment then executes once.
    let server = InProcess::new();
    let transport = Faulty::new(server.router.clone(), Fault::FirstAttemptHangs);
    let client =
        quick().attempt_timeout(Duration::from_secs(2)).build().expect("valid configuration").layer(transport.clone());

    let started = Instant::now();
    let response = client.oneshot(post("/payments".into(), payment("5.00"))).await.expect("the retry succeeds");
    assert_eq!((response.status(), report(&response).attempts), (StatusCode::CREATED, 2));
    let waited = Instant::now() - started;
    assert!(
        waited >= Duration::from_secs(2) && waited <= Duration::from_secs(2) + Duration::from_millis(5),
        "{waited:?}"
    );
    let seen = transport.seen();
    assert_eq!(seen[0].key, seen[1].key);
    assert_eq!(server.payments().await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_an_attempt_short() {
    // Goal: an attempt still waiting when the overall deadline passes ends the request with
    // DeadlineExceeded, exactly at the deadline.
    let server = InProcess::new();
    let transport = Faulty::new(server.router.clone(), Fault::FirstAttemptHangs);
    let client = quick()
        .attempt_timeout(Duration::from_secs(60))
        .deadline(Duration::from_secs(5))
        .build()
        .expect("valid configuration")
        .layer(transport);

    let started = Instant::now();
    let error = client.oneshot(post("/payments".into(), payment("5.00"))).await.expect_err("the deadline passes");
    assert!(matches!(error, RetryError::DeadlineExceeded { attempts: 1, last: None, .. }), "{error:?}");
    assert_eq!(Instant::now() - started, Duration::from_secs(5));
    assert_eq!(server.payments().await.len(), 0);
}
