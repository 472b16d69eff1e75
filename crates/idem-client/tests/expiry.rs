//! What the client learns of a key's expiry, against the real payments server (`idem-server`
//! on SQLite over loopback, records kept with a tombstone): the `Idempotency-Expires` of the
//! first answer and of a replay in [`RetryReport::expires_at`], and a retry after retention
//! stopped with [`RetryError::KeyExpired`] (410 key-expired) instead of paying again (SPEC
//! "Key lifecycle": expiry on the wire, tombstones).

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::routing::post;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use idem_client::{IdempotentRetryLayer, OperationKey, RetryError, RetryReport};
use idem_core::{Key, Policy};
use support::{Fault, Faulty, Server, payment, transport};
use tower::{Layer, ServiceExt};

/// The server's clock at start (support's), in seconds since 1970.
const T0_SECS: u64 = 1_700_000_000;
const RETENTION: Duration = Duration::from_secs(60);
const TOMBSTONE: Duration = Duration::from_secs(3600);

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn pay(url: &str, key: &Key, amount: &str) -> Request<String> {
    Request::post(url)
        .header("content-type", "application/json")
        .extension(OperationKey(key.clone()))
        .body(payment(amount))
        .expect("test requests are valid")
}

fn report<B>(response: &Response<B>) -> RetryReport {
    response.extensions().get::<RetryReport>().cloned().expect("the layer reports on every response")
}

#[tokio::test]
async fn the_report_states_the_expiry_and_a_retry_after_it_stops_at_the_tombstone() {
    // Goal: the first answer and its replay report the same expiry (retention from the
    // completion); past retention the retry is KeyExpired after one attempt, with the
    // tombstone's end, and the payment is not made again.
    let policy = Policy::new(Duration::from_secs(10), RETENTION).and_then(|p| p.with_tombstone(TOMBSTONE));
    let server = Server::start_with(policy.expect("a valid policy")).await;
    let transport = Faulty::new(transport(), Fault::Nothing);
    let client = IdempotentRetryLayer::new().layer(transport.clone());
    let (url, key) = (server.url("/payments"), Key::try_from("order-1").expect("a valid key"));

    let first = client.clone().oneshot(pay(&url, &key, "100.00")).await.expect("paid");
    assert_eq!(first.status(), StatusCode::CREATED);
    let expected = at(T0_SECS + RETENTION.as_secs());
    assert_eq!((report(&first).replayed, report(&first).expires_at), (false, Some(expected)));

    server.clock.advance(Duration::from_secs(5));
    let replay = client.clone().oneshot(pay(&url, &key, "100.00")).await.expect("replayed");
    assert_eq!((report(&replay).replayed, report(&replay).expires_at), (true, Some(expected)), "the same expiry");

    server.clock.advance(RETENTION);
    let sent_before = transport.seen().len();
    let expired = client.clone().oneshot(pay(&url, &key, "100.00")).await.expect_err("the key expired");
    let RetryError::KeyExpired { key: expired_key, attempts: 1, expires_at, body } = &expired else {
        panic!("expected KeyExpired after one attempt, got {expired:?}");
    };
    assert_eq!((expired_key, *expires_at), (&key, Some(expected + TOMBSTONE)), "the tombstone's end");
    assert_eq!(expired.expires_at(), Some(expected + TOMBSTONE));
    assert!(String::from_utf8_lossy(body).contains("key-expired"), "the server's problem: {body:?}");
    assert_eq!(transport.seen().len(), sent_before + 1, "a 410 is not retried");
    assert_eq!(server.payment_count().await, 1, "the retry after expiry did not pay again");
}

#[tokio::test]
async fn a_410_that_is_not_the_layers_problem_is_the_servers_answer() {
    // Goal: only the key-expired problem stops with KeyExpired; an application's own 410
    // (a resource deleted) is returned as a response after one attempt, body intact.
    async fn deleted() -> (StatusCode, &'static str) {
        (StatusCode::GONE, "this order was deleted")
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback port 0 can be bound");
    let addr = listener.local_addr().expect("a bound listener has an address");
    let router = axum::Router::new().route("/orders", post(deleted));
    tokio::spawn(async move { axum::serve(listener, router).await.expect("the test server runs") });
    let transport = Faulty::new(transport(), Fault::Nothing);
    let client = IdempotentRetryLayer::new().layer(transport.clone());

    let request = Request::post(format!("http://{addr}/orders")).body(String::new()).expect("valid");
    let response = client.oneshot(request).await.expect("an answer, not an error");
    assert_eq!((response.status(), report(&response).attempts), (StatusCode::GONE, 1));
    assert_eq!(report(&response).expires_at, None, "no Idempotency-Expires, no expiry");
    let body = http_body_util::BodyExt::collect(response.into_body()).await.expect("whole").to_bytes();
    assert_eq!(body, Bytes::from_static(b"this order was deleted"));
    assert_eq!(transport.seen().len(), 1);
}
