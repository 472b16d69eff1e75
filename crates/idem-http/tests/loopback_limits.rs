//! The layer over real HTTP on loopback: the size limits (a request body over its limit, a
//! response too large to keep, a response with trailers) and a store at its record bound.

mod support;

use std::sync::Arc;
use std::time::Duration;

use idem_core::RecordState;
use idem_http::Outcome;
use support::{TestStore, anonymous, serve};

#[tokio::test]
async fn a_body_over_the_limit_is_413_records_nothing_and_the_key_stays_usable() {
    // Goal: a request body longer than the limit is refused with 413 before any claim, so
    // the client can fix the body and reuse the key.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b.request_body_bytes_max(16)).await;

    let too_large = server.post("/payments", "k", "{\"amount\":1000000}").await;
    assert_eq!(too_large.status, 413);
    too_large.problem();
    assert_eq!(too_large.header("idempotency-key"), Some("\"k\""));
    assert!(store.memory.is_empty());
    assert_eq!(counters.runs(), 0);

    let fixed = server.post("/payments", "k", "{\"amount\":1}").await;
    assert_eq!(fixed.status, 201);
    assert!(!fixed.is_replay());
    assert_eq!(counters.runs(), 1);
}

/// Checks that `reply` is the replay of a response that was not kept: the original status
/// and `Location`, a `response-not-kept` problem, marked as a replay.
fn assert_not_kept_replay(reply: &support::Reply, status: u16, location: Option<&str>) {
    assert!(reply.is_replay(), "{reply:?}");
    assert_eq!(reply.status.as_u16(), status, "the original status, so the client does not retry");
    let problem = reply.problem();
    assert_eq!(problem["type"], support::problem_type("response-not-kept"));
    assert_eq!(reply.header("location"), location);
    assert_eq!(reply.header("idempotency-key"), Some("\"k\""));
}

#[tokio::test]
async fn a_response_too_large_to_keep_reaches_the_first_client_whole_and_never_runs_again() {
    // Goal: SPEC: a response over the recording limit is answered to the first client as
    // the handler made it (status, Location, every byte); the record is completed, so a
    // retry does not run the handler, and gets a response-not-kept problem with the
    // original status and Location.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b.response_body_bytes_max(1024)).await;

    let first = server.post("/large", "k", "{}").await;
    let retry = server.post("/large", "k", "{}").await;

    assert_eq!(first.status, 201);
    assert_eq!(first.body, "x".repeat(4096), "the whole response, not a problem");
    assert_eq!(first.header("location"), Some("/payments/1"));
    assert!(!first.is_replay());
    assert_eq!(first.header("idempotency-key"), Some("\"k\""));
    assert_not_kept_replay(&retry, 201, Some("/payments/1"));
    assert_eq!(counters.runs(), 1);
    assert_eq!(server.outcomes(), [Outcome::ResponseTooLarge, Outcome::Replayed]);
}

#[tokio::test]
async fn a_streamed_response_over_the_limit_is_recorded_before_it_is_read_to_its_end() {
    // Goal: bounded memory: the layer does not buffer a long response to its end. The
    // record is completed and the head answered while the handler's body is still held
    // (after 2 KiB, past the 1 KiB limit); the client then reads all 4 KiB.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b.response_body_bytes_max(1024)).await;

    let head = server.send_head(server.request("POST", "/large-gated", &[b"k"]), "{}").await;
    assert_eq!(head.status(), 201);
    let record = store.record(&anonymous("k")).await.expect("the record exists");
    let RecordState::Completed { response, .. } = record.state else {
        panic!("completed before the body ends: {record:?}")
    };
    assert_eq!(response.status, 201);
    assert!(response.body.len() < 1024, "the record holds the problem, not the response");
    counters.gate.add_permits(1);
    let body = http_body_util::BodyExt::collect(head.into_body()).await.expect("the body arrives whole").to_bytes();

    assert_eq!(body.len(), 4096);
    assert_eq!((&body[..2048], &body[2048..]), ("x".repeat(2048).as_bytes(), "y".repeat(2048).as_bytes()));
    let retry = server.post("/large-gated", "k", "{}").await;
    assert_not_kept_replay(&retry, 201, Some("/payments/1"));
    assert_eq!(counters.runs(), 1);
}

#[tokio::test]
async fn a_response_with_trailers_is_answered_with_them_and_not_kept() {
    // Goal: a record cannot hold trailers, so a response that has them is treated as not
    // kept: the first client gets the body and the trailers, retries get the
    // response-not-kept problem, and the handler runs once.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b).await;

    let first = server.send_head(server.request("POST", "/trailers", &[b"k"]).header("te", "trailers"), "{}").await;
    assert_eq!(first.status(), 200);
    let collected = http_body_util::BodyExt::collect(first.into_body()).await.expect("the body arrives whole");
    let trailers = collected.trailers().cloned().expect("the trailers reach the first client");
    assert_eq!(trailers["x-checksum"], "abc");
    assert_eq!(collected.to_bytes(), "run 1");
    let retry = server.post("/trailers", "k", "{}").await;

    assert_not_kept_replay(&retry, 200, None);
    assert_eq!(counters.runs(), 1);
    assert_eq!(server.outcomes(), [Outcome::ResponseTooLarge, Outcome::Replayed]);
}

#[tokio::test]
async fn a_full_store_answers_store_full_with_the_purge_interval_and_replays_still_work() {
    // Goal: at the store's record bound a new key gets 503 `store-full` naming the limit, with
    // the configured Retry-After (the purge's interval), no driver text; replays still work.
    let store = Arc::new(TestStore {
        memory: idem_core::MemoryStore::new(idem_core::Limits { records_max: 1, stored_bytes_max: 1 << 20 }),
        ..TestStore::default()
    });
    let (server, counters, _) = serve(&store, |b| b.store_full_retry_after(Duration::from_secs(90))).await;
    assert_eq!(server.post("/payments", "k1", "{}").await.status, 201);
    let full = server.post("/payments", "k2", "{}").await;
    assert_eq!(full.status, 503);
    assert_eq!(full.header("retry-after"), Some("90"));
    assert_eq!(full.header("idempotency-key"), Some("\"k2\""));
    assert!(full.text().contains("store-full") && full.text().contains("1 records"), "{}", full.text());
    assert!(server.post("/payments", "k1", "{}").await.is_replay());
    assert_eq!(counters.runs(), 1);
}
