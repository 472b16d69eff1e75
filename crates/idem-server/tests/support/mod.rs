//! Test support: a real server on a loopback port and a plain HTTP/1.1 client.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use idem_core::{Clock, ManualClock, MemoryStore, Policy, SystemClock, Timestamp};
use idem_http::ConflictPolicy;
use idem_server::{
    AppState, BeforeWriteHook, Drained, MemoryLedger, RequestLimits, SeededIds, ServerLimits, SqliteLedger, app,
};
use idem_sqlite::{SqliteOptions, SqliteStore};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The body the seed article posts.
pub const PAYMENT: &str = r#"{"amount": 100.00, "currency": "USD", "destination": "merchant-id-xyz"}"#;

/// How a test wants its server.
#[derive(Clone, Default)]
pub struct Setup {
    pub conflict: Option<ConflictPolicy>,
    pub clock: Option<ManualClock>,
    pub hook: Option<BeforeWriteHook>,
    pub seed: u64,
    /// Payments plus users the memory ledger holds (default 10,000).
    pub rows_max: Option<usize>,
    /// Lease and retention (default [`Policy::DEFAULT`]).
    pub policy: Option<Policy>,
    /// Connection limits (default [`ServerLimits::DEFAULT`]).
    pub server_limits: Option<ServerLimits>,
    /// Body limits (default [`RequestLimits::DEFAULT`]).
    pub request_limits: Option<RequestLimits>,
    /// Per-principal new-key rate (default: none).
    pub fairness: Option<idem_server::FairnessLimits>,
}

/// A running server; stops (gracefully) when dropped or on `stop`.
pub struct Server {
    pub addr: SocketAddr,
    pub ledger: Option<Arc<SqliteLedger>>,
    pub store: Option<Arc<SqliteStore>>,
    /// The app's readiness latch (what `/healthz` answers from).
    pub readiness: Arc<idem_server::Readiness>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<Drained>>>,
}

impl Server {
    /// A server on the SQLite file `path` (created if missing).
    pub async fn sqlite(path: &Path, setup: Setup) -> Server {
        let store = Arc::new(SqliteStore::open(SqliteOptions::new(path)).await.expect("a temp file opens"));
        let ledger = Arc::new(SqliteLedger::open(Arc::clone(&store)).await.expect("tables are created"));
        let mut server = Server::start(AppState::new(Arc::clone(&ledger), clock(&setup), ids(&setup)), setup).await;
        server.ledger = Some(ledger);
        server.store = Some(store);
        server
    }

    /// A server on the memory store.
    pub async fn memory(setup: Setup) -> Server {
        let ledger = Arc::new(MemoryLedger::new(Arc::new(MemoryStore::default()), setup.rows_max.unwrap_or(10_000)));
        Server::start(AppState::new(ledger, clock(&setup), ids(&setup)), setup).await
    }

    /// A server on a state built by the test.
    pub async fn start<L: idem_server::Ledger>(mut state: AppState<L>, setup: Setup) -> Server {
        if let Some(conflict) = setup.conflict {
            state = state.with_conflict(conflict);
        }
        if let Some(hook) = setup.hook {
            state = state.with_before_write_hook(hook);
        }
        state = state.with_policy(setup.policy.unwrap_or(Policy::DEFAULT));
        if let Some(limits) = setup.request_limits {
            state = state.with_request_limits(limits);
        }
        if let Some(fairness) = setup.fairness {
            state = state.with_fairness(fairness);
        }
        let readiness = Arc::clone(state.readiness());
        let router = app(state).expect("test configurations are valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback has free ports");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let limits = setup.server_limits.unwrap_or(ServerLimits::DEFAULT);
        let task = tokio::spawn(idem_server::serve_with_limits(listener, router, limits, async move {
            let _ = stop.await;
        }));
        Server { addr, ledger: None, store: None, readiness, shutdown: Some(shutdown), task: Some(task) }
    }

    /// Stops accepting, finishes requests in progress, closes the store.
    pub async fn stop(self) {
        assert_eq!(self.drain().await, Drained::Clean, "no request was in progress at the end of the test");
    }

    /// Stops accepting, drains within the drain deadline, closes the store; says how the
    /// drain ended.
    pub async fn drain(mut self) -> Drained {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let task = self.task.take().expect("a server runs until drained");
        let drained = task.await.expect("the server task does not panic").expect("the server stops cleanly");
        if let Some(store) = self.store.take() {
            store.close().await;
        }
        drained
    }

    /// Payments in the file, over every principal.
    pub async fn payment_count(&self) -> u64 {
        self.ledger.as_ref().expect("a SQLite server").payment_count().await.expect("the file is readable")
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: &str) -> Reply {
        let headers: Vec<(&str, &[u8])> = key.map(|key| ("idempotency-key", key.as_bytes())).into_iter().collect();
        send(self.addr, Method::POST, path, &headers, body).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let bearer = token.map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &[u8])> = bearer.iter().map(|b| ("authorization", b.as_bytes())).collect();
        send(self.addr, Method::GET, path, &headers, "").await
    }
}

fn clock(setup: &Setup) -> Arc<dyn Clock> {
    match &setup.clock {
        Some(clock) => Arc::new(clock.clone()),
        None => Arc::new(SystemClock),
    }
}

fn ids(setup: &Setup) -> Arc<SeededIds> {
    Arc::new(SeededIds::new(setup.seed))
}

/// A clock for tests that move time by hand.
pub fn manual_clock() -> ManualClock {
    ManualClock::new(Timestamp::from_unix_ms(1_700_000_000_000))
}

/// One response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| panic!("not JSON ({error}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().expect("test servers send ASCII headers"))
    }

    pub fn is_replay(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }

    /// Every header but those that describe one delivery (`date`) or mark a replay.
    pub fn lasting_headers(&self) -> Vec<(String, Vec<u8>)> {
        let mut headers: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .filter(|(name, _)| *name != "date" && *name != "idempotent-replayed")
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        headers.sort();
        headers
    }
}

/// Sends one request on a fresh connection and reads the whole answer.
pub async fn send(addr: SocketAddr, method: Method, path: &str, headers: &[(&str, &[u8])], body: &str) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("the test server is listening");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let mut request = Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (name, value) in headers {
        let name = HeaderName::try_from(*name).expect("test header names are valid");
        request = request.header(name, HeaderValue::from_bytes(value).expect("test header values are valid"));
    }
    let typed = headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
    if !body.is_empty() && !typed {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(Full::new(Bytes::copy_from_slice(body.as_bytes()))).expect("test requests are valid");
    let response = sender.send_request(request).await.expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("the body arrives whole").to_bytes();
    Reply { status, headers, body }
}

/// POST with a key and a bearer token.
pub async fn post_as(addr: SocketAddr, token: &str, path: &str, key: &str, body: &str) -> Reply {
    let bearer = format!("Bearer {token}");
    send(addr, Method::POST, path, &[("idempotency-key", key.as_bytes()), ("authorization", bearer.as_bytes())], body)
        .await
}
