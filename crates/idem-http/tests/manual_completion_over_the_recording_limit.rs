//! The manual atomic path (`ClaimContext::stored_response`, then the handler's own
//! completion) keeps the recording limit as the layer does: a response longer than
//! `response_body_bytes_max` reaches the first client whole, the handler runs once, and a
//! retry gets the same `response-not-kept` problem the layer records in separate mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use idem_core::{MemoryStore, Store};
use idem_http::{ClaimContext, CompletedInTransaction, IdempotencyLayer};
use tower::ServiceExt;

/// The layer's recording limit in these tests.
const LIMIT: usize = 64;

/// What the handler shares: the store it completes in, its runs, its body's length, and
/// whether it completes the record itself (the manual path) or leaves it to the layer.
#[derive(Clone)]
struct Handler {
    store: Arc<MemoryStore>,
    runs: Arc<AtomicU64>,
    len: usize,
    manual: bool,
}

/// A 201 with a `Location` and a body of `len` bytes; completed in the handler (as in a
/// transaction with its writes) when `manual`, else by the layer.
async fn create(State(handler): State<Handler>, Extension(claim): Extension<ClaimContext>) -> Response {
    handler.runs.fetch_add(1, Ordering::SeqCst);
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, HeaderValue::from_static("/reports/1"));
    // Named here, so the stored headers are the ones answered (axum would add its own).
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    let (status, body) = (StatusCode::CREATED, Bytes::from(vec![b'r'; handler.len]));
    if !handler.manual {
        return (status, headers, body).into_response();
    }
    let stored = claim.stored_response(status, &headers, &body);
    let fenced = handler
        .store
        .complete(claim.id(), claim.fence(), stored, claim.now(), claim.policy())
        .await
        .expect("the memory store is always reachable");
    let mut response = (status, headers, body).into_response();
    response.extensions_mut().insert(CompletedInTransaction(fenced));
    response
}

/// An answer as a client compares it: status, headers but the replay marker (by name),
/// body.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: StatusCode,
    replayed: bool,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// Sends one keyed request twice to a layer recording up to [`LIMIT`] bytes: the two
/// answers and the handler's runs.
async fn twice(len: usize, manual: bool) -> (Answer, Answer, u64) {
    let store = Arc::new(MemoryStore::default());
    let runs = Arc::new(AtomicU64::new(0));
    let layer = IdempotencyLayer::builder(Arc::clone(&store))
        .response_body_bytes_max(LIMIT)
        .build()
        .expect("a valid configuration");
    let handler = Handler { store, runs: Arc::clone(&runs), len, manual };
    let app = Router::new().route("/reports", post(create)).layer(layer).with_state(handler);
    let mut answers = Vec::new();
    for _ in 0..2 {
        let request = http::Request::post("/reports").header("idempotency-key", "k1").body(Body::empty());
        let response = app.clone().oneshot(request.expect("a valid request")).await.expect("the router answers");
        let (head, body) = response.into_parts();
        let replayed = head.headers.get("idempotent-replayed").is_some_and(|value| value == "true");
        let mut headers: Vec<(String, String)> = head
            .headers
            .iter()
            .filter(|(name, _)| *name != "idempotent-replayed")
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        // Sorted by name (stable: a repeated header keeps its order); how hyper orders
        // distinct names is not what these tests are about.
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        let body = body.collect().await.expect("a whole body").to_bytes();
        answers.push(Answer { status: head.status, replayed, headers, body });
    }
    let retry = answers.pop().expect("two answers");
    let first = answers.pop().expect("two answers");
    (first, retry, runs.load(Ordering::SeqCst))
}

fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer.headers.iter().find(|(header, _)| header == name).map(|(_, value)| value.as_str())
}

#[tokio::test]
async fn a_manual_completion_over_the_limit_answers_whole_once_and_retries_get_response_not_kept() {
    // Goal: SPEC "HTTP behaviour" on the manual atomic path: the first client gets all
    // 1024 bytes; the record holds a response-not-kept problem (not the body), so the
    // retry is that problem, with the original status and Location, and the handler runs
    // once. Before the fix `stored_response` stored the whole body and the retry replayed it.
    let (first, retry, runs) = twice(1024, true).await;

    assert_eq!(runs, 1, "the record is completed: the key never runs again");
    assert_eq!((first.status, first.replayed), (StatusCode::CREATED, false));
    assert_eq!(first.body, vec![b'r'; 1024], "the first client gets every byte");
    assert_eq!(header(&first, "location"), Some("/reports/1"));
    assert_eq!((retry.status, retry.replayed), (StatusCode::CREATED, true), "the original status, as a replay");
    assert_eq!(header(&retry, "location"), Some("/reports/1"));
    assert_eq!(header(&retry, "content-type"), Some("application/problem+json"));
    let problem: serde_json::Value = serde_json::from_slice(&retry.body).expect("a problem+json body");
    assert!(
        problem["type"].as_str().is_some_and(|kind| kind.ends_with("#response-not-kept")),
        "the retry says the response was not kept: {problem}"
    );
    assert_eq!(problem["status"], 201);
}

#[tokio::test]
async fn a_retry_after_an_unkept_response_is_the_same_whoever_completed_the_record() {
    // Goal: `stored_response` stores what the layer itself would (G2 across modes): the
    // retry after a manual completion over the limit equals, header for header and byte for
    // byte, the retry after the layer completed the same response in separate mode.
    let (manual_first, manual_retry, _) = twice(1024, true).await;
    let (layer_first, layer_retry, layer_runs) = twice(1024, false).await;

    assert_eq!(layer_runs, 1);
    assert_eq!(manual_first, layer_first, "the first answer is the handler's response in both modes");
    assert_eq!(manual_retry, layer_retry, "the retries are the same response-not-kept problem");
}

#[tokio::test]
async fn a_manual_completion_of_exactly_the_limit_is_stored_and_replayed_whole() {
    // Goal: the limit is the longest body stored, as for the layer: 64 bytes are replayed
    // as answered (one byte more is not kept, as the test above shows for 1024).
    let (first, retry, runs) = twice(LIMIT, true).await;
    let (over_first, over_retry, _) = twice(LIMIT + 1, true).await;

    assert_eq!(runs, 1);
    assert!(retry.replayed);
    assert_eq!((retry.status, &retry.headers, &retry.body), (first.status, &first.headers, &first.body));
    assert_eq!(over_first.body.len(), LIMIT + 1);
    assert_ne!(over_retry.body, over_first.body, "one byte over the limit is not kept");
}
