//! The real payments server (`idem-server`, what `idem serve` runs) on loopback over real
//! TCP with SQLite in atomic mode, the same app in process for tests on tokio's paused
//! clock, a real hyper client, and a transport wrapper that records every attempt and
//! injects faults (it forwards to the real transport; it replaces nothing).

#![allow(dead_code, unreachable_pub)] // each test uses a different part of the support

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::Router;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use idem_client::BoxError;
use idem_core::{ManualClock, MemoryStore, Principal, Timestamp};
use idem_server::ledger::LIST_LIMIT_MAX;
use idem_server::{AppState, Ledger, MemoryLedger, PageRequest, SeededIds, SqliteLedger, app};
use idem_sqlite::{SqliteOptions, SqliteStore};
use tower::{Service, ServiceExt};

/// The hyper client every TCP test sends through.
pub type Transport = Client<HttpConnector, Full<Bytes>>;

/// A hyper client for loopback.
pub fn transport() -> Transport {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The start of the demo's clock: a whole second, so the HTTP-dates the server states are exact.
fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_unix_ms(1_700_000_000_000)))
}

/// `idem-server`'s app on a SQLite file in a temporary directory, served on 127.0.0.1.
pub struct Server {
    pub addr: SocketAddr,
    /// The server's clock: tests move it to expire records.
    pub clock: Arc<ManualClock>,
    ledger: Arc<SqliteLedger>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(idem_core::Policy::DEFAULT).await
    }

    /// The server with its records kept under `policy` (retention, tombstones).
    pub async fn start_with(policy: idem_core::Policy) -> Server {
        let dir = tempfile::tempdir().expect("a temporary directory can be made");
        let options = SqliteOptions::new(dir.path().join("idem.db"));
        let store = Arc::new(SqliteStore::open(options).await.expect("a new SQLite file opens"));
        let ledger = Arc::new(SqliteLedger::open(store).await.expect("the payments table is created"));
        let clock = clock();
        let state = AppState::new(Arc::clone(&ledger), clock.clone(), Arc::new(SeededIds::new(1)));
        let router = app(state.with_policy(policy)).expect("the test configurations are valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback port 0 can be bound");
        let addr = listener.local_addr().expect("a bound listener has an address");
        tokio::spawn(idem_server::serve(listener, router, std::future::pending()));
        Server { addr, clock, ledger, _dir: dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Payments in the database (all callers).
    pub async fn payment_count(&self) -> u64 {
        self.ledger.payment_count().await.expect("the test database is readable")
    }

    /// The anonymous caller's payments as the API lists them, newest first.
    pub async fn payments(&self) -> Vec<serde_json::Value> {
        payments_of(self.ledger.as_ref()).await
    }
}

/// `idem-server`'s app on the memory ledger, to call in process: no sockets, so tokio's
/// paused clock only moves when every task waits on a timer.
pub struct InProcess {
    pub router: Router,
    ledger: Arc<MemoryLedger>,
}

impl InProcess {
    pub fn new() -> InProcess {
        let ledger = Arc::new(MemoryLedger::new(Arc::new(MemoryStore::default()), 1_000));
        let router = app(AppState::new(Arc::clone(&ledger), clock(), Arc::new(SeededIds::new(1))))
            .expect("the default configuration is valid");
        InProcess { router, ledger }
    }

    /// The anonymous caller's payments as the API lists them.
    pub async fn payments(&self) -> Vec<serde_json::Value> {
        payments_of(self.ledger.as_ref()).await
    }
}

async fn payments_of<L: Ledger>(ledger: &L) -> Vec<serde_json::Value> {
    let page = ledger.payments(&Principal::anonymous(), &PageRequest::first(LIST_LIMIT_MAX)).await;
    let page = page.expect("the test ledger is readable").expect("the first page always exists");
    page.items.iter().map(|payment| serde_json::from_str(&payment.to_json_text()).expect("payments are JSON")).collect()
}

/// What the transport saw of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub key: Option<HeaderValue>,
    pub body: Bytes,
}

/// Which fault the transport injects.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// None: every attempt reaches the server and its response the client.
    Nothing,
    /// Attempts 1, 3, 5, … reach the server, which executes and answers; the answer is
    /// lost on the way back (the client sees a connection error).
    LoseEveryOtherResponse,
    /// The first attempt never gets an answer (and never reaches the server); the rest pass.
    FirstAttemptHangs,
}

/// Forwards to `inner`, recording each attempt and injecting `fault`.
#[derive(Clone)]
pub struct Faulty<S> {
    inner: S,
    fault: Fault,
    seen: Arc<Mutex<Vec<Seen>>>,
    calls: Arc<AtomicU64>,
}

impl<S> Faulty<S> {
    pub fn new(inner: S, fault: Fault) -> Faulty<S> {
        Faulty { inner, fault, seen: Arc::default(), calls: Arc::default() }
    }

    /// Every attempt so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("no test panics while holding it").clone()
    }
}

impl<S, B> Service<Request<Full<Bytes>>> for Faulty<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let body = body_of(&request);
        let key = request.headers().get("idempotency-key").cloned();
        self.seen.lock().expect("no test panics while holding it").push(Seen { key, body });
        let inner = self.inner.clone();
        match self.fault {
            Fault::LoseEveryOtherResponse if call.is_multiple_of(2) => Box::pin(async move {
                let answered = inner.oneshot(request).await.map_err(Into::into)?;
                drop(answered);
                Err(BoxError::from("connection reset: the response was lost (injected fault)"))
            }),
            Fault::FirstAttemptHangs if call == 0 => Box::pin(std::future::pending()),
            _ => Box::pin(async move { inner.oneshot(request).await.map_err(Into::into) }),
        }
    }
}

fn body_of(request: &Request<Full<Bytes>>) -> Bytes {
    // A `Full` body is one frame, already in memory: polling it once with a no-op waker gets it.
    let mut body = request.body().clone();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match http_body::Body::poll_frame(Pin::new(&mut body), &mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

/// A payment body as the demo API takes it.
pub fn payment(amount: &str) -> String {
    format!(r#"{{"amount":{amount},"currency":"USD","destination":"merchant-id-xyz"}}"#)
}
