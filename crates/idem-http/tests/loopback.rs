//! The layer over real HTTP on loopback: a hyper server around an axum app (and one plain
//! tower service), a hyper client, and the real `MemoryStore` behind a counting wrapper.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use idem_core::{ManualClock, RecordState, Timestamp};
use idem_http::{ConflictPolicy, IdempotencyLayer, MissingKey, Outcome};
use support::{Harness, TestStore, anonymous, serve};
use tower::Layer;

#[tokio::test]
async fn replay_is_byte_identical_and_marked_only_on_replays() {
    // Goal: a retry gets the first response's status, headers and bytes, with
    // `Idempotent-Replayed: true` on the retry only, and the key echoed on both.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b).await;

    let first = server.post("/payments", "k1", "{\"amount\":100}").await;
    let retry = server.post("/payments", "k1", "{\"amount\":100}").await;

    assert_eq!(first.status, 201);
    assert_eq!(first.text(), "run 1: {\"amount\":100}");
    assert!(!first.is_replay() && first.header("idempotent-replayed").is_none());
    assert!(retry.is_replay());
    assert_eq!((retry.status, &retry.body), (first.status, &first.body));
    assert_eq!(retry.header("content-type"), first.header("content-type"));
    assert_eq!(first.header("idempotency-key"), Some("\"k1\""));
    assert_eq!(retry.header("idempotency-key"), Some("\"k1\""));
    assert_eq!(counters.runs(), 1);
    assert_eq!(server.outcomes(), [Outcome::Executed, Outcome::Replayed]);
}

#[tokio::test]
async fn concurrent_identical_requests_execute_once_and_the_others_conflict() {
    // Goal: 64 identical requests at once run the handler exactly once; while it runs,
    // the other 63 get 409 problem+json with Retry-After.
    let store = Arc::new(TestStore::default());
    let (server, counters, mut started) = serve(&store, |b| b).await;
    let server = Arc::new(server);
    let (replies_tx, mut replies) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..64 {
        let (server, replies_tx) = (Arc::clone(&server), replies_tx.clone());
        tokio::spawn(async move { replies_tx.send(server.post("/gated", "same", "{}").await) });
    }
    let mut conflicts = Vec::new();
    for _ in 0..63 {
        conflicts.push(replies.recv().await.expect("every request is answered"));
    }
    assert_eq!(started.recv().await, Some(1), "the one execution is held at the gate");
    counters.gate.add_permits(1);
    let executed = replies.recv().await.expect("the execution is answered");

    assert_eq!(executed.status, 201);
    assert_eq!(executed.text(), "run 1");
    for conflict in &conflicts {
        assert_eq!(conflict.status, 409);
        assert_eq!(conflict.problem()["type"], support::problem_type("in-progress"));
        let retry_after: u64 =
            conflict.header("retry-after").expect("409 carries Retry-After").parse().expect("seconds");
        assert_eq!(retry_after, 1, "the lease left (about 10 s), capped at the default 1 s");
        assert_eq!(conflict.header("idempotency-key"), Some("\"same\""));
    }
    assert_eq!(counters.runs(), 1);
}

#[tokio::test]
async fn conflict_retry_after_is_the_lease_left_capped_by_configuration() {
    // Goal: a 409's Retry-After is idem-core's rule: the time the claim still holds, never
    // more than the configured cap (so a retrying client is not told to wait out a whole
    // lease), rounded up to whole seconds.
    let store = Arc::new(TestStore::default());
    let clock = ManualClock::new(Timestamp::from_unix_ms(1_700_000_000_000));
    let layer_clock = clock.clone();
    let (server, counters, mut started) = serve(&store, move |b| {
        b.clock(layer_clock).lease(Duration::from_secs(20)).conflict_retry_after_max(Duration::from_secs(30))
    })
    .await;
    let server = Arc::new(server);
    let holder = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.post("/gated", "held", "{}").await })
    };
    assert_eq!(started.recv().await, Some(1), "the first request holds the claim at the gate");
    let conflict = server.post("/gated", "held", "{}").await;
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.header("retry-after"), Some("20"), "the whole 20 s lease is left, under the 30 s cap");
    clock.advance(Duration::from_millis(12_500));
    let later = server.post("/gated", "held", "{}").await;
    assert_eq!(later.header("retry-after"), Some("8"), "7.5 s left, rounded up to whole seconds");
    let core_rule = |lease_left_ms, cap_s| {
        idem_core::reply::retry_after(Duration::from_millis(lease_left_ms), Duration::from_secs(cap_s)).as_secs()
    };
    assert_eq!(conflict.header("retry-after"), Some(core_rule(20_000, 30).to_string().as_str()));
    assert_eq!(later.header("retry-after"), Some(core_rule(7_500, 30).to_string().as_str()));
    counters.gate.add_permits(1);
    assert_eq!(holder.await.expect("the holder finishes").status, 201);
}

