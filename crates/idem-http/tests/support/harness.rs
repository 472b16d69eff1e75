//! A real HTTP server on loopback around any service, a real HTTP client for it, and what
//! came back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use idem_http::{Body, Outcome};
use tokio::sync::Notify;
use tower::{Service, ServiceExt};

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
