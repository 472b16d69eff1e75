//! A real HTTP server on loopback around the layer, a real HTTP client, a test app whose
//! handlers count their side effects, and a store wrapper that counts calls and injects
//! faults (it delegates to the real `MemoryStore`; it replaces nothing).

#![allow(dead_code, unreachable_pub)] // each test file uses a different part of the support

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::response::IntoResponse;
use axum::routing::post;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use idem_core::{
    Clock, Decision, Fence, Fenced, MemoryStore, Policy, Record, RecordId, Renewal, Store, StoreError, StoredResponse,
    Timestamp,
};
use idem_http::{Body, ClaimContext, CompletedInTransaction, IdempotencyBuilder, IdempotencyLayer, Outcome};
use tokio::sync::{Notify, Semaphore, mpsc};
use tower::{Layer, Service, ServiceExt};

/// A server on 127.0.0.1 serving `service`, a client for it, and what the server saw.
pub struct Harness {
    pub addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    /// The [`Outcome`] of every response the layer produced, in the order they finished.
    pub outcomes: Arc<Mutex<Vec<Outcome>>>,
    /// Signalled when the server drops a response future before it finished (client gone).
    pub dropped: Arc<Notify>,
}

impl Harness {
    pub async fn start<S>(service: S) -> Harness
    where
        S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback port 0 can be bound");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let dropped = Arc::new(Notify::new());
        let (outcomes_seen, dropped_seen) = (Arc::clone(&outcomes), Arc::clone(&dropped));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (service, outcomes, dropped) =
                    (service.clone(), Arc::clone(&outcomes_seen), Arc::clone(&dropped_seen));
                let handler = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let future = service.clone().oneshot(request);
                    let (outcomes, dropped) = (Arc::clone(&outcomes), Arc::clone(&dropped));
                    async move {
                        let probe = DropProbe(Some(dropped));
                        let response = future.await;
                        probe.disarm();
                        // A response without an outcome did not come from the layer (a CORS
                        // preflight answered by a layer outside it); tests compare the list.
                        if let Ok(Some(outcome)) = response.as_ref().map(|r| r.extensions().get::<Outcome>()) {
                            outcomes.lock().expect("no test panics while holding it").push(*outcome);
                        }
                        response
                    }
                });
                tokio::spawn(async move {
                    // A connection error (client gone) ends this connection only.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), handler)
                        .await;
                });
            }
        });
        let client = Client::builder(TokioExecutor::new()).build_http();
        Harness { addr, client, outcomes, dropped }
    }

    /// A request to this server; `keys` are sent as `Idempotency-Key` headers, in order.
    pub fn request(&self, method: &str, path: &str, keys: &[&[u8]]) -> http::request::Builder {
        let mut builder = Request::builder().method(method).uri(format!("http://{}{path}", self.addr));
        for key in keys {
            builder = builder.header(
                "idempotency-key",
                http::HeaderValue::from_bytes(key).expect("test keys are valid header bytes"),
            );
        }
        builder
    }

    pub async fn send(&self, builder: http::request::Builder, body: &str) -> Reply {
        let request =
            builder.body(Full::new(Bytes::copy_from_slice(body.as_bytes()))).expect("test requests are valid");
        let response = self.client.request(request).await.expect("the loopback server answers");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("the loopback server sends whole bodies").to_bytes();
        Reply { status: parts.status, headers: parts.headers, body }
    }

    /// Sends the request and returns as soon as the response head is in, body unread.
    pub async fn send_head(&self, builder: http::request::Builder, body: &str) -> Response<Incoming> {
        let request =
            builder.body(Full::new(Bytes::copy_from_slice(body.as_bytes()))).expect("test requests are valid");
        self.client.request(request).await.expect("the loopback server answers")
    }

    /// POST `body` to `path` with one key.
    pub async fn post(&self, path: &str, key: &str, body: &str) -> Reply {
        self.send(self.request("POST", path, &[key.as_bytes()]), body).await
    }

    pub fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes.lock().expect("no test panics while holding it").clone()
    }
}

struct DropProbe(Option<Arc<Notify>>);

