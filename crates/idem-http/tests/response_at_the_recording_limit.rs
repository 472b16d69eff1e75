//! A handler's response whose declared length is exactly the recording limit is recorded
//! and replayed; one byte more reaches the first client whole but is not kept, so a retry
//! gets the `response-not-kept` problem (and the handler still runs once).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::post;
use http::StatusCode;
use http_body_util::BodyExt;
use idem_core::MemoryStore;
use idem_http::IdempotencyLayer;
use tower::ServiceExt;

/// A handler that answers a body of `len` bytes with its length declared (a `Vec<u8>`
/// body has an exact size hint), counting its runs.
async fn sized(State((runs, len)): State<(Arc<AtomicU64>, usize)>) -> Vec<u8> {
    runs.fetch_add(1, Ordering::SeqCst);
    vec![b'r'; len]
}

/// Sends the same keyed request twice to a layer recording bodies up to 8 bytes, with a
/// handler answering `len` bytes: the handler's runs, and the second answer's body.
async fn twice_with_body_of(len: usize) -> (u64, String) {
    let runs = Arc::new(AtomicU64::new(0));
    let layer = IdempotencyLayer::builder(Arc::new(MemoryStore::default()))
        .response_body_bytes_max(8)
        .build()
        .expect("a valid configuration");
    let app = Router::new().route("/reports", post(sized)).layer(layer).with_state((Arc::clone(&runs), len));
    let mut answers = Vec::new();
    for _ in 0..2 {
        let request = http::Request::post("/reports").header("idempotency-key", "\"k1\"").body(Body::empty());
        let response = app.clone().oneshot(request.expect("a valid request")).await.expect("the router answers");
        assert_eq!(response.status(), StatusCode::OK, "the handler's status, then the same on the retry");
        let body = response.into_body().collect().await.expect("a whole body").to_bytes();
        answers.push(String::from_utf8_lossy(&body).into_owned());
    }
    assert_eq!(answers[0], "r".repeat(len), "the first client gets the whole body");
    (runs.load(Ordering::SeqCst), answers.remove(1))
}

#[tokio::test]
async fn a_response_of_exactly_the_recording_limit_is_replayed_and_one_byte_more_is_not_kept() {
    // Goal: `response_body_bytes_max` is the largest body recorded, not the first refused:
    // 8 declared bytes with a limit of 8 are recorded (the retry replays them); 9 are not
    // kept (the retry gets the response-not-kept problem). Either way the handler runs once.
    assert_eq!(twice_with_body_of(8).await, (1, "r".repeat(8)), "8 bytes: recorded and replayed");
    let (runs, retry) = twice_with_body_of(9).await;
    assert_eq!(runs, 1, "the record is completed either way");
    assert!(retry.contains("response-not-kept"), "9 bytes: not kept, the retry gets the problem: {retry}");
}