#[tokio::test]
async fn with_the_wait_policy_concurrent_requests_all_get_the_one_response() {
    // Goal: under ConflictPolicy::Wait, the 63 requests that find the claim taken wait for
    // it and replay the one execution's response.
    let store = Arc::new(TestStore::default());
    let (server, counters, mut started) =
        serve(&store, |b| b.conflict(ConflictPolicy::Wait(Duration::from_secs(60)))).await;
    let server = Arc::new(server);
    let mut requests = Vec::new();
    for _ in 0..64 {
        let server = Arc::clone(&server);
        requests.push(tokio::spawn(async move { server.post("/gated", "same", "{}").await }));
    }
    assert_eq!(started.recv().await, Some(1));
    // Every request has asked for the claim (63 found it taken) before the handler may finish.
    while store.claims.load(Ordering::SeqCst) < 64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    counters.gate.add_permits(1);
    let mut replies = Vec::new();
    for request in requests {
        replies.push(request.await.expect("request tasks do not panic"));
    }

    assert!(replies.iter().all(|reply| reply.status == 201 && reply.text() == "run 1"));
    assert_eq!(replies.iter().filter(|reply| reply.is_replay()).count(), 63);
    assert_eq!(counters.runs(), 1);
}

#[tokio::test]
async fn a_waiting_request_runs_the_handler_itself_when_the_holder_fails() {
    // Goal: under ConflictPolicy::Wait, when the request holding the claim fails (5xx,
    // claim released), the waiting request claims and runs the handler instead of
    // answering 409 or the failure.
    let store = Arc::new(TestStore::default());
    let (server, counters, mut started) =
        serve(&store, |b| b.conflict(ConflictPolicy::Wait(Duration::from_secs(60)))).await;
    let server = Arc::new(server);
    let holder = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.post("/first-run-fails-gated", "k", "{}").await })
    };
    assert_eq!(started.recv().await, Some(1));
    let waiter = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.post("/first-run-fails-gated", "k", "{}").await })
    };
    while store.claims.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    counters.gate.add_permits(1);
    let (holder, waiter) = (holder.await.expect("no panic"), waiter.await.expect("no panic"));

    assert_eq!(holder.status, 500);
    assert_eq!((waiter.status, waiter.text(), waiter.is_replay()), (http::StatusCode::CREATED, "run 2", false));
    assert_eq!(counters.runs(), 2);
}

#[tokio::test]
async fn same_key_for_another_body_path_or_method_is_422_and_never_executes() {
    // Goal: G5: a request whose fingerprint differs from the recorded one is refused with
    // 422 and its handler does not run, whatever part differs.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b).await;
    assert_eq!(server.post("/payments", "k", "{\"amount\":100}").await.status, 201);

    let other_body = server.post("/payments", "k", "{\"amount\":999}").await;
    let other_query = server.post("/payments?currency=eur", "k", "{\"amount\":100}").await;
    let other_method = server.send(server.request("PATCH", "/payments", &[b"k"]), "{\"amount\":100}").await;

    for reply in [&other_body, &other_query, &other_method] {
        assert_eq!(reply.status, 422, "{reply:?}");
        assert_eq!(reply.problem()["type"], support::problem_type("key-reused"));
    }
    assert_eq!(counters.runs(), 1);
    assert_eq!(server.outcomes()[1..], [Outcome::Mismatch; 3]);
}

#[tokio::test]
async fn bad_or_missing_keys_are_400_problems_and_record_nothing() {
    // Goal: a missing, empty, too long, control-character, space-holding or repeated key
    // is a 400 problem+json; nothing runs and nothing is recorded.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b).await;
    let too_long = vec![b'a'; 256];
    let cases: [(&str, &[&[u8]]); 6] = [
        ("missing", &[]),
        ("empty", &[b""]),
        ("256 characters", &[&too_long]),
        ("control character", &[b"a\tb"]),
        ("space", &[b"a b"]),
        ("two headers", &[b"a", b"b"]),
    ];
    for (case, keys) in cases {
        let reply = server.send(server.request("POST", "/payments", keys), "{}").await;
        assert_eq!(reply.status, 400, "{case}: {reply:?}");
        let slug = if keys.is_empty() { "key-missing" } else { "key-invalid" };
        assert_eq!(reply.problem()["type"], support::problem_type(slug), "{case}");
        assert_eq!(reply.header("idempotency-key"), None, "{case}: no valid key to echo");
    }
    assert_eq!(counters.runs(), 0);
    assert_eq!(store.claims.load(Ordering::SeqCst), 0);
    assert!(store.memory.is_empty());
}

#[tokio::test]
async fn quoted_and_bare_spellings_are_one_key() {
    // Goal: `"k"` and `k` name the same record, and the key is echoed as an sf-string.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b).await;
    let quoted = server.post("/payments", "\"k\"", "{}").await;
    let bare = server.post("/payments", "k", "{}").await;
    assert_eq!(quoted.status, 201);
    assert!(bare.is_replay());
    assert_eq!(bare.body, quoted.body);
    assert_eq!(bare.header("idempotency-key"), Some("\"k\""));
    assert_eq!(counters.runs(), 1);
}