impl DropProbe {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for DropProbe {
    fn drop(&mut self) {
        if let Some(dropped) = self.0.take() {
            dropped.notify_one();
        }
    }
}

/// The type URI of the layer's problem `slug`, under the default base.
pub fn problem_type(slug: &str) -> String {
    format!("{}{slug}", idem_http::problem::PROBLEM_TYPE_BASE)
}

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().expect("test headers are ASCII"))
    }

    pub fn is_replay(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("test bodies are UTF-8")
    }

    /// The problem+json body, after checking the media type and the four members.
    pub fn problem(&self) -> serde_json::Value {
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self:?}");
        let problem: serde_json::Value = serde_json::from_slice(&self.body).expect("problem bodies are JSON");
        assert_eq!(problem["status"], self.status.as_u16(), "{problem}");
        for member in ["type", "title", "detail"] {
            assert!(problem[member].as_str().is_some_and(|text| !text.is_empty()), "{member} missing in {problem}");
        }
        problem
    }
}

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

/// The real `MemoryStore`, with call counters and switches that make calls fail.
#[derive(Default)]
pub struct TestStore {
    pub memory: MemoryStore,
    pub claims: AtomicU64,
    pub completes: AtomicU64,
    /// When each completion was asked for, on tokio's clock (paused in tests that read it).
    pub complete_times: Mutex<Vec<tokio::time::Instant>>,
    /// Renewals asked for, failed ones included.
    pub renewals: AtomicU64,
    /// Renewals the memory store answered `Renewed`.
    pub renewed: AtomicU64,
    pub fail_claims: AtomicBool,
    pub fail_completes: AtomicBool,
    /// Renewals fail as if the store were unreachable (they never reach the memory store).
    pub fail_renewals: AtomicBool,
}

impl TestStore {
    fn injected(retry_after_s: u64) -> StoreError {
        StoreError::Unavailable {
            source: "injected fault".into(),
            retry_after: Some(Duration::from_secs(retry_after_s)),
        }
    }

    pub async fn record(&self, id: &RecordId) -> Option<Record> {
        self.memory.get(id).await.expect("the memory store is always reachable")
    }
}

impl Store for TestStore {
    async fn claim(
        &self,
        id: &RecordId,
        request: impl Into<idem_core::ClaimRequest> + Send,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        let request = request.into();
        self.claims.fetch_add(1, Ordering::SeqCst);
        if self.fail_claims.load(Ordering::SeqCst) {
            return Err(Self::injected(7));
        }
        self.memory.claim(id, request, now, policy).await
    }

    async fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        self.completes.fetch_add(1, Ordering::SeqCst);
        self.complete_times.lock().expect("not poisoned").push(tokio::time::Instant::now());
        if self.fail_completes.load(Ordering::SeqCst) {
            return Err(Self::injected(1));
        }
        self.memory.complete(id, fence, response, now, policy).await
    }

    async fn release(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        self.memory.release(id, fence).await
    }

    async fn renew(&self, id: &RecordId, fence: Fence, now: Timestamp, policy: &Policy) -> Result<Renewal, StoreError> {
        self.renewals.fetch_add(1, Ordering::SeqCst);
        if self.fail_renewals.load(Ordering::SeqCst) {
            return Err(Self::injected(1));
        }
        let renewal = self.memory.renew(id, fence, now, policy).await?;
        if matches!(renewal, Renewal::Renewed { .. }) {
            self.renewed.fetch_add(1, Ordering::SeqCst);
        }
        Ok(renewal)
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        self.memory.get(id).await
    }

    async fn purge_expired(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        self.memory.purge_expired(now, batch_max).await
    }

    async fn count_replay(&self, id: &RecordId, now: Timestamp) -> Result<bool, StoreError> {
        self.memory.count_replay(id, now).await
    }
}

/// A clock that reads tokio's clock, so that paused time moves the layer's `now` and its
/// renewal ticks together. Create it inside the runtime.
#[derive(Clone, Debug)]
pub struct TokioClock {
    start: tokio::time::Instant,
    base: Timestamp,
}

impl TokioClock {
    pub fn new(base: Timestamp) -> TokioClock {
        TokioClock { start: tokio::time::Instant::now(), base }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.base.saturating_add(self.start.elapsed())
    }
}

/// The record id of `key` sent without credentials.
pub fn anonymous(key: &str) -> RecordId {
    RecordId::new(idem_core::Principal::anonymous(), idem_core::Key::try_from(key).expect("test keys are valid"))
}
