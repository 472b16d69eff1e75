//! `IdempotencyLayer::task_tracker` is the tracker the layer's work runs under, so a
//! draining server that waits on it waits for requests whose clients went away.

use std::convert::Infallible;
use std::sync::Arc;

use futures::FutureExt;
use http::{Request, Response};
use idem_core::MemoryStore;
use idem_http::{Body, IdempotencyLayer};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tower::{Layer, Service, ServiceExt, service_fn};

fn keyed(key: &str) -> Request<Body> {
    Request::post("/orders").header("idempotency-key", key).body(Body::default()).expect("a valid request")
}

#[test]
fn the_layer_hands_out_the_tracker_it_was_built_with() {
    // Goal: the accessor returns the builder's tracker itself (closing one closes the
    // other), not a tracker of its own that no work runs under.
    let tracker = TaskTracker::new();
    let layer = IdempotencyLayer::builder(Arc::new(MemoryStore::default()))
        .task_tracker(tracker.clone())
        .build()
        .expect("a valid configuration");
    assert!(!layer.task_tracker().is_closed());
    tracker.close();
    assert!(layer.task_tracker().is_closed(), "the same tracker");
}

#[tokio::test]
async fn a_request_dropped_by_its_client_runs_on_under_the_layers_tracker() {
    // Goal: with the default tracker, a keyed request in progress is tracked by
    // `task_tracker()`, and stays tracked when its response future is dropped while its
    // handler runs (it goes on as a task), so `wait` covers it.
    let layer = IdempotencyLayer::new(Arc::new(MemoryStore::default()));
    let gate = Arc::new(Semaphore::new(0));
    let handler_gate = Arc::clone(&gate);
    let mut service = layer.layer(service_fn(move |_request: Request<Body>| {
        let gate = Arc::clone(&handler_gate);
        async move {
            let _permit = gate.acquire().await.expect("the gate is never closed");
            Ok::<_, Infallible>(Response::new(Body::default()))
        }
    }));
    let ready = ServiceExt::<Request<Body>>::ready(&mut service).await.expect("the service is ready");
    let mut future = Box::pin(ready.call(keyed("k1")));
    // Claim the key and enter the handler: the handler waits at the gate.
    for _ in 0..100 {
        if (&mut future).now_or_never().is_some() {
            panic!("the handler cannot finish before the gate opens");
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(layer.task_tracker().len(), 1, "the request in progress is tracked, though polled in place");
    drop(future);

    assert_eq!(layer.task_tracker().len(), 1, "the dropped request runs on as a tracked task");
    gate.add_permits(1);
    layer.task_tracker().close();
    layer.task_tracker().wait().await;
}