#[tokio::test]
async fn two_principals_with_one_key_get_two_executions_and_no_leak() {
    // Goal: G4: the same key from two credentials is two records; each replay returns the
    // caller's own response.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b).await;
    let as_user =
        |user: &str| server.request("POST", "/payments", &[b"k"]).header("authorization", format!("Bearer {user}"));

    let alice = server.send(as_user("alice"), "{\"from\":\"alice\"}").await;
    let bob = server.send(as_user("bob"), "{\"from\":\"bob\"}").await;
    let alice_again = server.send(as_user("alice"), "{\"from\":\"alice\"}").await;
    let bob_again = server.send(as_user("bob"), "{\"from\":\"bob\"}").await;

    assert_eq!((alice.status.as_u16(), bob.status.as_u16()), (201, 201));
    assert!(!alice.is_replay() && !bob.is_replay());
    assert_eq!(counters.runs(), 2);
    assert!(alice_again.is_replay() && bob_again.is_replay());
    assert_eq!(alice_again.body, alice.body);
    assert_eq!(bob_again.body, bob.body);
    assert_ne!(alice.body, bob.body);
}

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

#[tokio::test]
async fn a_server_error_releases_the_claim_so_a_retry_executes() {
    // Goal: a 5xx is not recorded; the retry runs the handler again, and its 201 is recorded.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b).await;

    let failed = server.post("/flaky", "k", "{}").await;
    assert_eq!(failed.status, 500);
    assert!(store.record(&anonymous("k")).await.is_none(), "the claim is released");
    let retried = server.post("/flaky", "k", "{}").await;
    let replayed = server.post("/flaky", "k", "{}").await;

    assert_eq!((retried.status, retried.text(), retried.is_replay()), (http::StatusCode::CREATED, "run 2", false));
    assert!(replayed.is_replay());
    assert_eq!(replayed.text(), "run 2");
    assert_eq!(counters.runs(), 2);
    assert_eq!(server.outcomes(), [Outcome::Released, Outcome::Executed, Outcome::Replayed]);
}

#[tokio::test]
async fn try_later_statuses_release_the_claim_so_a_retry_executes() {
    // Goal: SPEC: 408, 425 and 429 are "try again later" answers: like a 5xx they release
    // the claim instead of being recorded, so the retry the client was told to make runs.
    for status in [408_u16, 425, 429] {
        let store = Arc::new(TestStore::default());
        let (server, counters, _) = serve(&store, |b| b).await;
        let path = format!("/first-run-answers/{status}");

        let first = server.post(&path, "k", "{}").await;
        assert_eq!(first.status.as_u16(), status);
        assert!(store.record(&anonymous("k")).await.is_none(), "{status}: the claim is released");
        let retried = server.post(&path, "k", "{}").await;

        assert_eq!((retried.status, retried.text(), retried.is_replay()), (http::StatusCode::CREATED, "run 2", false));
        assert_eq!(counters.runs(), 2, "{status}");
        assert_eq!(server.outcomes(), [Outcome::Released, Outcome::Executed], "{status}");
    }
}

#[tokio::test]
async fn try_later_statuses_are_recorded_when_configured() {
    // Goal: with store_try_later, a 429 is recorded and replayed like any response, while a
    // 5xx still releases (the two switches are independent).
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b.store_try_later(true)).await;
    let first = server.post("/first-run-answers/429", "k", "{}").await;
    let retried = server.post("/first-run-answers/429", "k", "{}").await;
    let failed = server.post("/first-run-answers/503", "other", "{}").await;

    assert_eq!(first.status, http::StatusCode::TOO_MANY_REQUESTS);
    assert!(retried.is_replay());
    assert_eq!((retried.status, retried.text()), (http::StatusCode::TOO_MANY_REQUESTS, "run 1"));
    assert_eq!(failed.status, http::StatusCode::CREATED, "runs count per server: the 503 path's run is run 2");
    assert_eq!(counters.runs(), 2);
    assert_eq!(server.outcomes(), [Outcome::Executed, Outcome::Replayed, Outcome::Executed]);
}

#[tokio::test]
async fn a_different_body_while_in_flight_is_422_under_both_conflict_policies() {
    // Goal: SPEC: the same key with another body while the first request is still in
    // flight is a mismatch (422 at once, the handler does not run), not a 409, whether
    // conflicts are rejected or waited for.
    for conflict in [ConflictPolicy::Reject, ConflictPolicy::Wait(Duration::from_secs(5))] {
        let store = Arc::new(TestStore::default());
        let (server, counters, mut started) = serve(&store, |b| b.conflict(conflict)).await;
        let server = Arc::new(server);
        let holder = {
            let server = Arc::clone(&server);
            tokio::spawn(async move { server.post("/gated", "k", "{\"amount\":1}").await })
        };
        assert_eq!(started.recv().await, Some(1), "{conflict:?}");

        let other_body = server.post("/gated", "k", "{\"amount\":2}").await;
        assert_eq!(other_body.status, 422, "{conflict:?}: {other_body:?}");
        assert_eq!(other_body.problem()["type"], support::problem_type("key-reused"));
        assert_eq!(counters.finished.load(Ordering::SeqCst), 0, "{conflict:?}: answered while the holder is held");

        counters.gate.add_permits(1);
        assert_eq!(holder.await.expect("no panic").status, 201);
        assert_eq!(counters.runs(), 1, "{conflict:?}");
        assert_eq!(server.outcomes(), [Outcome::Mismatch, Outcome::Executed], "{conflict:?}");
    }
}

