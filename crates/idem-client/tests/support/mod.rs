//! A real payments server on loopback (idem-http's layer over a `MemoryStore`, an axum
//! handler that counts its executions), a real hyper client, and a transport wrapper that
//! records every attempt and injects faults (it forwards to the real transport; it
//! replaces nothing).

#![allow(dead_code, unreachable_pub)] // each test uses a different part of the support

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use idem_client::BoxError;
use idem_core::MemoryStore;
use idem_http::IdempotencyLayer;
use tower::{Service, ServiceExt};

/// The hyper client every TCP test sends through.
pub type Transport = Client<HttpConnector, Full<Bytes>>;

/// A hyper client for loopback.
pub fn transport() -> Transport {
    Client::builder(TokioExecutor::new()).build_http()
}

/// What the payment handler did: the body of every payment it made, in order.
#[derive(Clone, Default)]
pub struct Ledger {
    payments: Arc<Mutex<Vec<Bytes>>>,
}

impl Ledger {
    /// Payments made (handler executions that got past validation).
    pub fn count(&self) -> usize {
        self.payments.lock().expect("no test panics while holding it").len()
    }

    /// The body answered by each payment, in order.
    pub fn bodies(&self) -> Vec<Bytes> {
        self.payments.lock().expect("no test panics while holding it").clone()
    }
}

/// `POST /payments`: a JSON object is a payment (201, `{"id":"pay_N",...}`); anything
/// else is a 400 problem. The response echoes the request so a test can tell bodies apart.
async fn create_payment(State(ledger): State<Ledger>, body: Bytes) -> axum::response::Response {
    let Ok(serde_json::Value::Object(request)) = serde_json::from_slice::<serde_json::Value>(&body) else {
        let problem = serde_json::json!({"type": "about:blank", "title": "Bad request", "status": 400, "detail": "not a JSON object"});
        return (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/problem+json")], problem.to_string())
            .into_response();
    };
    let mut payments = ledger.payments.lock().expect("no test panics while holding it");
    let answer = serde_json::json!({"id": format!("pay_{}", payments.len() + 1), "request": request}).to_string();
    payments.push(Bytes::from(answer.clone()));
    (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], answer).into_response()
}

/// The server app: `POST /payments` behind idem-http's layer; `body_bytes_max` is the
/// layer's request body limit.
pub fn app(ledger: Ledger, body_bytes_max: usize) -> Router {
    let layer = IdempotencyLayer::builder(Arc::new(MemoryStore::default()))
        .request_body_bytes_max(body_bytes_max)
        .build()
        .expect("a positive body limit is a valid configuration");
    Router::new().route("/payments", post(create_payment).get(|| async { "[]" })).layer(layer).with_state(ledger)
}

/// The app served on 127.0.0.1 over real TCP.
pub struct Server {
    pub addr: SocketAddr,
    pub ledger: Ledger,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with_body_limit(1024 * 1024).await
    }

    pub async fn start_with_body_limit(body_bytes_max: usize) -> Server {
        let ledger = Ledger::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback port 0 can be bound");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let app = app(ledger.clone(), body_bytes_max);
        tokio::spawn(
            async move { axum::serve(listener, app).await.expect("the loopback server runs until the test ends") },
        );
        Server { addr, ledger }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
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

/// A JSON payment body.
pub fn payment(amount: &str) -> String {
    format!(r#"{{"amount":{amount},"currency":"USD","destination":"merchant-id-xyz"}}"#)
}
