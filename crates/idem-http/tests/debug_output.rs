//! The layer's public types print what a reader of a log or a panic message needs: their
//! name and their settings (the limits, the lease), never nothing. Each `Debug` here is
//! written by hand (the types hold closures, stores and boxed bodies), so each is checked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use http::Request;
use idem_core::MemoryStore;
use idem_http::{Body, ClaimContext, IdempotencyLayer};
use tower::{Layer, Service, ServiceExt};

#[test]
fn a_body_prints_its_name_and_length() {
    let text = format!("{:?}", Body::full(Bytes::from_static(b"abc")));
    assert!(text.starts_with("Body("), "{text}");
    assert!(text.contains('3'), "the exact length of a full body: {text}");
}

#[test]
fn the_builder_and_the_layer_print_their_limits() {
    let builder = IdempotencyLayer::builder(Arc::new(MemoryStore::default()))
        .lease(Duration::from_secs(17))
        .request_body_bytes_max(4321)
        .response_body_bytes_max(8765);
    let text = format!("{builder:?}");
    for expected in ["IdempotencyBuilder", "17", "4321", "8765"] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    let layer = builder.build().expect("a valid configuration");
    let text = format!("{layer:?}");
    for expected in ["IdempotencyLayer", "Config", "4321", "8765"] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
}

#[tokio::test]
async fn the_service_and_its_future_name_themselves() {
    let layer = IdempotencyLayer::builder(Arc::new(MemoryStore::default()))
        .request_body_bytes_max(4321)
        .build()
        .expect("a valid configuration");
    let mut service = layer.layer(tower::service_fn(|_: Request<Body>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Body::full(Bytes::new())))
    }));
    let text = format!("{service:?}");
    assert!(text.starts_with("Idempotency"), "{text}");
    assert!(text.contains("4321"), "its configuration: {text}");
    let ready = ServiceExt::<Request<Body>>::ready(&mut service).await.expect("the service is ready");
    let future = ready.call(Request::post("/").body(Body::full(Bytes::new())).expect("a valid request"));
    assert_eq!(format!("{future:?}"), "ResponseFuture");
}

#[tokio::test]
async fn a_claim_context_prints_its_key_fence_and_lease() {
    let seen = Arc::new(Mutex::new(String::new()));
    let handler = {
        let seen = Arc::clone(&seen);
        move |axum::Extension(claim): axum::Extension<ClaimContext>| async move {
            *seen.lock().expect("not poisoned") = format!("{claim:?}");
            "done"
        }
    };
    let app =
        Router::new().route("/jobs", post(handler)).layer(IdempotencyLayer::new(Arc::new(MemoryStore::default())));
    let request = Request::post("/jobs").header("idempotency-key", "\"job-7\"").body(axum::body::Body::empty());
    app.oneshot(request.expect("a valid request")).await.expect("the router answers");
    let text = seen.lock().expect("not poisoned").clone();
    for expected in ["ClaimContext", "job-7", "fence", "lease_expires_at", "lost: false"] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
}