#[tokio::test]
async fn a_superseded_execution_whose_key_now_holds_another_request_answers_422() {
    // Goal: an execution whose claim lapsed and whose record then expired, while the key
    // was used for another body, answers per the core's rule: 422 (the key now belongs to
    // a different request), neither its own response nor a 409.
    let store = Arc::new(TestStore::default());
    let clock = ManualClock::new(Timestamp::from_unix_ms(1_700_000_000_000));
    let layer_clock = clock.clone();
    let (server, counters, mut started) =
        serve(&store, move |b| b.lease(Duration::from_secs(10)).retention(Duration::from_secs(11)).clock(layer_clock))
            .await;
    let server = Arc::new(server);
    let stale = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.post("/first-run-gated", "k", "{\"amount\":1}").await })
    };
    assert_eq!(started.recv().await, Some(1));
    clock.advance(Duration::from_secs(12));
    let other = server.post("/first-run-gated", "k", "{\"amount\":2}").await;
    assert_eq!((other.status, other.text()), (http::StatusCode::CREATED, "run 2"), "the expired key is free");
    counters.gate.add_permits(1);
    let stale = stale.await.expect("request tasks do not panic");

    assert_eq!(stale.status, 422, "{stale:?}");
    assert_eq!(stale.problem()["type"], support::problem_type("key-reused"));
    assert_eq!(server.outcomes(), [Outcome::Executed, Outcome::Superseded]);
    let replay = server.post("/first-run-gated", "k", "{\"amount\":2}").await;
    assert!(replay.is_replay());
    assert_eq!(replay.text(), "run 2", "the record is the second request's");
}

#[tokio::test]
async fn server_errors_are_recorded_when_configured() {
    // Goal: with store_server_errors, a 5xx is recorded and replayed like any response.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b.store_server_errors(true)).await;
    let failed = server.post("/flaky", "k", "{}").await;
    let retried = server.post("/flaky", "k", "{}").await;
    assert_eq!(
        (failed.status, retried.status),
        (http::StatusCode::INTERNAL_SERVER_ERROR, http::StatusCode::INTERNAL_SERVER_ERROR)
    );
    assert!(retried.is_replay());
    assert_eq!(counters.runs(), 1);
}

#[tokio::test]
async fn recorded_headers_exclude_date_set_cookie_and_denied_headers() {
    // Goal: the record and the replay carry end-to-end headers only: no Date, no
    // Set-Cookie, nothing on the deny list.
    let store = Arc::new(TestStore::default());
    let (server, _, _) = serve(&store, |b| b.deny_header(http::HeaderName::from_static("x-internal-trace"))).await;

    let first = server.post("/headers", "k", "{}").await;
    let replay = server.post("/headers", "k", "{}").await;

    assert_eq!(first.header("set-cookie"), Some("session=secret"), "the first answer is the handler's own");
    let record = store.record(&anonymous("k")).await.expect("the response is recorded");
    let RecordState::Completed { response, .. } = record.state else { panic!("the record is completed: {record:?}") };
    let names: Vec<&str> = response.headers.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["content-type", "location"]);
    assert!(replay.is_replay());
    assert_eq!(replay.header("location"), Some("/payments/1"));
    assert_eq!(replay.header("set-cookie"), None);
    assert_eq!(replay.header("x-internal-trace"), None);
    assert_ne!(replay.header("date"), Some("Tue, 01 Jan 2030 00:00:00 GMT"), "Date is the server's, not recorded");
}

#[tokio::test]
async fn an_unavailable_store_is_503_and_the_handler_never_runs() {
    // Goal: G8: when the store cannot claim, the answer is 503 problem+json with the
    // store's Retry-After, and the handler does not run.
    let store = Arc::new(TestStore::default());
    store.fail_claims.store(true, Ordering::SeqCst);
    let (server, counters, _) = serve(&store, |b| b).await;

    let reply = server.post("/payments", "k", "{}").await;

    assert_eq!(reply.status, 503);
    assert_eq!(reply.problem()["type"], support::problem_type("store-unavailable"));
    assert_eq!(reply.header("retry-after"), Some("7"));
    assert_eq!(counters.runs(), 0);
    assert_eq!(server.outcomes(), [Outcome::StoreFailed]);
}

