//! Test support: the admin service served by hyper on a loopback port, a plain HTTP/1.1
//! client, and records put in a store through its ordinary API.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use idem_admin::{AdminRouter, problems};
use idem_core::{
    ClaimRequest, Decision, Fence, Fenced, Fingerprint, Holder, Key, KeyAdmin, ManualClock, Policy, Principal,
    RecordId, Store, StoredResponse, Timestamp,
};
use tokio::net::{TcpListener, TcpStream};

/// The bearer token the test hook admits.
pub const TOKEN: &str = "Bearer operator-secret";
/// A token the hook knows but refuses (403).
pub const READ_ONLY_TOKEN: &str = "Bearer read-only";

/// How long one request may take before the test fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// When the tests start: 2026-12-07T21:00:00Z.
pub const START: Timestamp = Timestamp::from_unix_ms(1_796_677_200_000);

/// The lease and retention the tests claim with: 10 s and 1 h.
pub fn policy() -> Policy {
    Policy::new(Duration::from_secs(10), Duration::from_secs(3600)).expect("valid policy")
}

/// The admin API over `store` on a free loopback port, with the test hook: [`TOKEN`] is
/// admitted, [`READ_ONLY_TOKEN`] may read but not forget (403), anything else is 401.
pub async fn serve<S: KeyAdmin + 'static>(store: Arc<S>, clock: ManualClock) -> SocketAddr {
    let service = AdminRouter::new(store, |request: &http::request::Parts| {
        match request.headers.get(http::header::AUTHORIZATION).and_then(|value| value.to_str().ok()) {
            Some(TOKEN) => Ok(()),
            Some(READ_ONLY_TOKEN) if request.method != Method::DELETE => Ok(()),
            Some(READ_ONLY_TOKEN) => Err(problems::forbidden("this token may not forget keys")),
            _ => Err(problems::unauthorized("the admin API needs an operator's bearer token")),
        }
    })
    .clock(Arc::new(clock))
    .into_service();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port is free");
    let addr = listener.local_addr().expect("a bound listener has an address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                // A connection that ends early is the client's business; the test sees its answer.
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

/// An answer: status, content type, body as JSON (`Null` if it is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub json: serde_json::Value,
    pub headers: http::HeaderMap,
}

impl Answer {
    /// The problem's slug (the `type` after `#`), for problem+json answers.
    pub fn slug(&self) -> &str {
        assert_eq!(self.content_type, "application/problem+json", "{self:?}");
        let kind = self.json["type"].as_str().expect("a problem has a type");
        kind.rsplit('#').next().unwrap_or(kind)
    }
}

/// Sends `method path` with `token` (if any) and `body`, over a fresh connection.
pub async fn send_with(addr: SocketAddr, method: Method, path: &str, token: Option<&str>, body: &str) -> Answer {
    let work = async {
        let stream = TcpStream::connect(addr).await.expect("the server accepts");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        let mut request = Request::builder().method(method).uri(path).header("host", addr.to_string());
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        let request = request.body(Full::new(Bytes::from(body.to_owned()))).expect("a valid request");
        let response = sender.send_request(request).await.expect("the server answers");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("the body arrives").to_bytes();
        let content_type =
            parts.headers.get("content-type").and_then(|value| value.to_str().ok()).unwrap_or("").to_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Answer { status: parts.status, content_type, json, headers: parts.headers }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work).await.expect("the admin API answers in time")
}

/// `GET path` as the operator.
pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    send_with(addr, Method::GET, path, Some(TOKEN), "").await
}

/// `DELETE path` as the operator.
pub async fn delete(addr: SocketAddr, path: &str) -> Answer {
    send_with(addr, Method::DELETE, path, Some(TOKEN), "").await
}

/// The record id of `key` sent by `caller` ("" = anonymous).
pub fn id(caller: &str, key: &str) -> RecordId {
    let principal = if caller.is_empty() { Principal::anonymous() } else { Principal::new(caller).expect("valid") };
    RecordId::new(principal, Key::from_chars(key).expect("valid key"))
}

/// The fingerprint every test record is made with.
pub fn fingerprint() -> Fingerprint {
    Fingerprint::of("POST", "/payments", b"{\"amount\":1}")
}

/// Claims `id` at `now` with `holder`; answers the claim's fence.
pub async fn claim(store: &impl Store, id: &RecordId, now: Timestamp, holder: Holder) -> Fence {
    let request = ClaimRequest { fingerprint: fingerprint(), earlier: None, holder };
    match store.claim(id, request, now, &policy()).await.expect("the store answers") {
        Decision::Execute(claim) => claim.fence,
        other => panic!("a fresh key executes, got {other:?}"),
    }
}

/// Claims and completes `id` at `now` with a 201 of `body`, under `policy`.
pub async fn complete(store: &impl Store, id: &RecordId, now: Timestamp, policy: &Policy, body: &'static str) {
    let fence = match store.claim(id, &fingerprint(), now, policy).await.expect("the store answers") {
        Decision::Execute(claim) => claim.fence,
        other => panic!("a fresh key executes, got {other:?}"),
    };
    let response = StoredResponse::new(201, body.as_bytes());
    let completed = store.complete(id, fence, response, now, policy).await.expect("the store answers");
    assert_eq!(completed, Fenced::Applied);
}

/// `text` percent-encoded for a path segment (every byte but unreserved characters).
pub fn segment(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}
