//! What a handler running under a claim reads from its `ClaimContext` (the extension the
//! layer inserts): when the claim's lease ends, on the layer's clock, with its policy.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::routing::post;
use http::StatusCode;
use http_body_util::BodyExt;
use idem_core::{ManualClock, MemoryStore, Policy, Timestamp};
use idem_http::{ClaimContext, IdempotencyLayer};
use tower::ServiceExt;

/// Where the layer's clock stands.
const T0: Timestamp = Timestamp::from_unix_ms(1_700_000_000_000);

/// A handler that answers what its claim context says: lease end, now and lease, in ms.
async fn report_claim(request: Request) -> String {
    let claim = request.extensions().get::<ClaimContext>().expect("the layer runs the handler under a claim");
    format!("{} {} {}", claim.lease_expires_at().unix_ms(), claim.now().unix_ms(), claim.policy().lease().as_millis())
}

#[tokio::test]
async fn a_handler_reads_when_its_claims_lease_ends() {
    // Goal: a handler that plans its work by the lease (or stops before it lapses) reads the
    // claim's real lease end: the claim's time on the layer's clock plus the policy's lease,
    // not a default or the epoch.
    let store = Arc::new(MemoryStore::default());
    let layer = IdempotencyLayer::builder(store).clock(ManualClock::new(T0)).build().expect("a valid configuration");
    let app = Router::new().route("/payments", post(report_claim)).layer(layer);

    let request = http::Request::post("/payments").header("idempotency-key", "\"k1\"").body(Body::empty());
    let response = app.oneshot(request.expect("a valid request")).await.expect("the router answers");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.expect("a whole body").to_bytes();

    let lease_ms = Policy::DEFAULT.lease().as_millis();
    let expected = format!("{} {} {lease_ms}", u128::from(T0.unix_ms()) + lease_ms, T0.unix_ms());
    assert_eq!(String::from_utf8_lossy(&body), expected);
}