#[tokio::test]
async fn a_store_failing_at_completion_answers_the_handlers_response_unrecorded() {
    // Goal: when recording fails after the handler ran, the completion is retried a bounded
    // number of times and then the handler's response is answered (the client has its
    // answer and need not retry); the outcome says it is unrecorded.
    let store = Arc::new(TestStore::default());
    store.fail_completes.store(true, Ordering::SeqCst);
    let (server, counters, _) = serve(&store, |b| b).await;

    let reply = server.post("/payments", "k", "{}").await;

    assert_eq!(reply.status, 201);
    assert_eq!(reply.text(), "run 1: {}");
    assert_eq!(store.completes.load(Ordering::SeqCst), 3, "bounded retries");
    assert_eq!(counters.runs(), 1);
    assert_eq!(server.outcomes(), [Outcome::Unrecorded]);
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
async fn every_answer_after_a_valid_key_echoes_it() {
    // Goal: SPEC: the validated key is echoed on every answer, whichever path made it:
    // body validation (400 unreadable, 413), the principal extractor's refusal, 409, 422,
    // 503, a handler's 5xx (released), a handler's own 4xx, a first answer, a replay.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let store = Arc::new(TestStore::default());
    let (server, counters, mut started) = serve(&store, |b| {
        b.request_body_bytes_max(64).principal(|parts| {
            if parts.headers.contains_key("x-refuse") {
                Err(idem_http::Problem::new(http::StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", "refused"))
            } else {
                Ok(idem_core::Principal::anonymous())
            }
        })
    })
    .await;
    let server = Arc::new(server);
    let mut replies = Vec::new();
    replies.push(("413", server.post("/payments", "k", &"x".repeat(65)).await));
    replies
        .push(("401", server.send(server.request("POST", "/payments", &[b"k"]).header("x-refuse", "1"), "{}").await));
    replies.push(("handler 500", server.post("/flaky", "k-flaky", "{}").await));
    replies.push(("handler 404", server.post("/no-such-route", "k-404", "{}").await));
    let holder = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.post("/gated", "k-held", "{}").await })
    };
    assert!(started.recv().await.is_some(), "the holder is at the gate");
    replies.push(("409", server.post("/gated", "k-held", "{}").await));
    replies.push(("422", server.post("/gated", "k-held", "{\"other\":1}").await));
    counters.gate.add_permits(1);
    replies.push(("201", holder.await.expect("no panic")));
    replies.push(("replay", server.post("/gated", "k-held", "{}").await));
    store.fail_claims.store(true, Ordering::SeqCst);
    replies.push(("503", server.post("/payments", "k-down", "{}").await));
    store.fail_claims.store(false, Ordering::SeqCst);

    let expected_status = [413, 401, 500, 404, 409, 422, 201, 201, 503];
    for ((case, reply), status) in replies.iter().zip(expected_status) {
        assert_eq!(reply.status.as_u16(), status, "{case}: {reply:?}");
        let key = reply.header("idempotency-key").unwrap_or_else(|| panic!("{case}: no key echoed: {reply:?}"));
        assert!(key.starts_with("\"k"), "{case}: {key}");
    }

    // A request body that breaks (invalid chunked encoding) is a 400 that echoes the key too.
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.expect("the server listens");
    let request = "POST /payments HTTP/1.1\r\nhost: test\r\nidempotency-key: k-broken\r\n\
                   transfer-encoding: chunked\r\n\r\nzz\r\n";
    raw.write_all(request.as_bytes()).await.expect("the server reads");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(read.is_ok(), "the server answers and closes the connection: {answer}");
    assert!(answer.starts_with("http/1.1 400"), "{answer}");
    assert!(answer.contains("idempotency-key: \"k-broken\""), "{answer}");
    assert!(answer.contains("body-unreadable"), "{answer}");
}

