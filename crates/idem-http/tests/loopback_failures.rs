//! The layer over real HTTP on loopback: what is released and what is recorded when a
//! handler fails (5xx, "try later" statuses, a broken body, a panic) or the store does, and
//! a handler that runs on to its end after its client went away.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use idem_core::RecordState;
use idem_http::{IdempotencyLayer, Outcome};
use support::{Harness, TestStore, anonymous, serve};
use tower::Layer;

#[tokio::test]
async fn a_server_error_releases_the_claim_so_a_retry_executes() {
    // Goal: a 5xx is not recorded; the retry runs the handler again, and its 201 is recorded.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b).await;

    let failed = server.post("/flaky", "k", "{}").await;
    assert_eq!(failed.status, 500);
    assert!(store.record(&anonymous("k")).await.is_none(), "the claim is released");
    let retried = server.post("/flaky", "k", "{}").await;
    let replayed = server.post("/flaky", "k", "{}").await;

    assert_eq!((retried.status, retried.text(), retried.is_replay()), (http::StatusCode::CREATED, "run 2", false));
    assert!(replayed.is_replay());
    assert_eq!(replayed.text(), "run 2");
    assert_eq!(counters.runs(), 2);
    assert_eq!(server.outcomes(), [Outcome::Released, Outcome::Executed, Outcome::Replayed]);
}

#[tokio::test]
async fn try_later_statuses_release_the_claim_so_a_retry_executes() {
    // Goal: SPEC: 408, 425 and 429 are "try again later" answers: like a 5xx they release
    // the claim instead of being recorded, so the retry the client was told to make runs.
    for status in [408_u16, 425, 429] {
        let store = Arc::new(TestStore::default());
        let (server, counters, _) = serve(&store, |b| b).await;
        let path = format!("/first-run-answers/{status}");

        let first = server.post(&path, "k", "{}").await;
        assert_eq!(first.status.as_u16(), status);
        assert!(store.record(&anonymous("k")).await.is_none(), "{status}: the claim is released");
        let retried = server.post(&path, "k", "{}").await;

        assert_eq!((retried.status, retried.text(), retried.is_replay()), (http::StatusCode::CREATED, "run 2", false));
        assert_eq!(counters.runs(), 2, "{status}");
        assert_eq!(server.outcomes(), [Outcome::Released, Outcome::Executed], "{status}");
    }
}

#[tokio::test]
async fn try_later_statuses_are_recorded_when_configured() {
    // Goal: with store_try_later, a 429 is recorded and replayed like any response, while a
    // 5xx still releases (the two switches are independent).
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b.store_try_later(true)).await;
    let first = server.post("/first-run-answers/429", "k", "{}").await;
    let retried = server.post("/first-run-answers/429", "k", "{}").await;
    let failed = server.post("/first-run-answers/503", "other", "{}").await;

    assert_eq!(first.status, http::StatusCode::TOO_MANY_REQUESTS);
    assert!(retried.is_replay());
    assert_eq!((retried.status, retried.text()), (http::StatusCode::TOO_MANY_REQUESTS, "run 1"));
    assert_eq!(failed.status, http::StatusCode::CREATED, "runs count per server: the 503 path's run is run 2");
    assert_eq!(counters.runs(), 2);
    assert_eq!(server.outcomes(), [Outcome::Executed, Outcome::Replayed, Outcome::Executed]);
}

#[tokio::test]
async fn the_try_later_set_is_configurable() {
    // Goal: with try_later_statuses([409]), a handler's 409 releases the claim and its retry
    // executes, while 429 (no longer in the set) is recorded and replayed; a non-4xx status
    // in the set is refused when the layer is built.
    // (The handler answers the status asked for on its first run only, so one server each.)
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b.try_later_statuses([http::StatusCode::CONFLICT])).await;
    let first = server.post("/first-run-answers/409", "k409", "{}").await;
    assert_eq!(first.status, http::StatusCode::CONFLICT);
    assert!(store.record(&anonymous("k409")).await.is_none(), "409 released the claim");
    let retried = server.post("/first-run-answers/409", "k409", "{}").await;
    assert_eq!((retried.status, retried.is_replay()), (http::StatusCode::CREATED, false));
    assert_eq!(counters.runs(), 2);

    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b.try_later_statuses([http::StatusCode::CONFLICT])).await;
    let limited = server.post("/first-run-answers/429", "k429", "{}").await;
    assert_eq!(limited.status, http::StatusCode::TOO_MANY_REQUESTS);
    let again = server.post("/first-run-answers/429", "k429", "{}").await;
    assert!(again.is_replay() && again.status == http::StatusCode::TOO_MANY_REQUESTS, "429 is recorded now");
    assert_eq!(counters.runs(), 1);

    let refused = IdempotencyLayer::builder(Arc::new(idem_core::MemoryStore::default()))
        .try_later_statuses([http::StatusCode::SERVICE_UNAVAILABLE])
        .build();
    assert!(matches!(refused, Err(idem_http::ConfigError::TryLaterNotClientError { status: 503 })));
}

