//! The layer's own purge: a service that adopts the layer keeps its store bounded without
//! purge code of its own.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use idem_core::{ManualClock, MemoryStore, Timestamp};
use idem_http::{Body, IdempotencyLayer, PurgeSchedule};
use tower::{Layer, ServiceExt, service_fn};

fn keyed(key: &str) -> Request<Body> {
    Request::post("/orders").header("idempotency-key", key).body(Body::default()).expect("a valid request")
}

#[tokio::test(start_paused = true)]
async fn expired_records_are_purged_by_the_layer_on_its_schedule() {
    // Goal: past retention, the layer's own task forgets expired records in bounded rounds
    // (here at most 4 per round) until the store is empty; live records are kept.
    let clock = ManualClock::new(Timestamp::from_unix_ms(1_700_000_000_000));
    let store = Arc::new(MemoryStore::default());
    let schedule = PurgeSchedule { every: Duration::from_secs(10), batch_max: 2, batches_per_round_max: 2 };
    let layer = IdempotencyLayer::builder(Arc::clone(&store))
        .clock(clock.clone())
        .lease(Duration::from_secs(1))
        .retention(Duration::from_secs(60))
        .purge_schedule(schedule)
        .build()
        .expect("a valid configuration");
    let service = layer
        .layer(service_fn(|_request: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::default())) }));
    for n in 0..5 {
        let response = service.clone().oneshot(keyed(&format!("k{n}"))).await.expect("infallible");
        assert_eq!(response.status(), 200);
    }
    assert_eq!(store.len(), 5);

    // Before retention passes, a round forgets nothing.
    tokio::time::sleep(schedule.every).await;
    assert_eq!(store.len(), 5, "live records are kept");

    clock.advance(Duration::from_secs(61));
    let fresh = service.clone().oneshot(keyed("fresh")).await.expect("infallible");
    assert_eq!(fresh.status(), 200);
    tokio::time::sleep(schedule.every).await;
    assert_eq!(store.len(), 2, "one bounded round forgets 4 of the 5 expired records");
    tokio::time::sleep(schedule.every).await;
    assert_eq!(store.len(), 1, "the next round forgets the last; the fresh record stays");
    let fresh_id =
        idem_core::RecordId::new(idem_core::Principal::anonymous(), "fresh".try_into().expect("a valid key"));
    assert!(idem_core::Store::get(&*store, &fresh_id).await.expect("memory answers").is_some());
}

#[tokio::test(start_paused = true)]
async fn no_purge_leaves_the_store_to_the_application() {
    // Goal: with no_purge (an application that purges itself, or a test that moves time by
    // hand) nothing is forgotten behind its back.
    let clock = ManualClock::new(Timestamp::from_unix_ms(1_700_000_000_000));
    let store = Arc::new(MemoryStore::default());
    let layer = IdempotencyLayer::builder(Arc::clone(&store))
        .clock(clock.clone())
        .lease(Duration::from_secs(1))
        .retention(Duration::from_secs(60))
        .no_purge()
        .build()
        .expect("a valid configuration");
    let service = layer
        .layer(service_fn(|_request: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::default())) }));
    service.clone().oneshot(keyed("k")).await.expect("infallible");
    clock.advance(Duration::from_secs(61));
    tokio::time::sleep(PurgeSchedule::DEFAULT.every * 3).await;
    assert_eq!(store.len(), 1);
}

/// Collects the message of every event at INFO or above from `idem_http::purge`.
#[derive(Clone, Default)]
struct PurgeLog(Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PurgeLog {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message<'a>(&'a mut String);
        impl tracing::field::Visit for Message<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        let metadata = event.metadata();
        if metadata.target() == "idem_http::purge" && *metadata.level() <= tracing::Level::INFO {
            let mut text = String::new();
            event.record(&mut Message(&mut text));
            self.0.lock().expect("not poisoned").push(text);
        }
    }
}

#[tokio::test]
async fn a_round_logs_what_it_forgot_and_nothing_when_it_forgot_nothing() {
    // Goal: the purge's INFO line reports records forgotten, once per round that forgot
    // some; a round over a store with nothing expired (every round, on a quiet service)
    // logs nothing.
    use tracing_subscriber::layer::SubscriberExt;
    let log = PurgeLog::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(log.clone()));
    let clock = ManualClock::new(Timestamp::from_unix_ms(1_700_000_000_000));
    let store = Arc::new(MemoryStore::default());
    let schedule = PurgeSchedule { every: Duration::from_secs(10), batch_max: 8, batches_per_round_max: 2 };

    assert_eq!(idem_http::purge::purge_round(&*store, &clock, schedule).await, 0);
    assert!(log.0.lock().expect("not poisoned").is_empty(), "nothing forgotten, nothing logged");

    let layer = IdempotencyLayer::builder(Arc::clone(&store))
        .clock(clock.clone())
        .lease(Duration::from_secs(1))
        .retention(Duration::from_secs(60))
        .no_purge()
        .build()
        .expect("a valid configuration");
    let service = layer
        .layer(service_fn(|_request: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::default())) }));
    service.oneshot(keyed("k")).await.expect("infallible");
    clock.advance(Duration::from_secs(61));
    assert_eq!(idem_http::purge::purge_round(&*store, &clock, schedule).await, 1);
    let lines = log.0.lock().expect("not poisoned").clone();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("purged=1"), "{lines:?}");
}