#[tokio::test]
async fn cors_headers_come_from_the_cors_layer_and_are_never_recorded() {
    // Goal: with tower-http's CorsLayer outside the idempotency layer, a preflight allows
    // Idempotency-Key, answers expose Idempotent-Replayed, and a replay's CORS headers are
    // the CorsLayer's for the replaying request: access-control-* headers a handler set
    // are not recorded.
    use http::{HeaderValue, Method};
    use tower_http::cors::CorsLayer;
    let store = Arc::new(TestStore::default());
    let cors = CorsLayer::new()
        .allow_origin([HeaderValue::from_static("https://a.example"), HeaderValue::from_static("https://b.example")])
        .allow_methods([Method::POST])
        .allow_headers([idem_http::IDEMPOTENCY_KEY, http::header::CONTENT_TYPE])
        .expose_headers([idem_http::IDEMPOTENT_REPLAYED, idem_http::IDEMPOTENCY_KEY]);
    let (router, counters, _) = support::app(Arc::clone(&store));
    let service =
        tower::ServiceBuilder::new().layer(cors).layer(IdempotencyLayer::new(Arc::clone(&store))).service(router);
    let server = Harness::start(service).await;

    let preflight = server
        .send(
            server
                .request("OPTIONS", "/cors-naive", &[])
                .header("origin", "https://a.example")
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "idempotency-key, content-type"),
            "",
        )
        .await;
    assert_eq!(preflight.status, 200);
    let allowed = preflight.header("access-control-allow-headers").expect("the preflight allows headers");
    assert!(allowed.contains("idempotency-key"), "{allowed}");
    assert_eq!(preflight.header("access-control-allow-origin"), Some("https://a.example"));

    let from = |origin: &'static str| server.request("POST", "/cors-naive", &[b"k"]).header("origin", origin);
    let first = server.send(from("https://a.example"), "{}").await;
    let replay = server.send(from("https://b.example"), "{}").await;

    assert_eq!(first.status, 201);
    let record = store.record(&anonymous("k")).await.expect("the response is recorded");
    let RecordState::Completed { response, .. } = record.state else { panic!("the record is completed: {record:?}") };
    let names: Vec<&str> = response.headers.iter().map(|(name, _)| name.as_str()).collect();
    assert!(names.iter().all(|name| !name.starts_with("access-control-")), "{names:?}");
    assert!(replay.is_replay());
    let origins: Vec<&str> =
        replay.headers.get_all("access-control-allow-origin").iter().map(|v| v.to_str().expect("ASCII")).collect();
    assert_eq!(origins, ["https://b.example"], "the CorsLayer's answer for the replaying origin");
    assert_eq!(
        replay.header("access-control-allow-credentials"),
        None,
        "the handler's own CORS header is not replayed"
    );
    let exposed = replay.header("access-control-expose-headers").expect("the CorsLayer exposes headers");
    assert!(exposed.contains("idempotent-replayed"), "{exposed}");
    assert_eq!(counters.runs(), 1);
    assert_eq!(server.outcomes(), [Outcome::Executed, Outcome::Replayed], "the preflight never reached the layer");
}

#[tokio::test]
async fn the_problem_type_base_is_configurable() {
    // Goal: the type URI of every problem the layer answers is the configured base plus the slug.
    let store = Arc::new(TestStore::default());
    let (server, _, _) = serve(&store, |b| b.problem_type_base("https://api.example/problems#")).await;
    let missing = server.send(server.request("POST", "/payments", &[]), "{}").await;
    assert_eq!(missing.problem()["type"], "https://api.example/problems#key-missing");
}

#[tokio::test]
async fn a_draining_server_can_wait_for_a_request_whose_client_went_away() {
    // Goal: the work of a request whose client disconnected runs on the layer's task
    // tracker: after `close`, `wait` does not return while the handler is still running,
    // and returns once it finished and completed its record.
    use tokio::io::AsyncWriteExt;
    let store = Arc::new(TestStore::default());
    let tracker = tokio_util::task::TaskTracker::new();
    let (server, counters, mut started) = serve(&store, |b| b.task_tracker(tracker.clone())).await;

    let mut client = tokio::net::TcpStream::connect(server.addr).await.expect("the server listens");
    let request = "POST /gated HTTP/1.1\r\nhost: test\r\nidempotency-key: gone\r\ncontent-length: 2\r\n\r\n{}";
    client.write_all(request.as_bytes()).await.expect("the server reads");
    assert_eq!(started.recv().await, Some(1));
    drop(client);
    server.dropped.notified().await;
    tracker.close();
    assert_eq!(tracker.len(), 1, "the handed-off request is tracked");
    let early = tokio::time::timeout(Duration::from_millis(100), tracker.wait()).await;
    assert!(early.is_err(), "wait does not return while the handler is held at the gate");

    counters.gate.add_permits(1);
    tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await.expect("wait returns once the work is done");

    assert_eq!(counters.finished.load(Ordering::SeqCst), 1);
    let record = store.record(&anonymous("gone")).await.expect("the record exists");
    assert!(matches!(record.state, RecordState::Completed { .. }), "completed before wait returned: {record:?}");
}

#[tokio::test]
async fn methods_without_a_key_requirement_pass_through_untouched() {
    // Goal: a GET, and with MissingKey::PassThrough a keyless POST, reach the handler
    // without any idempotency header being added and without a record.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b.missing_key(MissingKey::PassThrough)).await;

    let keyless = server.send(server.request("POST", "/payments", &[]), "{}").await;
    let again = server.send(server.request("POST", "/payments", &[]), "{}").await;
    let get = server.send(server.request("GET", "/payments", &[b"k"]), "").await;

    assert_eq!((keyless.status, again.status), (http::StatusCode::CREATED, http::StatusCode::CREATED));
    assert_eq!(get.status, 405, "the app's own answer to GET");
    for reply in [&keyless, &again, &get] {
        assert_eq!(reply.header("idempotency-key"), None);
        assert_eq!(reply.header("idempotent-replayed"), None);
    }
    assert_eq!(counters.runs(), 2);
    assert!(store.memory.is_empty());
    assert_eq!(server.outcomes(), [Outcome::PassedThrough; 3]);
}