#[tokio::test]
async fn server_errors_are_recorded_when_configured() {
    // Goal: with store_server_errors, a 5xx is recorded and replayed like any response.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b.store_server_errors(true)).await;
    let failed = server.post("/flaky", "k", "{}").await;
    let retried = server.post("/flaky", "k", "{}").await;
    assert_eq!(
        (failed.status, retried.status),
        (http::StatusCode::INTERNAL_SERVER_ERROR, http::StatusCode::INTERNAL_SERVER_ERROR)
    );
    assert!(retried.is_replay());
    assert_eq!(counters.runs(), 1);
}

/// A response body that fails after its head: one chunk, then an error.
struct BreaksAfterHead {
    sent: bool,
}

impl http_body::Body for BreaksAfterHead {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.sent {
            return std::task::Poll::Ready(Some(Err(std::io::Error::other("the body broke"))));
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(b"{\"payment\"")))))
    }
}

#[tokio::test]
async fn a_body_that_breaks_after_a_success_head_is_recorded_as_a_failure_not_released() {
    // Goal: G1 — a 201 head means the side effect may have happened, so a body that then
    // fails is recorded as a problem (not released): the retry replays it, nothing runs twice.
    let store = Arc::new(TestStore::default());
    let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = Arc::clone(&runs);
    let service = tower::service_fn(move |_request: http::Request<idem_http::Body>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let response = http::Response::builder().status(201).body(BreaksAfterHead { sent: false });
            Ok::<_, std::convert::Infallible>(response.expect("static response"))
        }
    });
    let server = Harness::start(IdempotencyLayer::new(Arc::clone(&store)).layer(service)).await;

    let first = server.post("/anything", "broken", "{}").await;
    let retry = server.post("/anything", "broken", "{}").await;

    assert_eq!(first.status, http::StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(first.problem()["type"], support::problem_type("handler-failed"));
    assert!(retry.is_replay(), "the failure was recorded, so the retry replays it");
    assert_eq!((retry.status, retry.text()), (first.status, first.text()));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran once");
}

