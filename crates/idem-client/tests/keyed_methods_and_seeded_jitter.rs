//! Two configuration choices, seen from the inner service: which methods get a key and
//! retries, and the jitter a seed fixes (tests and simulations sweep seeds, so each seed must
//! give its own retry timing).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use idem_client::{IDEMPOTENCY_KEY, IdempotentRetryLayer};
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt, service_fn};

/// What the inner service saw of one attempt: when it came, and whether it carried a key.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    keyed: bool,
}

/// The inner service the tests script.
type Inner = BoxCloneService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;

/// An inner service that answers every request with `status` and records each attempt.
fn recording(status: StatusCode) -> (Inner, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let service = service_fn(move |request: Request<Full<Bytes>>| {
        let keyed = request.headers().contains_key(IDEMPOTENCY_KEY);
        log.lock().expect("no test thread panics holding it").push(Seen { at: Instant::now(), keyed });
        async move { Ok::<_, Infallible>(Response::builder().status(status).body(Full::default()).expect("valid")) }
    });
    (BoxCloneService::new(service), seen)
}

fn request(method: Method) -> Request<Full<Bytes>> {
    Request::builder().method(method).uri("http://server.invalid/things/1").body(Full::default()).expect("valid")
}

#[tokio::test(start_paused = true)]
async fn the_methods_chosen_get_a_key_and_retries_and_others_pass_through() {
    // Goal: `methods([PUT, PUT])` keys and retries PUT (named twice, kept once), and a POST,
    // no longer chosen, passes through: one attempt, no key.
    let layer = IdempotentRetryLayer::builder()
        .methods([Method::PUT, Method::PUT])
        .attempts_max(3)
        .seed(1)
        .build()
        .expect("a valid configuration");

    let (inner, seen) = recording(StatusCode::SERVICE_UNAVAILABLE);
    let put = layer.layer(inner).oneshot(request(Method::PUT)).await;
    assert!(put.is_err(), "three 503s exhaust the attempts");
    let seen = seen.lock().expect("the test is done with the service").clone();
    assert_eq!(seen.len(), 3, "PUT is retried: {seen:?}");
    assert!(seen.iter().all(|attempt| attempt.keyed), "every PUT attempt carries the key: {seen:?}");

    let (inner, seen) = recording(StatusCode::SERVICE_UNAVAILABLE);
    let post = layer.layer(inner).oneshot(request(Method::POST)).await.expect("a pass-through answers");
    assert_eq!(post.status(), StatusCode::SERVICE_UNAVAILABLE);
    let seen = seen.lock().expect("the test is done with the service").clone();
    assert_eq!(seen.len(), 1, "POST passes through: {seen:?}");
    assert!(!seen[0].keyed, "a pass-through gets no key");
}

/// The waits between the four attempts of a POST answered 503 each time, with `seed`.
async fn waits_with_seed(seed: u64) -> Vec<Duration> {
    let layer = IdempotentRetryLayer::builder()
        .backoff(Duration::from_secs(1), Duration::from_secs(60))
        .attempts_max(4)
        .deadline(Duration::from_secs(3600))
        .seed(seed)
        .build()
        .expect("a valid configuration");
    let (inner, seen) = recording(StatusCode::SERVICE_UNAVAILABLE);
    let result = layer.layer(inner).oneshot(request(Method::POST)).await;
    assert!(result.is_err(), "four 503s exhaust the attempts");
    let seen = seen.lock().expect("the test is done with the service").clone();
    seen.windows(2).map(|pair| pair[1].at - pair[0].at).collect()
}

#[tokio::test(start_paused = true)]
async fn each_seed_gives_its_own_jitter_and_the_same_seed_the_same() {
    // Goal: seeds 0, 1 and 2 (which differ in their low bits only) give three different
    // retry schedules, and a seed gives the same schedule twice. A jitter seed derived by
    // masking the seed (not mixing it) would give two of them the same waits.
    let schedules = [waits_with_seed(0).await, waits_with_seed(1).await, waits_with_seed(2).await];
    eprintln!("waits for seeds 0, 1, 2: {schedules:?}");
    for waits in &schedules {
        assert_eq!(waits.len(), 3);
    }
    assert_ne!(schedules[0], schedules[1]);
    assert_ne!(schedules[0], schedules[2]);
    assert_ne!(schedules[1], schedules[2]);
    assert_eq!(waits_with_seed(1).await, schedules[1]);
}