#[tokio::test]
async fn a_plain_tower_service_works_without_axum() {
    // Goal: the layer wraps any tower service over http types (the plain hyper case).
    let store = Arc::new(TestStore::default());
    let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = Arc::clone(&runs);
    let service = tower::service_fn(move |_request: http::Request<idem_http::Body>| {
        let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let body = http_body_util::Full::new(bytes::Bytes::from(format!("plain {run}")));
            Ok::<_, std::convert::Infallible>(
                http::Response::builder().status(201).body(body).expect("static response"),
            )
        }
    });
    let server = Harness::start(IdempotencyLayer::new(Arc::clone(&store)).layer(service)).await;

    let first = server.post("/anything", "k", "{}").await;
    let retry = server.post("/anything", "k", "{}").await;

    assert_eq!((first.status, first.text()), (http::StatusCode::CREATED, "plain 1"));
    assert!(retry.is_replay());
    assert_eq!(retry.text(), "plain 1");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// A response body that fails after its head: one chunk, then an error.
struct BreaksAfterHead {
    sent: bool,
}

impl http_body::Body for BreaksAfterHead {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.sent {
            return std::task::Poll::Ready(Some(Err(std::io::Error::other("the body broke"))));
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(b"{\"payment\"")))))
    }
}

#[tokio::test]
async fn a_body_that_breaks_after_a_success_head_is_recorded_as_a_failure_not_released() {
    // Goal: G1 — a 201 head means the side effect may have happened, so a body that then
    // fails is recorded as a problem (not released): the retry replays it, nothing runs twice.
    let store = Arc::new(TestStore::default());
    let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = Arc::clone(&runs);
    let service = tower::service_fn(move |_request: http::Request<idem_http::Body>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let response = http::Response::builder().status(201).body(BreaksAfterHead { sent: false });
            Ok::<_, std::convert::Infallible>(response.expect("static response"))
        }
    });
    let server = Harness::start(IdempotencyLayer::new(Arc::clone(&store)).layer(service)).await;

    let first = server.post("/anything", "broken", "{}").await;
    let retry = server.post("/anything", "broken", "{}").await;

    assert_eq!(first.status, http::StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(first.problem()["type"], support::problem_type("handler-failed"));
    assert!(retry.is_replay(), "the failure was recorded, so the retry replays it");
    assert_eq!((retry.status, retry.text()), (first.status, first.text()));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran once");
}