#[tokio::test]
async fn a_panicking_handler_releases_its_claim() {
    // Goal: a handler that panics (even in `call`, before its future) answers a 500
    // problem and gives its claim back, so the retry runs instead of waiting out the lease.
    let store = Arc::new(TestStore::default());
    let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = Arc::clone(&runs);
    let service = tower::service_fn(move |_request: http::Request<idem_http::Body>| {
        let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(run > 1, "the first call panics on purpose");
        async move {
            let body = http_body_util::Full::new(bytes::Bytes::from(format!("run {run}")));
            Ok::<_, std::convert::Infallible>(http::Response::builder().status(201).body(body).expect("static"))
        }
    });
    let server = Harness::start(IdempotencyLayer::new(Arc::clone(&store)).layer(service)).await;

    let first = server.post("/anything", "panics", "{}").await;
    let retry = server.post("/anything", "panics", "{}").await;

    assert_eq!(first.status, http::StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!((retry.status, retry.text()), (http::StatusCode::CREATED, "run 2"));
    assert!(!retry.is_replay());
}

#[tokio::test]
async fn a_client_disconnect_does_not_cancel_the_handler() {
    // Goal: when the client goes away mid-handler and the server drops the response
    // future, the handler still runs to its end and the record is completed; a retry
    // replays it and the side effect happened once.
    use tokio::io::AsyncWriteExt;
    let store = Arc::new(TestStore::default());
    let (server, counters, mut started) = serve(&store, |b| b).await;

    let mut client = tokio::net::TcpStream::connect(server.addr).await.expect("the server listens");
    let request = "POST /gated HTTP/1.1\r\nhost: test\r\nidempotency-key: gone\r\ncontent-length: 2\r\n\r\n{}";
    client.write_all(request.as_bytes()).await.expect("the server reads");
    assert_eq!(started.recv().await, Some(1));
    drop(client);
    server.dropped.notified().await;
    assert_eq!(counters.finished.load(Ordering::SeqCst), 0, "the handler is still at the gate");

    counters.gate.add_permits(1);
    let id = anonymous("gone");
    for _ in 0..1000 {
        if matches!(store.record(&id).await.map(|record| record.state), Some(RecordState::Completed { .. })) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let retry = server.post("/gated", "gone", "{}").await;

    assert!(retry.is_replay(), "{retry:?}");
    assert_eq!((retry.status, retry.text()), (http::StatusCode::CREATED, "run 1"));
    assert_eq!(counters.runs(), 1);
    assert_eq!(counters.finished.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_draining_server_can_wait_for_a_request_whose_client_went_away() {
    // Goal: the work of a request whose client disconnected runs on the layer's task
    // tracker: after `close`, `wait` does not return while the handler is still running,
    // and returns once it finished and completed its record.
    use tokio::io::AsyncWriteExt;
    let store = Arc::new(TestStore::default());
    let tracker = tokio_util::task::TaskTracker::new();
    let (server, counters, mut started) = serve(&store, |b| b.task_tracker(tracker.clone())).await;

    let mut client = tokio::net::TcpStream::connect(server.addr).await.expect("the server listens");
    let request = "POST /gated HTTP/1.1\r\nhost: test\r\nidempotency-key: gone\r\ncontent-length: 2\r\n\r\n{}";
    client.write_all(request.as_bytes()).await.expect("the server reads");
    assert_eq!(started.recv().await, Some(1));
    drop(client);
    server.dropped.notified().await;
    tracker.close();
    assert_eq!(tracker.len(), 1, "the handed-off request is tracked");
    let early = tokio::time::timeout(Duration::from_millis(100), tracker.wait()).await;
    assert!(early.is_err(), "wait does not return while the handler is held at the gate");

    counters.gate.add_permits(1);
    tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await.expect("wait returns once the work is done");

    assert_eq!(counters.finished.load(Ordering::SeqCst), 1);
    let record = store.record(&anonymous("gone")).await.expect("the record exists");
    assert!(matches!(record.state, RecordState::Completed { .. }), "completed before wait returned: {record:?}");
}

#[tokio::test]
async fn an_unavailable_store_is_503_and_the_handler_never_runs() {
    // Goal: G8: when the store cannot claim, the answer is 503 problem+json with the
    // store's Retry-After, and the handler does not run.
    let store = Arc::new(TestStore::default());
    store.fail_claims.store(true, Ordering::SeqCst);
    let (server, counters, _) = serve(&store, |b| b).await;

    let reply = server.post("/payments", "k", "{}").await;

    assert_eq!(reply.status, 503);
    assert_eq!(reply.problem()["type"], support::problem_type("store-unavailable"));
    assert_eq!(reply.header("retry-after"), Some("7"));
    assert_eq!(counters.runs(), 0);
    assert_eq!(server.outcomes(), [Outcome::StoreFailed]);
}

#[tokio::test]
async fn a_store_failing_at_completion_answers_the_handlers_response_unrecorded() {
    // Goal: when recording fails after the handler ran, the completion is retried a bounded
    // number of times and then the handler's response is answered (the client has its
    // answer and need not retry); the outcome says it is unrecorded.
    let store = Arc::new(TestStore::default());
    store.fail_completes.store(true, Ordering::SeqCst);
    let (server, counters, _) = serve(&store, |b| b).await;

    let reply = server.post("/payments", "k", "{}").await;

    assert_eq!(reply.status, 201);
    assert_eq!(reply.text(), "run 1: {}");
    assert_eq!(store.completes.load(Ordering::SeqCst), 3, "bounded retries");
    assert_eq!(counters.runs(), 1);
    assert_eq!(server.outcomes(), [Outcome::Unrecorded]);
}
