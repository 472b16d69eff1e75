//! A completion the store could not take is tried again a bounded number of times, each
//! pause twice the one before (50 ms, then 100 ms), so a store that is briefly away gets
//! room to come back and a store that is down is not hammered. Time is tokio's paused
//! clock: the pauses are read exactly, not raced.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Request, Response};
use idem_http::{Body, IdempotencyLayer};
use support::TestStore;
use tower::{Layer, ServiceExt, service_fn};

#[tokio::test(start_paused = true)]
async fn completion_retries_back_off_by_doubling() {
    let store = Arc::new(TestStore::default());
    store.fail_completes.store(true, Ordering::SeqCst);
    let layer = IdempotencyLayer::new(Arc::clone(&store));
    let service = layer.layer(service_fn(|_request: Request<Body>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Body::default()))
    }));
    let request = Request::post("/orders").header("idempotency-key", "k1").body(Body::default());

    service.oneshot(request.expect("a valid request")).await.expect("the layer answers");

    let times = store.complete_times.lock().expect("not poisoned").clone();
    let pauses: Vec<Duration> = times.windows(2).map(|pair| pair[1] - pair[0]).collect();
    assert_eq!(pauses, [Duration::from_millis(50), Duration::from_millis(100)], "three attempts, pauses doubling");
}
