//! The test app: an axum router whose handlers count their side effects, some held at a
//! gate the test opens, and a server running it behind a configured layer.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::response::IntoResponse;
use axum::routing::post;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Response, StatusCode};
use idem_core::Store;
use idem_http::{ClaimContext, CompletedInTransaction, IdempotencyBuilder, IdempotencyLayer};
use tokio::sync::{Semaphore, mpsc};
use tower::Layer;

use super::harness::Harness;
use super::store::TestStore;

/// The test app's shared state: counters of side effects and a gate that holds handlers.
#[derive(Clone)]
pub struct Counters {
    /// Handler runs started (the side effect happens at the start).
    pub runs: Arc<AtomicU64>,
    /// Gated handler runs that got past the gate.
    pub finished: Arc<AtomicU64>,
    /// Gated handlers wait for a permit here; the test adds permits.
    pub gate: Arc<Semaphore>,
    started_tx: mpsc::UnboundedSender<u64>,
    store: Arc<TestStore>,
}

impl Counters {
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }
}

/// A server running the test app behind a layer built from `configure(builder)`.
pub async fn serve(
    store: &Arc<TestStore>,
    configure: impl FnOnce(IdempotencyBuilder<TestStore>) -> IdempotencyBuilder<TestStore>,
) -> (Harness, Counters, mpsc::UnboundedReceiver<u64>) {
    let layer = configure(IdempotencyLayer::builder(Arc::clone(store))).build().expect("test configurations are valid");
    let (router, counters, started) = app(Arc::clone(store));
    (Harness::start(layer.layer(router)).await, counters, started)
}

/// The app and a receiver that yields each gated run's number when it starts.
pub fn app(store: Arc<TestStore>) -> (Router, Counters, mpsc::UnboundedReceiver<u64>) {
    let (started_tx, started_rx) = mpsc::unbounded_channel();
    let counters = Counters {
        runs: Arc::default(),
        finished: Arc::default(),
        gate: Arc::new(Semaphore::new(0)),
        started_tx,
        store,
    };
    let router = Router::new()
        .route("/payments", post(payment).patch(payment))
        .route("/gated", post(gated))
        .route("/first-run-gated", post(first_run_gated))
        .route("/flaky", post(flaky))
        .route("/first-run-answers/{status}", post(first_run_answers))
        .route("/first-run-fails-gated", post(first_run_fails_gated))
        .route("/headers", post(with_headers))
        .route("/large", post(large))
        .route("/large-gated", post(large_gated))
        .route("/trailers", post(with_trailers))
        .route("/cors-naive", post(cors_naive))
        .route("/atomic", post(atomic))
        .route("/atomic-first-run-gated", post(atomic_first_run_gated))
        .with_state(counters.clone());
    (router, counters, started_rx)
}

/// 201 with the run number and the request body echoed.
async fn payment(State(counters): State<Counters>, body: Bytes) -> impl IntoResponse {
    let run = counters.runs.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::CREATED, format!("run {run}: {}", String::from_utf8_lossy(&body)))
}

/// Every run waits at the gate.
async fn gated(State(counters): State<Counters>) -> impl IntoResponse {
    let run = counters.runs.fetch_add(1, Ordering::SeqCst) + 1;
    let _ = counters.started_tx.send(run);
    counters.gate.acquire().await.expect("the gate is never closed").forget();
    counters.finished.fetch_add(1, Ordering::SeqCst);
    (StatusCode::CREATED, format!("run {run}"))
}

/// Only the first run waits at the gate.
async fn first_run_gated(State(counters): State<Counters>) -> impl IntoResponse {
    let run = counters.runs.fetch_add(1, Ordering::SeqCst) + 1;
    let _ = counters.started_tx.send(run);
    if run == 1 {
        counters.gate.acquire().await.expect("the gate is never closed").forget();
    }
    (StatusCode::CREATED, format!("run {run}"))
}

/// 500 on the first run, 201 afterwards.
async fn flaky(State(counters): State<Counters>) -> impl IntoResponse {
    let run = counters.runs.fetch_add(1, Ordering::SeqCst) + 1;
    let status = if run == 1 { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::CREATED };
    (status, format!("run {run}"))
}

/// The first run answers the status in the path; later runs answer 201.
async fn first_run_answers(State(counters): State<Counters>, Path(status): Path<u16>) -> impl IntoResponse {
    let run = counters.runs.fetch_add(1, Ordering::SeqCst) + 1;
    let status =
        if run == 1 { StatusCode::from_u16(status).expect("tests send valid statuses") } else { StatusCode::CREATED };
    (status, format!("run {run}"))
}

