//! What the layer reports, over real HTTP on loopback: metrics through the `metrics` facade
//! (captured by metrics-util's `DebuggingRecorder`) and one `tracing` span per keyed
//! request (captured by a small subscriber layer that keeps every span's fields).
//!
//! The recorder and the subscriber are installed for this thread only; `#[tokio::test]`
//! runs the server, the client and the layer's tasks on this one thread.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use idem_http::observe::{REQUEST_DURATION_SECONDS, REQUESTS_TOTAL, STORE_ERRORS_TOTAL};
use metrics::Unit;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use support::{TestStore, serve};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// A span's fields as text, by field name.
type FieldMap = BTreeMap<String, String>;

/// Every span's name and fields, by span id.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<BTreeMap<u64, (String, FieldMap)>>>);

struct Fields<'a>(&'a mut FieldMap);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.0.lock().expect("no panic while held").insert(id.into_u64(), (attrs.metadata().name().to_owned(), fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some((_, fields)) = self.0.lock().expect("no panic while held").get_mut(&id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}

impl Spans {
    fn idempotency(&self) -> Vec<FieldMap> {
        let spans = self.0.lock().expect("no panic while held");
        spans.values().filter(|(name, _)| name == "idempotency").map(|(_, fields)| fields.clone()).collect()
    }
}

#[tokio::test]
async fn counters_histograms_and_spans_report_each_keyed_request() {
    // Goal: each answered request moves idem_requests_total{outcome} and records one
    // idem_request_duration_seconds sample (unit: seconds); a store failure moves
    // idem_store_errors_total{operation,error}; each keyed request has one span carrying
    // key, method, path, principal and, once known, its outcome and status.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let spans = Spans::default();
    let _tracing = tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));

    let store = Arc::new(TestStore::default());
    let (server, _, _) = serve(&store, |b| b).await;
    let first = server.post("/payments?x=1", "k1", "{}").await;
    let replay = server.post("/payments?x=1", "k1", "{}").await;
    let missing = server.send(server.request("POST", "/payments", &[]), "{}").await;
    store.fail_claims.store(true, Ordering::SeqCst);
    let down = server.post("/payments", "k2", "{}").await;
    assert_eq!([first.status, replay.status, missing.status, down.status].map(|s| s.as_u16()), [201, 201, 400, 503]);

    let mut counters = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let mut units = BTreeMap::new();
    for (key, unit, _, value) in snapshotter.snapshot().into_vec() {
        let (_, key) = key.into_parts();
        let labels: Vec<String> = key.labels().map(|label| format!("{}={}", label.key(), label.value())).collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        units.insert(key.name().to_owned(), unit);
        match value {
            DebugValue::Counter(count) => {
                counters.insert(name, count);
            }
            DebugValue::Histogram(values) => {
                samples.insert(name, values.len());
            }
            DebugValue::Gauge(_) => {}
        }
    }
    let counter = |name: &str| counters.get(name).copied();
    assert_eq!(counter(&format!("{REQUESTS_TOTAL}{{outcome=executed}}")), Some(1), "{counters:?}");
    assert_eq!(counter(&format!("{REQUESTS_TOTAL}{{outcome=replayed}}")), Some(1), "{counters:?}");
    assert_eq!(counter(&format!("{REQUESTS_TOTAL}{{outcome=rejected}}")), Some(1), "{counters:?}");
    assert_eq!(counter(&format!("{REQUESTS_TOTAL}{{outcome=store_failed}}")), Some(1), "{counters:?}");
    assert_eq!(counter(&format!("{STORE_ERRORS_TOTAL}{{operation=claim,error=unavailable}}")), Some(1), "{counters:?}");
    let executed_samples = samples.get(&format!("{REQUEST_DURATION_SECONDS}{{outcome=executed}}")).copied();
    assert_eq!(executed_samples, Some(1), "{samples:?}");
    assert_eq!(samples.values().sum::<usize>(), 4, "one latency sample per answered request: {samples:?}");
    assert_eq!(units.get(REQUEST_DURATION_SECONDS), Some(&Some(Unit::Seconds)), "{units:?}");
    assert_eq!(units.get(REQUESTS_TOTAL), Some(&Some(Unit::Count)), "{units:?}");

    let spans = spans.idempotency();
    assert_eq!(spans.len(), 3, "one span per keyed request (the keyless one has none): {spans:?}");
    let field = |span: usize, name: &str| spans[span].get(name).map(String::as_str);
    assert_eq!(field(0, "key"), Some("k1"));
    assert_eq!(field(0, "method"), Some("POST"));
    assert_eq!(field(0, "path"), Some("/payments"), "the path without its query");
    assert_eq!(field(0, "principal"), Some(""), "the anonymous principal");
    assert_eq!((field(0, "outcome"), field(0, "status")), (Some("executed"), Some("201")));
    assert_eq!((field(1, "outcome"), field(1, "status")), (Some("replayed"), Some("201")));
    assert_eq!(
        (field(2, "key"), field(2, "outcome"), field(2, "status")),
        (Some("k2"), Some("store_failed"), Some("503"))
    );
}