#[tokio::test]
async fn a_panicking_handler_releases_its_claim() {
    // Goal: a handler that panics (even in `call`, before its future) answers a 500
    // problem and gives its claim back, so the retry runs instead of waiting out the lease.
    let store = Arc::new(TestStore::default());
    let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = Arc::clone(&runs);
    let service = tower::service_fn(move |_request: http::Request<idem_http::Body>| {
        let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(run > 1, "the first call panics on purpose");
        async move {
            let body = http_body_util::Full::new(bytes::Bytes::from(format!("run {run}")));
            Ok::<_, std::convert::Infallible>(http::Response::builder().status(201).body(body).expect("static"))
        }
    });
    let server = Harness::start(IdempotencyLayer::new(Arc::clone(&store)).layer(service)).await;

    let first = server.post("/anything", "panics", "{}").await;
    let retry = server.post("/anything", "panics", "{}").await;

    assert_eq!(first.status, http::StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!((retry.status, retry.text()), (http::StatusCode::CREATED, "run 2"));
    assert!(!retry.is_replay());
}

#[tokio::test]
async fn a_client_disconnect_does_not_cancel_the_handler() {
    // Goal: when the client goes away mid-handler and the server drops the response
    // future, the handler still runs to its end and the record is completed; a retry
    // replays it and the side effect happened once.
    use tokio::io::AsyncWriteExt;
    let store = Arc::new(TestStore::default());
    let (server, counters, mut started) = serve(&store, |b| b).await;

    let mut client = tokio::net::TcpStream::connect(server.addr).await.expect("the server listens");
    let request = "POST /gated HTTP/1.1\r\nhost: test\r\nidempotency-key: gone\r\ncontent-length: 2\r\n\r\n{}";
    client.write_all(request.as_bytes()).await.expect("the server reads");
    assert_eq!(started.recv().await, Some(1));
    drop(client);
    server.dropped.notified().await;
    assert_eq!(counters.finished.load(Ordering::SeqCst), 0, "the handler is still at the gate");

    counters.gate.add_permits(1);
    let id = anonymous("gone");
    for _ in 0..1000 {
        if matches!(store.record(&id).await.map(|record| record.state), Some(RecordState::Completed { .. })) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let retry = server.post("/gated", "gone", "{}").await;

    assert!(retry.is_replay(), "{retry:?}");
    assert_eq!((retry.status, retry.text()), (http::StatusCode::CREATED, "run 1"));
    assert_eq!(counters.runs(), 1);
    assert_eq!(counters.finished.load(Ordering::SeqCst), 1);
}

/// Runs the lapsed-lease scenario on `path` and returns (stale reply, take-over reply).
///
/// Request A's handler is held; the clock passes A's lease; request B takes the claim
/// over, runs and completes; then A's handler finishes and its completion is refused.
async fn lapsed_lease_scenario(path: &str) -> (support::Reply, support::Reply, support::Counters, Harness) {
    let store = Arc::new(TestStore::default());
    let clock = ManualClock::new(Timestamp::from_unix_ms(1_700_000_000_000));
    let (server, counters, mut started) =
        serve(&store, |b| b.lease(Duration::from_secs(10)).retention(Duration::from_secs(3600)).clock(clock.clone()))
            .await;
    let server = Arc::new(server);

    let stale = {
        let server = Arc::clone(&server);
        let path = path.to_owned();
        tokio::spawn(async move { server.post(&path, "k", "{}").await })
    };
    assert_eq!(started.recv().await, Some(1));
    clock.advance(Duration::from_secs(11));
    let take_over = server.post(path, "k", "{}").await;
    counters.gate.add_permits(1);
    let stale = stale.await.expect("request tasks do not panic");
    let server = Arc::try_unwrap(server).unwrap_or_else(|_| unreachable!("the request task has finished"));
    (stale, take_over, counters, server)
}

#[tokio::test]
async fn a_handler_slower_than_its_lease_never_answers_its_own_response() {
    // Goal: separate mode: after the lease lapses, a retry takes over and runs the handler
    // (the documented separate-mode gap); the stale execution's completion is refused and
    // it answers the recorded response, never its own (G2, G3).
    let (stale, take_over, counters, server) = lapsed_lease_scenario("/first-run-gated").await;

    assert_eq!(
        (take_over.status, take_over.text(), take_over.is_replay()),
        (http::StatusCode::CREATED, "run 2", false)
    );
    assert_eq!(stale.text(), "run 2", "the stale request answers the recorded response");
    assert!(stale.is_replay());
    assert_eq!(counters.runs(), 2);
    assert_eq!(server.outcomes(), [Outcome::Executed, Outcome::Superseded]);
}

#[tokio::test]
async fn atomic_mode_stale_completion_is_refused_and_the_replay_answered() {
    // Goal: atomic mode: the stale handler's own completion is refused (its transaction
    // would roll back) and the layer answers the recorded response instead of its own.
    let (stale, take_over, counters, server) = lapsed_lease_scenario("/atomic-first-run-gated").await;

    assert_eq!(take_over.text(), "run 2");
    assert!(stale.is_replay());
    assert_eq!(stale.text(), "run 2");
    assert_eq!(counters.runs(), 2);
    assert_eq!(server.outcomes(), [Outcome::Executed, Outcome::Superseded]);
}

#[tokio::test]
async fn atomic_mode_handler_completion_is_not_repeated_by_the_layer() {
    // Goal: when the handler completed the record itself, the layer does not complete
    // again, and retries replay what the handler recorded.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b).await;

    let first = server.post("/atomic", "k", "{}").await;
    let retry = server.post("/atomic", "k", "{}").await;

    assert_eq!((first.status, first.text()), (http::StatusCode::CREATED, "run 1"));
    assert_eq!(store.completes.load(Ordering::SeqCst), 1, "only the handler's completion");
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(counters.runs(), 1);
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

#[tokio::test]
async fn the_try_later_set_is_configurable() {
    // Goal: with try_later_statuses([409]), a handler's 409 releases the claim and its retry
    // executes, while 429 (no longer in the set) is recorded and replayed; a non-4xx status
    // in the set is refused when the layer is built.
    // (The handler answers the status asked for on its first run only, so one server each.)
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b.try_later_statuses([http::StatusCode::CONFLICT])).await;
    let first = server.post("/first-run-answers/409", "k409", "{}").await;
    assert_eq!(first.status, http::StatusCode::CONFLICT);
    assert!(store.record(&anonymous("k409")).await.is_none(), "409 released the claim");
    let retried = server.post("/first-run-answers/409", "k409", "{}").await;
    assert_eq!((retried.status, retried.is_replay()), (http::StatusCode::CREATED, false));
    assert_eq!(counters.runs(), 2);

    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b.try_later_statuses([http::StatusCode::CONFLICT])).await;
    let limited = server.post("/first-run-answers/429", "k429", "{}").await;
    assert_eq!(limited.status, http::StatusCode::TOO_MANY_REQUESTS);
    let again = server.post("/first-run-answers/429", "k429", "{}").await;
    assert!(again.is_replay() && again.status == http::StatusCode::TOO_MANY_REQUESTS, "429 is recorded now");
    assert_eq!(counters.runs(), 1);

    let refused = IdempotencyLayer::builder(Arc::new(idem_core::MemoryStore::default()))
        .try_later_statuses([http::StatusCode::SERVICE_UNAVAILABLE])
        .build();
    assert!(matches!(refused, Err(idem_http::ConfigError::TryLaterNotClientError { status: 503 })));
}
