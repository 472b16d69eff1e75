//! Key lifecycle over real HTTP on loopback (SPEC "Key lifecycle", issue 22), on tokio's
//! paused clock ([`support::TokioClock`]): expiry on the wire, tombstones answering 410,
//! the execution ceiling freeing a hung key, per-route policy, the key header's name,
//! semantic fingerprints, and the holder a 409 names.

mod support;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::StatusCode;
use idem_core::Timestamp;
use idem_http::{FingerprintRules, RoutePolicy, SemanticRules};
use support::{TestStore, TokioClock, serve};

/// Where the layer's clock starts: a whole second, so HTTP-dates (whole seconds) are exact.
const T0: Timestamp = Timestamp::from_unix_ms(1_700_000_000_000);

/// The `Idempotency-Expires` value for `at`.
fn http_date(at: Timestamp) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(at.unix_ms()))
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

#[tokio::test(start_paused = true)]
async fn every_keyed_answer_states_when_its_record_expires() {
    // Goal: SPEC expiry on the wire: the first answer and every replay state the same
    // expiry (retention from the completion), a 422 states the record's, and a 409 the
    // in-flight record's; a 409 names the holder's request id and trace id.
    let store = Arc::new(TestStore::default());
    let (server, counters, mut started) =
        serve(&store, |builder| builder.retention(secs(3600)).clock(TokioClock::new(T0)).no_purge()).await;
    let first = server.post("/payments", "k1", "{\"amount\":1}").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let expiry = first.header("idempotency-expires").map(str::to_owned);
    assert_eq!(expiry.as_deref(), Some(http_date(T0.saturating_add(secs(3600))).as_str()), "{first:?}");
    tokio::time::advance(secs(5)).await;
    let replay = server.post("/payments", "k1", "{\"amount\":1}").await;
    assert!(replay.is_replay());
    assert_eq!(replay.header("idempotency-expires").map(str::to_owned), expiry, "a replay states the same expiry");
    let mismatch = server.post("/payments", "k1", "{\"amount\":2}").await;
    assert_eq!(mismatch.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(mismatch.header("idempotency-expires").map(str::to_owned), expiry);

    let holder = server
        .request("POST", "/gated", &[b"k2"])
        .header("x-request-id", "req-42")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let claimed_at = T0.saturating_add(secs(5));
    let in_flight = tokio::spawn({
        let server_addr = server.addr;
        async move {
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
            let request = holder
                .uri(format!("http://{server_addr}/gated"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("valid");
            client.request(request).await.expect("answered").status()
        }
    });
    assert_eq!(started.recv().await, Some(2), "the gated handler runs (the second run of the app)");
    let conflict = server.post("/gated", "k2", "").await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    // Paused time may move on to a timer while bytes cross loopback, so the claim's moment
    // is bounded, not exact: retention from the claim, which came after `claimed_at` and
    // before this answer.
    let stated =
        httpdate::parse_http_date(conflict.header("idempotency-expires").expect("stated")).expect("an HTTP-date");
    let stated_ms = u64::try_from(stated.duration_since(UNIX_EPOCH).expect("after 1970").as_millis()).expect("fits");
    let earliest = claimed_at.saturating_add(secs(3600)).unix_ms();
    assert!((earliest..=earliest + 60_000).contains(&stated_ms), "{conflict:?}");
    let detail = conflict.problem()["detail"].as_str().expect("a detail").to_owned();
    assert!(detail.contains("req-42") && detail.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{detail}");
    let holder = serde_json::json!({ "request_id": "req-42", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736" });
    assert_eq!(conflict.problem()["holder"], holder, "the holder as an RFC 9457 extension member");
    counters.gate.add_permits(1);
    assert_eq!(in_flight.await.expect("joined"), StatusCode::CREATED);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_retention_gets_410_while_the_tombstone_lasts() {
    // Goal: SPEC tombstones: past retention a retry of the same request is 410 key-expired
    // (before and after a purge shrinks the record), never a second run; the 410 states the
    // tombstone's end; another request under the key is 422; after the tombstone the key is free.
    let store = Arc::new(TestStore::default());
    let configure = |builder: idem_http::IdempotencyBuilder<TestStore>| {
        builder.lease(secs(1)).retention(secs(3)).tombstone(secs(60)).clock(TokioClock::new(T0)).no_purge()
    };
    let (server, counters, _) = serve(&store, configure).await;
    assert_eq!(server.post("/payments", "k1", "{}").await.status, StatusCode::CREATED);
    tokio::time::advance(secs(4)).await;
    let gone = server.post("/payments", "k1", "{}").await;
    assert_eq!(gone.status, StatusCode::GONE, "{gone:?}");
    assert!(gone.problem()["type"].as_str().is_some_and(|uri| uri.ends_with("key-expired")));
    assert_eq!(gone.header("idempotency-expires"), Some(http_date(T0.saturating_add(secs(63))).as_str()));
    let now = T0.saturating_add(secs(4));
    assert_eq!(idem_core::Store::purge_expired(&store.memory, now, 10).await.expect("purged"), 1);
    assert_eq!(server.post("/payments", "k1", "{}").await.status, StatusCode::GONE, "after the purge too");
    assert_eq!(server.post("/payments", "k1", "{\"other\":1}").await.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(counters.runs(), 1, "a tombstoned key never runs again");
    tokio::time::advance(secs(60)).await;
    assert_eq!(server.post("/payments", "k1", "{}").await.status, StatusCode::CREATED, "the key is free again");
    assert_eq!(counters.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_execution_ceiling_frees_a_hung_key_within_the_ceiling_and_a_lease() {
    // Goal: SPEC execution ceiling: renewal stops once the handler ran for the ceiling, so
    // after ceiling + lease a retry takes the claim over and runs; the hung handler's late
    // completion is refused (G3) and its client gets the recorded answer, not its own.
    let store = Arc::new(TestStore::default());
    let configure = |builder: idem_http::IdempotencyBuilder<TestStore>| {
        builder.lease(secs(3)).execution_max(secs(6)).clock(TokioClock::new(T0)).no_purge()
    };
    let (server, counters, mut started) = serve(&store, configure).await;
    let hung = tokio::spawn({
        let request = server.request("POST", "/first-run-gated", &[b"k1"]);
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        async move {
            let request = request.body(http_body_util::Full::new(bytes::Bytes::new())).expect("valid");
            let response = client.request(request).await.expect("answered");
            let body = http_body_util::BodyExt::collect(response.into_body()).await.expect("whole").to_bytes();
            String::from_utf8(body.to_vec()).expect("UTF-8")
        }
    });
    assert_eq!(started.recv().await, Some(1));
    tokio::time::advance(secs(5)).await;
    assert_eq!(
        server.post("/first-run-gated", "k1", "").await.status,
        StatusCode::CONFLICT,
        "renewed until the ceiling"
    );
    tokio::time::advance(secs(5)).await;
    let retry = server.post("/first-run-gated", "k1", "").await;
    assert_eq!((retry.status, retry.text()), (StatusCode::CREATED, "run 2"), "taken over past ceiling + lease");
    counters.gate.add_permits(1);
    assert_eq!(hung.await.expect("joined"), "run 2", "the hung run answers the recorded response, not its own");
    assert_eq!(counters.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn without_a_ceiling_a_hung_handler_keeps_its_key() {
    // Goal: the counterpart (the ceiling test's teeth): with no ceiling the hung handler's
    // renewals keep the key held past the point where the ceiling would have freed it.
    let store = Arc::new(TestStore::default());
    let (server, counters, mut started) =
        serve(&store, |builder| builder.lease(secs(3)).clock(TokioClock::new(T0)).no_purge()).await;
    let request = server.request("POST", "/first-run-gated", &[b"k1"]);
    let hung = tokio::spawn({
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        async move {
            let request = request.body(http_body_util::Full::new(bytes::Bytes::new())).expect("valid");
            client.request(request).await.expect("answered").status()
        }
    });
    assert_eq!(started.recv().await, Some(1));
    tokio::time::advance(secs(10)).await;
    assert_eq!(server.post("/first-run-gated", "k1", "").await.status, StatusCode::CONFLICT);
    counters.gate.add_permits(1);
    assert_eq!(hung.await.expect("joined"), StatusCode::CREATED);
    assert_eq!(counters.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn routes_set_their_own_policy_and_fingerprint_and_the_key_header_is_configurable() {
    // Goal: per-route policy on one layer: /payments keeps records 1 h and fingerprints by
    // meaning (reordered and re-spaced JSON replays, an ignored field never counts, a
    // covered one is 422); /headers keeps them 2 h with byte fingerprints; the key comes in
    // the configured header and is echoed there.
    let store = Arc::new(TestStore::default());
    let rules = SemanticRules::new().ignore("/sent_at").expect("a valid pointer");
    let configure = move |builder: idem_http::IdempotencyBuilder<TestStore>| {
        builder
            .retention(secs(7200))
            .key_header(http::HeaderName::from_static("x-idem-key"))
            .route(
                None,
                "/payments",
                RoutePolicy::new().retention(secs(3600)).fingerprint(FingerprintRules::Semantic(rules)),
            )
            .clock(TokioClock::new(T0))
            .no_purge()
    };
    let (server, counters, _) = serve(&store, configure).await;
    let post = |path: &str, key: &str| server.request("POST", path, &[]).header("x-idem-key", key.to_owned());
    let first = server.send(post("/payments", "p1"), r#"{"amount":1,"currency":"EUR","sent_at":"09:00"}"#).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.header("x-idem-key"), Some("\"p1\""), "echoed in the configured header");
    assert_eq!(first.header("idempotency-expires"), Some(http_date(T0.saturating_add(secs(3600))).as_str()));
    let same = server
        .send(post("/payments", "p1"), "{ \"currency\": \"EUR\",\n \"sent_at\": \"10:00\", \"amount\": 1 }")
        .await;
    assert!(same.is_replay() && same.status == StatusCode::CREATED, "{same:?}");
    let changed = server.send(post("/payments", "p1"), r#"{"amount":2,"currency":"EUR","sent_at":"09:00"}"#).await;
    assert_eq!(changed.status, StatusCode::UNPROCESSABLE_ENTITY);
    let other = server.send(post("/headers", "h1"), "{}").await;
    assert_eq!(other.header("idempotency-expires"), Some(http_date(T0.saturating_add(secs(7200))).as_str()));
    let respaced = server.send(post("/headers", "h1"), "{ }").await;
    assert_eq!(respaced.status, StatusCode::UNPROCESSABLE_ENTITY, "byte fingerprints outside the route");
    let standard = server.post("/payments", "p1", "{}").await;
    assert_eq!(standard.status, StatusCode::BAD_REQUEST, "the standard header is not the key header here");
    assert_eq!(counters.runs(), 2);
}

#[test]
fn bad_routes_and_ceilings_are_configuration_errors() {
    // Goal: a route pattern, a ceiling or a tombstone out of range is refused at build.
    let builder = || idem_http::IdempotencyLayer::builder(Arc::new(TestStore::default()));
    assert!(matches!(
        builder().route(None, "payments", RoutePolicy::new()).build(),
        Err(idem_http::ConfigError::RoutePattern { .. })
    ));
    assert!(matches!(builder().execution_max(secs(1)).build(), Err(idem_http::ConfigError::ExecutionMax { .. })));
    assert!(matches!(builder().tombstone(Duration::ZERO).build(), Err(idem_http::ConfigError::Policy(_))));
}

#[tokio::test(start_paused = true)]
async fn each_replay_is_counted_in_the_record_unless_turned_off() {
    // Goal: a replay counts itself in the record (operators read `replays`); with
    // `count_replays(false)` the answer is the same and the count stays 0.
    async fn replays_after_two_retries(count: bool) -> u64 {
        let store = Arc::new(TestStore::default());
        let configure = move |builder: idem_http::IdempotencyBuilder<TestStore>| {
            builder.clock(TokioClock::new(T0)).no_purge().count_replays(count)
        };
        let (server, counters, _) = serve(&store, configure).await;
        assert_eq!(server.post("/payments", "k1", "{}").await.status, StatusCode::CREATED);
        for _ in 0..2 {
            assert!(server.post("/payments", "k1", "{}").await.is_replay());
        }
        assert_eq!(counters.runs(), 1);
        let record = idem_core::Store::get(&store.memory, &support::anonymous("k1")).await.expect("read");
        match record.expect("the record is kept").state {
            idem_core::RecordState::Completed { replays, .. } => replays,
            other => panic!("expected a completed record, got {other:?}"),
        }
    }
    assert_eq!(replays_after_two_retries(true).await, 2);
    assert_eq!(replays_after_two_retries(false).await, 0);
}