/// The first run waits at the gate and then fails with 500; later runs answer 201.
async fn first_run_fails_gated(State(counters): State<Counters>) -> impl IntoResponse {
    let run = counters.runs.fetch_add(1, Ordering::SeqCst) + 1;
    let _ = counters.started_tx.send(run);
    if run == 1 {
        counters.gate.acquire().await.expect("the gate is never closed").forget();
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("run {run}"));
    }
    (StatusCode::CREATED, format!("run {run}"))
}

/// A response with headers that must and must not be recorded.
async fn with_headers(State(counters): State<Counters>) -> impl IntoResponse {
    let run = counters.runs.fetch_add(1, Ordering::SeqCst) + 1;
    (
        StatusCode::CREATED,
        [
            ("date", "Tue, 01 Jan 2030 00:00:00 GMT"),
            ("set-cookie", "session=secret"),
            ("x-internal-trace", "trace-1"),
            ("location", "/payments/1"),
        ],
        format!("run {run}"),
    )
}

/// A 4 KiB response with a `Location`.
async fn large(State(counters): State<Counters>) -> impl IntoResponse {
    let run = counters.runs.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::CREATED, [("location", format!("/payments/{run}"))], "x".repeat(4096))
}

/// A streamed 4 KiB response (no length known ahead): 2 KiB of `x`, then it waits at the
/// gate, then 2 KiB of `y`.
async fn large_gated(State(counters): State<Counters>) -> Response<axum::body::Body> {
    let run = counters.runs.fetch_add(1, Ordering::SeqCst) + 1;
    let gate = Arc::clone(&counters.gate);
    let chunks = futures::stream::iter([Bytes::from("x".repeat(2048))]).chain(futures::stream::once(async move {
        gate.acquire().await.expect("the gate is never closed").forget();
        Bytes::from("y".repeat(2048))
    }));
    let body = axum::body::Body::from_stream(chunks.map(Ok::<_, Infallible>));
    Response::builder()
        .status(StatusCode::CREATED)
        .header("location", format!("/payments/{run}"))
        .body(body)
        .expect("static response")
}

/// A response whose body ends with trailers (declared in `Trailer`, as HTTP/1.1 needs).
async fn with_trailers(State(counters): State<Counters>) -> Response<axum::body::Body> {
    let run = counters.runs.fetch_add(1, Ordering::SeqCst) + 1;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", http::HeaderValue::from_static("abc"));
    let frames = [
        Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(format!("run {run}")))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
    Response::builder()
        .status(StatusCode::OK)
        .header("trailer", "x-checksum")
        .body(axum::body::Body::new(body))
        .expect("static response")
}

/// A handler that sets CORS headers itself, for the first caller's origin.
async fn cors_naive(State(counters): State<Counters>) -> impl IntoResponse {
    let run = counters.runs.fetch_add(1, Ordering::SeqCst) + 1;
    (
        StatusCode::CREATED,
        [("access-control-allow-origin", "https://a.example"), ("access-control-allow-credentials", "true")],
        format!("run {run}"),
    )
}

/// Completes the record itself, as a handler in atomic mode does inside its transaction.
async fn atomic(
    State(counters): State<Counters>,
    Extension(claim): Extension<ClaimContext>,
) -> Response<axum::body::Body> {
    let run = counters.runs.fetch_add(1, Ordering::SeqCst) + 1;
    complete_in_handler(&counters, &claim, format!("run {run}")).await
}

/// Atomic mode, and the first run waits at the gate before completing.
async fn atomic_first_run_gated(
    State(counters): State<Counters>,
    Extension(claim): Extension<ClaimContext>,
) -> Response<axum::body::Body> {
    let run = counters.runs.fetch_add(1, Ordering::SeqCst) + 1;
    let _ = counters.started_tx.send(run);
    if run == 1 {
        counters.gate.acquire().await.expect("the gate is never closed").forget();
    }
    complete_in_handler(&counters, &claim, format!("run {run}")).await
}

async fn complete_in_handler(counters: &Counters, claim: &ClaimContext, body: String) -> Response<axum::body::Body> {
    let (status, headers, body) = (StatusCode::CREATED, HeaderMap::new(), Bytes::from(body));
    let stored = claim.stored_response(status, &headers, &body);
    let fenced = counters
        .store
        .complete(claim.id(), claim.fence(), stored, claim.now(), claim.policy())
        .await
        .expect("the test store completes unless told to fail");
    let mut response = (status, headers, body).into_response();
    response.extensions_mut().insert(CompletedInTransaction(fenced));
    response
}
