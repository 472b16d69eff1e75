//! A replay carries a header the handler sent several times with every value, in order
//! (G2), over real HTTP on loopback with the real `MemoryStore` behind the layer.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::StatusCode;
use idem_http::IdempotencyLayer;
use support::{Harness, Reply, TestStore};
use tower::Layer;

/// 201 with `Link` twice and `Vary` twice, and the run number in the body.
async fn repeated_headers(State(runs): State<Arc<AtomicU64>>) -> Response {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    let mut response = (StatusCode::CREATED, format!("run {run}")).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        ("link", "</payments/1>; rel=\"self\""),
        ("vary", "authorization"),
        ("link", "</payments/1/refunds>; rel=\"refunds\""),
        ("vary", "accept-encoding"),
    ] {
        headers.append(name, http::HeaderValue::from_static(value));
    }
    response
}

fn values<'a>(reply: &'a Reply, name: &str) -> Vec<&'a str> {
    reply.headers.get_all(name).iter().map(|value| value.to_str().expect("the test app sends ASCII")).collect()
}

#[tokio::test]
async fn a_replay_keeps_every_value_of_a_repeated_header_in_order() {
    // Goal: the first answer and its replay carry the same values of each repeated header,
    // in the order the handler sent them, and the handler ran once.
    let runs = Arc::new(AtomicU64::new(0));
    let router = Router::new().route("/repeated", post(repeated_headers)).with_state(Arc::clone(&runs));
    let layer =
        IdempotencyLayer::builder(Arc::new(TestStore::default())).build().expect("the default configuration is valid");
    let server = Harness::start(layer.layer(router)).await;

    let first = server.post("/repeated", "repeated-1", "{}").await;
    let replay = server.post("/repeated", "repeated-1", "{}").await;

    assert_eq!((first.status, replay.status), (StatusCode::CREATED, StatusCode::CREATED));
    assert!(!first.is_replay() && replay.is_replay());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let links = ["</payments/1>; rel=\"self\"", "</payments/1/refunds>; rel=\"refunds\""];
    assert_eq!(values(&first, "link"), links);
    assert_eq!(values(&replay, "link"), links, "the replay lost a value of a repeated header");
    let varies = ["authorization", "accept-encoding"];
    assert_eq!(values(&replay, "vary"), varies, "the replay lost a value of a repeated header");
    assert_eq!(replay.body, first.body);
}
